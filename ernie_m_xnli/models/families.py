"""The encoder families the suite fine-tunes, and all that differs between them, in one place.

Every family takes the same inputs from the data layer: token ids, a 0/1 attention mask (per token
for a padded batch, per query and key for a packed one), position ids counting from 0 within each
input, token-type ids (0 up to the first separator, 1 after it) and, for a packed batch, each
input's flat [CLS] index. A family says how its encoder takes them: which it uses, where its
position ids start, how its mask is written; how its classification head reads the [CLS] state;
how its layers are named (layerwise learning-rate decay); how transformers names its weights.
"""

import re
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import paddle
from paddlenlp import transformers

from ernie_m_xnli.models.first_token import LastLayerForFirstTokens
from utils import InputError

INPUT_NAMES = ("input_ids", "attention_mask", "position_ids", "token_type_ids")
# ErnieMModel and BertModel add a 4-d float mask to the attention scores, as they do with their own masks.
ADDITIVE_MASKED = -1e4


@dataclass(frozen=True)
class Family:
    name: str  # as people say it
    model_type: str  # config.json's "model_type"
    class_name: str  # PaddleNLP's and transformers' ...ForSequenceClassification
    encoder: str  # the classifier's attribute holding the encoder (PaddleNLP's base_model_prefix)
    output_layer: str  # the Linear whose rows are the labels
    tokenizer_class: str  # PaddleNLP's (slow) tokenizer of the family, where a directory names none
    # (transformers' part of a weight name, PaddleNLP's), applied in order to convert names.
    renames: tuple = ()
    # Parameters outside the numbered layers that layerwise decay ranks with the embeddings.
    embedding_parts: tuple = ("embedding",)
    # True where an input's positions start at the padding id + 1 (fairseq's convention).
    positions_after_padding: bool = False
    additive_mask: bool = False  # whether a packed mask must be given as ADDITIVE_MASKED scores
    dropout_name: str = "classifier_dropout"  # the config's name for the dropout before the classifier
    static_graph_problem: str = ""  # why Paddle cannot trace the family into a static graph, if it cannot
    # The encoder's embedding tables (not transposed between PyTorch and Paddle, unlike Linear weights).
    embedding_tables: tuple = ("word_embeddings", "position_embeddings", "token_type_embeddings")
    has_token_type_embeddings: bool = True  # ERNIE-M has none
    internal_position_offset: int = 0  # what the encoder adds to position ids itself (ErnieM: 2)
    feed_forward_is_4x_hidden: bool = False  # PaddleNLP's ErnieM builds it so, whatever config.json says
    # (encoder, input_ids, mask, position_ids, token_type_ids or None) -> the sequence's states
    run_encoder: Callable = None
    # (model, [CLS] states as [inputs, 1, hidden]) -> logits
    run_head: Callable = None
    # Fixes PaddleNLP's model of the family needs under Paddle 3.3.1, applied in place
    repair: Callable = lambda model: None

    def check_static_graph(self, argument):
        """Refuse, naming `argument`, what needs the family as a static graph where it cannot be one."""
        if self.static_graph_problem:
            raise InputError(
                f"{argument}: not for {self.name}: {self.static_graph_problem}; --export_hf_dir saves the model "
                "for transformers and this suite"
            )

    @property
    def model_class(self):
        return getattr(transformers, self.class_name)

    def position_offset(self, config):
        """What the model's first position id is; ErnieM adds its 2 itself."""
        return config.pad_token_id + 1 if self.positions_after_padding else 0

    def max_tokens(self, config):
        """The longest input the position embeddings hold."""
        return config.max_position_embeddings - self.internal_position_offset - self.position_offset(config)

    def has_token_types(self, config):
        """Whether the model has token types to tell the two texts apart (BERT's); ERNIE-M has none."""
        return self.has_token_type_embeddings and getattr(config, "type_vocab_size", 0) >= 2

    def is_linear_weight(self, name, array):
        """Linear weights are [out, in] in PyTorch and [in, out] in Paddle; embedding tables are the same."""
        is_table = any(name.endswith(f"{table}.weight") for table in self.embedding_tables)
        return array.ndim == 2 and name.endswith(".weight") and not is_table

    def layer_index(self, parameter_name):
        """The encoder layer (0-based) a parameter belongs to, or None."""
        match = re.search(r"\.encoder\.layers?\.(\d+)\.", parameter_name)
        return int(match.group(1)) if match else None

    def word_embeddings(self, model):
        """The encoder's table of token embeddings (every family names it alike in PaddleNLP)."""
        return getattr(model, self.encoder).embeddings.word_embeddings

    def is_embedding(self, parameter_name):
        return any(part in parameter_name for part in self.embedding_parts)

    def to_paddle_name(self, hf_name):
        for hf_part, paddle_part in self.renames:
            hf_name = hf_name.replace(hf_part, paddle_part)
        return hf_name

    def to_hf_name(self, paddle_name):
        for hf_part, paddle_part in reversed(self.renames):
            paddle_name = paddle_name.replace(paddle_part, hf_part)
        return paddle_name

    def logits(self, model, input_ids, attention_mask, position_ids, token_type_ids, cls_index=None):
        """The classifier's logits: the encoder over the batch, then the head over each input's
        [CLS] state (the first token of each row, or `cls_index` in a packed batch). Without
        `token_type_ids`, every token has type 0, as the model's default."""
        # Outside training a padded batch's last layer computes each row's first token only.
        first_tokens_read = cls_index is None and not model.training
        with LastLayerForFirstTokens(getattr(model, self.encoder)) if first_tokens_read else nullcontext():
            sequence = self.sequence_output(model, input_ids, attention_mask, position_ids, token_type_ids)
        if cls_index is None:
            cls_states = sequence[:, :1]
        else:
            cls_states = paddle.gather(sequence.reshape([-1, sequence.shape[-1]]), cls_index).unsqueeze(1)
        return self.head(model, cls_states)

    def sequence_output(self, model, input_ids, attention_mask, position_ids, token_type_ids):
        if attention_mask.ndim == 3 and self.additive_mask:
            attention_mask = (1.0 - attention_mask.astype("float32").unsqueeze(1)) * ADDITIVE_MASKED
        position_ids = position_ids + self.position_offset(model.config)
        return self.run_encoder(getattr(model, self.encoder), input_ids, attention_mask, position_ids, token_type_ids)

    def head(self, model, cls_states):
        """The classification head over [CLS] states given as [inputs, 1, hidden]."""
        return self.run_head(model, cls_states)


def ernie_m_sequence(ernie_m, input_ids, attention_mask, position_ids, token_type_ids):
    return ernie_m(input_ids, position_ids=position_ids, attention_mask=attention_mask)[0]


def bert_sequence(encoder, input_ids, attention_mask, position_ids, token_type_ids):
    """BERT's and XLM-R's encoders take every input by name. Without `use_cache=False`, a config's
    `use_cache: true` (multilingual-e5's) makes every attention layer concatenate an empty key-value
    cache, whose zero-size tensors Paddle Inference's bfloat16 conversion fails on (dnnl::error)."""
    outputs = encoder(
        input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        token_type_ids=token_type_ids,
        use_cache=False,
        return_dict=False,
    )
    return outputs[0]


def deberta_sequence(deberta, input_ids, attention_mask, position_ids, token_type_ids):
    """DeBERTa-v2 with a [rows, length, length] mask in which padding sees itself. Given a padded
    batch's mask, PaddleNLP's DebertaV2Model masks whole rows, whose gradients are NaN (measured:
    every embedding gradient); packed, its relative positions depend only on the distance between
    two tokens, which packing keeps within an input. Its embeddings take the per-token mask."""
    if attention_mask.ndim == 2:
        token_mask = attention_mask.astype("float32")
        attention_mask = token_mask.unsqueeze(1) * token_mask.unsqueeze(2)
        attention_mask += paddle.eye(token_mask.shape[1]) * (1 - token_mask).unsqueeze(2)
    token_mask = paddle.diagonal(attention_mask, axis1=1, axis2=2)
    embeddings = deberta.embeddings(
        input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids, mask=token_mask
    )
    return deberta.encoder(embeddings, attention_mask, output_hidden_states=False, return_dict=True)[0]


def pooled_head(pooler_of):
    """A head that pools the [CLS] state (`pooler_of(model)`), then drops out and classifies."""

    def head(model, cls_states):
        return model.classifier(model.dropout(pooler_of(model)(cls_states)))

    return head


def xlm_roberta_head(model, cls_states):
    """XLMRobertaClassificationHead: dense, tanh and out_proj over the [CLS] state, its own dropouts."""
    return model.classifier(cls_states)


def stable_dropout_as_paddle_dropout(model):
    """DeBERTa-v2 drops out through a PyLayer (XDropout) whose backward returns a gradient for its
    non-tensor input too, which Paddle 3.3.1 rejects ("The number of outputs of `PyLayer.backward`
    should be 1, but received 2", measured): its StableDropout layers become paddle.nn.Dropout, the
    same inverted dropout of the same rate."""
    for parent in model.sublayers(include_self=True):
        for name, child in list(parent.named_children()):
            if type(child).__name__ == "StableDropout":
                setattr(parent, name, paddle.nn.Dropout(child.drop_prob))


BERT_RENAMES = (
    ("encoder.layer.", "encoder.layers."),
    (".attention.self.query.", ".self_attn.q_proj."),
    (".attention.self.key.", ".self_attn.k_proj."),
    (".attention.self.value.", ".self_attn.v_proj."),
    (".attention.output.dense.", ".self_attn.out_proj."),
    (".attention.output.LayerNorm.", ".norm1."),
    (".intermediate.dense.", ".linear1."),
    (".output.dense.", ".linear2."),
    (".output.LayerNorm.", ".norm2."),
    ("embeddings.LayerNorm.", "embeddings.layer_norm."),
)

FAMILIES = (
    Family(
        "ERNIE-M",
        "ernie_m",
        "ErnieMForSequenceClassification",
        "ernie_m",
        "classifier",
        "ErnieMTokenizer",
        renames=tuple(
            (f".self_attn.self_attn.{name}.", f".self_attn.{name}.") for name in ("q_proj", "k_proj", "v_proj")
        ),
        additive_mask=True,
        has_token_type_embeddings=False,
        internal_position_offset=2,
        feed_forward_is_4x_hidden=True,
        run_encoder=ernie_m_sequence,
        run_head=pooled_head(lambda model: model.ernie_m.pooler),
    ),
    Family(
        "BERT",
        "bert",
        "BertForSequenceClassification",
        "bert",
        "classifier",
        "BertTokenizer",
        BERT_RENAMES,
        additive_mask=True,
        run_encoder=bert_sequence,
        run_head=pooled_head(lambda model: model.bert.pooler),
    ),
    Family(
        "XLM-RoBERTa",
        "xlm-roberta",
        "XLMRobertaForSequenceClassification",
        "roberta",
        "classifier.out_proj",
        "XLMRobertaTokenizer",
        positions_after_padding=True,
        # Measured: dy2static deadlocks converting XLMRobertaSelfAttention.forward (a call is evaluated
        # while its conversion lock is held), and left unconverted, that code reshapes with two
        # unknown dimensions.
        static_graph_problem="Paddle 3.3.1 cannot trace PaddleNLP's XLM-RoBERTa into a static graph (its "
        "conversion hangs); evaluation uses the dynamic graph",
        run_encoder=bert_sequence,
        run_head=xlm_roberta_head,
    ),
    Family(
        "DeBERTa-v2",
        "deberta-v2",
        "DebertaV2ForSequenceClassification",
        "deberta",
        "classifier",
        "DebertaV2Tokenizer",
        # encoder.LayerNorm normalizes the relative-position embeddings
        embedding_parts=("embedding", "encoder.LayerNorm"),
        dropout_name="cls_dropout",
        # Measured: dy2static deadlocks converting make_log_bucket_position, and with that helper left
        # unconverted, Paddle Inference cannot run the saved graph ("Tensor holds no memory").
        static_graph_problem="Paddle 3.3.1 cannot trace PaddleNLP's DeBERTa-v2 into a static graph that "
        "Paddle Inference runs; evaluation uses the dynamic graph",
        embedding_tables=("word_embeddings", "position_embeddings", "token_type_embeddings", "rel_embeddings"),
        run_encoder=deberta_sequence,
        run_head=pooled_head(lambda model: model.pooler),
        repair=stable_dropout_as_paddle_dropout,
    ),
)
ERNIE_M = FAMILIES[0]


def family_of(model_type, source):
    """The Family of a config.json's `model_type`; anything else is refused in one line."""
    for family in FAMILIES:
        if family.model_type == (model_type or "ernie_m"):
            return family
    supported = ", ".join(f"{family.name} ({family.model_type})" for family in FAMILIES)
    raise InputError(f"{source}: model_type {model_type!r} is not a family this suite fine-tunes: {supported}")


def family_of_name(name):
    """The Family of a name PaddleNLP resolves by itself (e.g. bert-base-multilingual-cased);
    ERNIE-M for any other name."""
    for family in FAMILIES:
        if name in family.model_class.pretrained_init_configuration:
            return family
    return ERNIE_M


class Classifier(paddle.nn.Layer):
    """A family's ...ForSequenceClassification with the suite's inputs (see the module's text).

    It owns no parameters of its own, so optimizer, checkpoints and exports keep using the wrapped
    model; wrap this (not the model) in DataParallel, and trace this for Paddle Inference.

    Token types are given as transformers gives them: only where the model has them and its
    tokenizer returns them for a pair (`tokenizer_token_types`). A BERT paired with XLM-R's
    tokenizer (multilingual-e5, Multilingual-MiniLM) saw type 0 everywhere in pretraining.
    """

    def __init__(self, model, family, tokenizer_token_types=True):
        super().__init__()
        self.model, self.family = model, family
        self.uses_token_types = family.has_token_types(model.config) and tokenizer_token_types

    @property
    def input_names(self):
        """The inputs a static graph of the model takes (only those it uses), in forward's order."""
        return INPUT_NAMES if self.uses_token_types else INPUT_NAMES[:3]

    def forward(self, input_ids, attention_mask, position_ids, token_type_ids=None, cls_index=None):
        token_type_ids = token_type_ids if self.uses_token_types else None
        return self.family.logits(self.model, input_ids, attention_mask, position_ids, token_type_ids, cls_index)
