"""A model with a 3-way XNLI classifier and its tokenizer, loaded and checked against the run."""

import logging
import os
import re
from typing import NamedTuple

from paddlenlp.utils.log import logger as paddlenlp_logger

from ernie_m_xnli.models.families import Classifier, family_of, family_of_name
from ernie_m_xnli.models.hf_checkpoints import HF_WEIGHTS, check_complete, is_hf_layout, paddle_checkpoint, read_config
from ernie_m_xnli.models.precision import Precision
from utils import LABELS, InputError, error_reason

WEIGHT_FILES = ("model_state.pdparams", HF_WEIGHTS)  # PaddleNLP saves safetensors under transformers' name

logger = logging.getLogger(__name__)


class RunModel(NamedTuple):
    """The model a run trains and evaluates: the family's classifier, its tokenizer, and what it
    computes in."""

    classifier: Classifier
    tokenizer: object
    precision: Precision


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
    reason = error_reason(error)
    if os.path.isdir(name):
        return InputError(f"--model_name_or_path {name}: cannot load it ({reason})")
    return InputError(
        f"--model_name_or_path {name}: cannot load or download it ({reason}). Without network, pass a "
        f"directory saved with save_pretrained, e.g. a copy of ~/.paddlenlp/models/{name} from a machine that "
        "downloaded it"
    )


def load_classifier(
    model_dir,
    dropout,
    tokenizer_size,
    max_seq_length,
    cache_dir="",
    require_trained_classifier=False,
    tokenizer_token_types=True,
    name=None,
):
    """The family's model with a 3-way classifier, wrapped as a families.Classifier and checked
    against the tokenizer (its size; whether it gives token types: `pair_has_token_types`) and
    `max_seq_length`: from a name PaddleNLP resolves, a PaddleNLP directory, or a Hugging Face
    directory (converted, cached under `cache_dir`). A checkpoint fine-tuned elsewhere keeps its
    meaning: its classifier's rows are put in LABELS' order by its id2label. With
    `require_trained_classifier`, a model whose classifier would start at random is refused. The
    config's `fine_tuned_from` names the pretrained model (`name`, else `model_name(model_dir)`; kept
    in the checkpoints a run writes)."""
    config = read_config(model_dir) if os.path.isdir(model_dir) else None
    source = f"--model_name_or_path {model_dir}"
    family = family_of(config.get("model_type"), source) if config else family_of_name(model_dir)
    model, new_weights = load_family_model(model_dir, family, config, dropout, cache_dir)
    family.repair(model)
    if tokenizer_size > model.config.vocab_size:
        raise InputError(
            f"{source}: the tokenizer has {tokenizer_size} tokens "
            f"but the model only {model.config.vocab_size} embeddings"
        )
    check_new_weights(model_dir, new_weights, require_trained_classifier)
    if config and not any(family.output_layer in name for name in new_weights):
        order = label_order(config, source)
        if order is None:
            say_label_order_assumed(model_dir, require_trained_classifier)
        put_labels_in_order(model, family, order)
    model.config.fine_tuned_from = getattr(model.config, "fine_tuned_from", None) or name or model_name(model_dir)
    max_length = family.max_tokens(model.config)
    if max_seq_length > max_length:
        raise InputError(
            f"--max_seq_length {max_seq_length}: this model has position embeddings for at most {max_length} tokens"
        )
    return Classifier(model, family, tokenizer_token_types)


def model_name(name_or_path):
    """What tables call a model: a hub name as given, a directory by its own name."""
    return os.path.basename(os.path.normpath(name_or_path)) if os.path.isdir(name_or_path) else name_or_path


def load_family_model(model_dir, family, config, dropout, cache_dir):
    """(model, names of weights that start at random) of a name, a PaddleNLP directory or a Hugging
    Face directory (converted first)."""
    source = f"--model_name_or_path {model_dir}"
    if config and is_hf_layout(config):
        if family.feed_forward_is_4x_hidden:
            check_feed_forward_size(config, source)
        with paddle_checkpoint(model_dir, family, config, cache_dir) as converted:
            return from_pretrained(family, converted, dropout, model_dir)
    if os.path.isdir(model_dir) and not any(os.path.isfile(os.path.join(model_dir, name)) for name in WEIGHT_FILES):
        raise InputError(f"{source}: no weights ({' or '.join(WEIGHT_FILES)})")
    if os.path.isfile(os.path.join(model_dir, HF_WEIGHTS)):
        check_complete(os.path.join(model_dir, HF_WEIGHTS))  # PaddleNLP's own message names no file
    return from_pretrained(family, model_dir, dropout, model_dir)


def check_feed_forward_size(config, source):
    """PaddleNLP's ErnieM builds its feed-forward layers as 4 x hidden, whatever config.json says,
    and would only warn while skipping weights of another shape."""
    hidden = config.get("hidden_size")
    if config.get("intermediate_size", 4 * hidden) != 4 * hidden:
        raise InputError(
            f"{source}: intermediate_size {config['intermediate_size']} is not 4 x hidden_size ({hidden}), "
            "the only feed-forward size PaddleNLP's ErnieM builds"
        )


def from_pretrained(family, directory, dropout, source):
    """(model, names of the weights that start at random) of PaddleNLP's from_pretrained."""
    new_weights = NewWeights()
    paddlenlp_logger.logger.addFilter(new_weights)
    try:
        config = family.model_class.config_class.from_pretrained(directory)
        config.num_labels = len(LABELS)
        config.id2label = dict(enumerate(LABELS))
        config.label2id = {label: index for index, label in enumerate(LABELS)}
        setattr(config, family.dropout_name, dropout)
        model = family.model_class.from_pretrained(directory, config=config)
    except OSError as error:
        raise download_error(source, error) from None
    except (RuntimeError, ValueError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if "shape" in line), lines[-1] if lines else type(error).__name__)
        # "Skip loading for classifier.weight. classifier.weight receives a shape [32, 2], but the expected ..."
        outputs = re.search(rf"{re.escape(family.output_layer)}\.weight receives a shape \[\d+, (\d+)\]", reason)
        if outputs:
            raise InputError(
                f"--model_name_or_path {source}: its classifier has {outputs.group(1)} outputs and XNLI "
                f"{len(LABELS)} labels (a model fine-tuned for another task): give its encoder without the "
                f"classifier's weights ({family.output_layer}.*), which fine-tuning then trains from scratch"
            ) from None
        if "shape" in reason:
            raise InputError(f"--model_name_or_path {source}: weights do not fit config.json ({reason})") from None
        raise InputError(f"--model_name_or_path {source}: cannot load its weights ({reason})") from None
    finally:
        paddlenlp_logger.logger.removeFilter(new_weights)
    return model, new_weights.names


def label_order(config, source):
    """For each of LABELS, the index of its row in a checkpoint's classifier, by config.json's
    id2label (MNLI's "contradictory" is "contradiction"); None where the labels are generic."""
    id2label = config.get("id2label") or {}
    names = {
        int(index): str(name).lower().replace("contradictory", "contradiction") for index, name in id2label.items()
    }
    if not names or all(re.fullmatch(r"label_\d+", name) for name in names.values()):
        return None
    if sorted(names.values()) != sorted(LABELS):
        raise InputError(
            f"{source}: its classifier's labels ({', '.join(names[index] for index in sorted(names))}) are not "
            f"XNLI's ({', '.join(LABELS)})"
        )
    index_of = {name: index for index, name in names.items()}
    return [index_of[label] for label in LABELS]


def say_label_order_assumed(model_dir, evaluating):
    """A trained classifier whose labels have no names (no id2label, or LABEL_0..2) is read in XNLI's
    order: said in one line, as a warning where its predictions are what the run reports."""
    order = ", ".join(f"{index} {label}" for index, label in enumerate(LABELS))
    message = (
        f"{model_dir}: its classifier's labels have no names (config.json's id2label is missing or LABEL_0..2); "
        f"taken in XNLI's order ({order}); if it was trained in another order, give config.json an id2label "
        'such as {"0": "entailment", "1": "neutral", "2": "contradiction"}'
    )
    if evaluating:
        logger.warning("the label order is unknown: %s", message)
    else:
        logger.info(message)


def put_labels_in_order(model, family, order):
    """Reorder the output layer's rows (Paddle's weight columns) so that logit i means LABELS[i]."""
    if order is None or order == list(range(len(LABELS))):
        return
    layer = model
    for part in family.output_layer.split("."):
        layer = getattr(layer, part)
    layer.weight.set_value(layer.weight.numpy()[:, order])
    layer.bias.set_value(layer.bias.numpy()[order])
    logger.info("classifier rows reordered from the checkpoint's labels to %s", ", ".join(LABELS))


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
