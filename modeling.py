"""ERNIE-M with a 3-way XNLI classifier: loading it checked against the run, and exporting it."""

import logging
import os

import paddle
from paddlenlp.transformers import ErnieMForSequenceClassification

from utils import LABELS, InputError

WEIGHT_FILES = ("model_state.pdparams", "model.safetensors")
# ErnieM adds 2 to position ids, so a model holds 2 tokens fewer than its position embeddings.
ERNIE_M_POSITION_OFFSET = 2

logger = logging.getLogger(__name__)


def load_model(model_dir, dropout, tokenizer_size, max_seq_length):
    """ErnieM with a 3-way classifier, checked against the tokenizer and `max_seq_length`."""
    if os.path.isdir(model_dir) and not any(os.path.isfile(os.path.join(model_dir, name)) for name in WEIGHT_FILES):
        raise InputError(f"--model_name_or_path {model_dir}: no weights ({' or '.join(WEIGHT_FILES)})")
    try:
        model = ErnieMForSequenceClassification.from_pretrained(
            model_dir,
            num_labels=len(LABELS),
            classifier_dropout=dropout,
            id2label=dict(enumerate(LABELS)),
            label2id={label: index for index, label in enumerate(LABELS)},
        )
    except (RuntimeError, ValueError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if "shape" in line), lines[-1] if lines else type(error).__name__)
        raise InputError(f"--model_name_or_path {model_dir}: weights do not fit config.json ({reason})") from None
    if tokenizer_size > model.config.vocab_size:
        raise InputError(
            f"--model_name_or_path {model_dir}: the tokenizer has {tokenizer_size} tokens "
            f"but the model only {model.config.vocab_size} embeddings"
        )
    max_length = model.config.max_position_embeddings - ERNIE_M_POSITION_OFFSET
    if max_seq_length > max_length:
        raise InputError(
            f"--max_seq_length {max_seq_length}: this model has position embeddings for at most {max_length} tokens"
        )
    return model


def export_inference_model(model, directory):
    """Save the model as a static graph for Paddle Inference (`inference.json`, `inference.pdiparams`):
    int64 inputs input_ids, position_ids and attention_mask, each [batch, length] of any size."""
    input_spec = [
        paddle.static.InputSpec(shape=[None, None], dtype="int64", name=name)
        for name in ("input_ids", "position_ids", "attention_mask")
    ]
    model.eval()
    paddle.jit.save(paddle.jit.to_static(model, input_spec=input_spec), os.path.join(directory, "inference"))
    logger.info("exported the model for Paddle Inference to %s", directory)
