"""The encoder families the suite fine-tunes, and all that differs between them, in one place.

Every family takes the same inputs from the data layer: token ids, a 0/1 attention mask (per token
for a padded batch, per query and key for a packed one), position ids counting from 0 within each
input, token-type ids (0 up to the first separator, 1 after it) and, for a packed batch, each
input's flat [CLS] index. A family says how its encoder takes them: which it uses, where its
position ids start, how its mask is written; how its classification head reads the [CLS] state;
how its layers are named (layerwise learning-rate decay); how transformers names its weights.
"""

import re
from dataclasses import dataclass

import paddle
from paddlenlp import transformers

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
    # (transformers' part of a weight name, PaddleNLP's), applied in order to convert names.
    renames: tuple = ()
    # Parameters outside the numbered layers that layerwise decay ranks with the embeddings.
    embedding_parts: tuple = ("embedding",)
    # True where an input's positions start at the padding id + 1 (fairseq's convention).
    positions_after_padding: bool = False
    additive_mask: bool = False  # whether a packed mask must be given as ADDITIVE_MASKED scores
    dropout_name: str = "classifier_dropout"  # the config's name for the dropout before the classifier
    static_graph_problem: str = ""  # why Paddle cannot trace the family into a static graph, if it cannot

    def check_static_graph(self, argument):
        """Refuse, naming `argument`, what needs the family as a static graph where it cannot be one."""
        if self.static_graph_problem:
            raise InputError(f"{argument}: not for {self.name}: {self.static_graph_problem}")

    @property
    def model_class(self):
        return getattr(transformers, self.class_name)

    def position_offset(self, config):
        """What the model's first position id is; ErnieM adds its 2 itself."""
        return config.pad_token_id + 1 if self.positions_after_padding else 0

    def max_tokens(self, config):
        """The longest input the position embeddings hold."""
        internal = 2 if self.model_type == "ernie_m" else 0
        return config.max_position_embeddings - internal - self.position_offset(config)

    def repair(self, model):
        """Fix what PaddleNLP's model of the family cannot do under Paddle 3.3.1, in place.

        DeBERTa-v2 drops out through a PyLayer (XDropout) whose backward returns a gradient for its
        non-tensor input too, which Paddle rejects ("The number of outputs of `PyLayer.backward`
        should be 1, but received 2", measured): its StableDropout layers become paddle.nn.Dropout,
        the same inverted dropout of the same rate.
        """
        if self.model_type != "deberta-v2":
            return
        for parent in model.sublayers(include_self=True):
            for name, child in list(parent.named_children()):
                if type(child).__name__ == "StableDropout":
                    setattr(parent, name, paddle.nn.Dropout(child.drop_prob))

    def has_token_types(self, config):
        """Whether the model has token types to tell the two texts apart (BERT's); ERNIE-M has none."""
        return self.model_type != "ernie_m" and getattr(config, "type_vocab_size", 0) >= 2

    def layer_index(self, parameter_name):
        """The encoder layer (0-based) a parameter belongs to, or None."""
        match = re.search(r"\.encoder\.layers?\.(\d+)\.", parameter_name)
        return int(match.group(1)) if match else None

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
        sequence = self.sequence_output(model, input_ids, attention_mask, position_ids, token_type_ids)
        if cls_index is None:
            cls_states = sequence[:, :1]
        else:
            cls_states = paddle.gather(sequence.reshape([-1, sequence.shape[-1]]), cls_index).unsqueeze(1)
        return self.head(model, cls_states)

    def sequence_output(self, model, input_ids, attention_mask, position_ids, token_type_ids):
        encoder = getattr(model, self.encoder)
        if attention_mask.ndim == 3 and self.additive_mask:
            attention_mask = (1.0 - attention_mask.astype("float32").unsqueeze(1)) * ADDITIVE_MASKED
        position_ids = position_ids + self.position_offset(model.config)
        if self.model_type == "ernie_m":
            return encoder(input_ids, position_ids=position_ids, attention_mask=attention_mask)[0]
        if self.model_type == "deberta-v2":
            return deberta_sequence(encoder, input_ids, attention_mask, position_ids, token_type_ids)
        outputs = encoder(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            token_type_ids=token_type_ids,
            return_dict=False,
        )
        return outputs[0]

    def head(self, model, cls_states):
        """The classification head over [CLS] states given as [inputs, 1, hidden]."""
        if self.model_type == "xlm-roberta":
            return model.classifier(cls_states)
        pooler = getattr(model, self.encoder).pooler if self.model_type != "deberta-v2" else model.pooler
        return model.classifier(model.dropout(pooler(cls_states)))


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
        renames=tuple(
            (f".self_attn.self_attn.{name}.", f".self_attn.{name}.") for name in ("q_proj", "k_proj", "v_proj")
        ),
        additive_mask=True,
    ),
    Family("BERT", "bert", "BertForSequenceClassification", "bert", "classifier", BERT_RENAMES, additive_mask=True),
    Family(
        "XLM-RoBERTa",
        "xlm-roberta",
        "XLMRobertaForSequenceClassification",
        "roberta",
        "classifier.out_proj",
        positions_after_padding=True,
        # Measured: dy2static deadlocks converting XLMRobertaSelfAttention.forward (a call is evaluated
        # while its conversion lock is held), and left unconverted, that code reshapes with two
        # unknown dimensions.
        static_graph_problem="Paddle 3.3.1 cannot trace PaddleNLP's XLM-RoBERTa into a static graph (its "
        "conversion hangs); evaluation uses the dynamic graph",
    ),
    Family(
        "DeBERTa-v2",
        "deberta-v2",
        "DebertaV2ForSequenceClassification",
        "deberta",
        "classifier",
        # encoder.LayerNorm normalizes the relative-position embeddings
        embedding_parts=("embedding", "encoder.LayerNorm"),
        dropout_name="cls_dropout",
        # Measured: dy2static deadlocks converting make_log_bucket_position, and with that helper left
        # unconverted, Paddle Inference cannot run the saved graph ("Tensor holds no memory").
        static_graph_problem="Paddle 3.3.1 cannot trace PaddleNLP's DeBERTa-v2 into a static graph that "
        "Paddle Inference runs; evaluation uses the dynamic graph",
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
