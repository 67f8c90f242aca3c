"""Evaluation's last encoder layer, computed for the first token of each row only.

The classification head reads one state per input: the last layer's output at its first token
([CLS]). Every other position of that layer feeds nothing: its query, attention output, feed-forward
block and layer norms are 10/12 of the layer's products, 7% of ernie-m-base's. Here the first token's
query attends to every token's keys and values, as in the full layer; the logits are the same up to
float rounding (tests/test_families.py). Only for nn.TransformerEncoderLayer (ERNIE-M's and BERT's
layers in PaddleNLP), post- or pre-norm; other encoders compute every position.
"""

from functools import partial

import paddle
from paddle.nn.layer.transformer import _convert_attention_mask


def _first_token_forward(layer, full_forward, src, src_mask=None, cache=None, output_attentions=False):
    """nn.TransformerEncoderLayer's forward pass (PaddleNLP's signature) for the first position's output."""
    if cache is not None or output_attentions:
        return full_forward(src, src_mask, cache, output_attentions)
    src_mask = _convert_attention_mask(src_mask, src.dtype)
    if src_mask is not None and src_mask.ndim == 4 and src_mask.shape[-2] != 1:
        src_mask = src_mask[:, :, :1, :]  # the first query's row of a [rows, heads, queries, keys] mask
    layer.self_attn.need_weights = False  # as PaddleNLP's forward sets it without output_attentions
    keys = layer.norm1(src) if layer.normalize_before else src
    residual = src[:, :1]
    src = residual + layer.dropout1(layer.self_attn(keys[:, :1], keys, keys, src_mask))
    if not layer.normalize_before:
        src = layer.norm1(src)
    residual = src
    if layer.normalize_before:
        src = layer.norm2(src)
    src = residual + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(src)))))
    return src if layer.normalize_before else layer.norm2(src)


class LastLayerForFirstTokens:
    """Inside it, `encoder`'s (a PaddleNLP model's) last layer returns [rows, 1, hidden]: the first
    token's state; encoders of other layers compute as they do. A class, not a generator: a static-graph
    trace converts the functions it calls, and a converted generator no longer yields."""

    def __init__(self, encoder):
        layers = getattr(getattr(encoder, "encoder", None), "layers", None)
        supported = layers and isinstance(layers[-1], paddle.nn.TransformerEncoderLayer)
        self.layer = layers[-1] if supported else None

    def __enter__(self):
        if self.layer is not None:
            full_forward = self.layer.forward
            self.layer.forward = partial(_first_token_forward, self.layer, full_forward)
        return self

    def __exit__(self, *exception):
        if self.layer is not None:
            del self.layer.forward
