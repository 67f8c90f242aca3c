"""ERNIE-M with a 3-way XNLI classifier and its tokenizer, loaded and checked against the run."""

import logging
import os
import re

from paddlenlp.transformers import AutoTokenizer, ErnieMForSequenceClassification
from paddlenlp.utils.log import logger as paddlenlp_logger

from utils import LABELS, InputError

WEIGHT_FILES = ("model_state.pdparams", "model.safetensors")
# ErnieM adds 2 to position ids, so a model holds 2 tokens fewer than its position embeddings.
ERNIE_M_POSITION_OFFSET = 2

logger = logging.getLogger(__name__)


class NewWeights(logging.Filter):
    """Takes PaddleNLP's coloured "newly initialized: [...]" warning of `from_pretrained` off the
    log and keeps the parameter names, so that the caller can say what they mean in one line."""

    MESSAGE = re.compile(r"newly initialized: \[(.*?)\]")

    def __init__(self):
        super().__init__()
        self.names = []

    def filter(self, record):
        match = self.MESSAGE.search(record.getMessage())
        if match:
            self.names = re.findall(r"'([^']+)'", match.group(1))
        return match is None


def download_error(name, error):
    """The one-line error of a model that cannot be loaded: a local directory as given, or a pretrained
    name that cannot be downloaded (no network, most often)."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if os.path.isdir(name):
        return InputError(f"--model_name_or_path {name}: cannot load it ({reason[:160]})")
    return InputError(
        f"--model_name_or_path {name}: cannot load or download it ({reason[:160]}). Without network, pass a "
        f"directory saved with save_pretrained, e.g. a copy of ~/.paddlenlp/models/{name} from a machine that "
        "downloaded it"
    )


def load_tokenizer(model_dir):
    try:
        return AutoTokenizer.from_pretrained(model_dir)
    except OSError as error:
        raise download_error(model_dir, error) from None


def load_model(model_dir, dropout, tokenizer_size, max_seq_length, require_trained_classifier=False):
    """ErnieM with a 3-way classifier, checked against the tokenizer and `max_seq_length`; with
    `require_trained_classifier`, a model whose classifier would be initialized at random is refused."""
    if os.path.isdir(model_dir) and not any(os.path.isfile(os.path.join(model_dir, name)) for name in WEIGHT_FILES):
        raise InputError(f"--model_name_or_path {model_dir}: no weights ({' or '.join(WEIGHT_FILES)})")
    new_weights = NewWeights()
    paddlenlp_logger.logger.addFilter(new_weights)
    try:
        model = ErnieMForSequenceClassification.from_pretrained(
            model_dir,
            num_labels=len(LABELS),
            classifier_dropout=dropout,
            id2label=dict(enumerate(LABELS)),
            label2id={label: index for index, label in enumerate(LABELS)},
        )
    except OSError as error:
        raise download_error(model_dir, error) from None
    except (RuntimeError, ValueError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if "shape" in line), lines[-1] if lines else type(error).__name__)
        raise InputError(f"--model_name_or_path {model_dir}: weights do not fit config.json ({reason})") from None
    finally:
        paddlenlp_logger.logger.removeFilter(new_weights)
    if tokenizer_size > model.config.vocab_size:
        raise InputError(
            f"--model_name_or_path {model_dir}: the tokenizer has {tokenizer_size} tokens "
            f"but the model only {model.config.vocab_size} embeddings"
        )
    check_new_weights(model_dir, new_weights.names, require_trained_classifier)
    max_length = model.config.max_position_embeddings - ERNIE_M_POSITION_OFFSET
    if max_seq_length > max_length:
        raise InputError(
            f"--max_seq_length {max_seq_length}: this model has position embeddings for at most {max_length} tokens"
        )
    return model


def check_new_weights(model_dir, new_weights, require_trained_classifier):
    """Say in one line which weights start at random; refuse to evaluate or predict with them."""
    if not new_weights:
        return
    new_weights = ", ".join(sorted(new_weights))
    if require_trained_classifier:
        raise InputError(
            f"--model_name_or_path {model_dir}: not fine-tuned for XNLI (PaddleNLP initializes "
            f"{new_weights} at random, so its predictions would be chance); pass a checkpoint of a "
            "training run, or --allow_untrained_classifier"
        )
    logger.info("%s: %s start at random (fine-tuning trains them)", model_dir, new_weights)
