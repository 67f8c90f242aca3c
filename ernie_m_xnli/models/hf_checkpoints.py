"""Hugging Face checkpoints in and out: transformers' layout (config.json, model.safetensors, tokenizer
files) converted to a family's PaddleNLP model when loaded, and written back for transformers users.

Converting needs no PyTorch: safetensors reads the weights as numpy arrays. Converted weights are
cached as safetensors in the run's cache (never beside the source, never pickled), so that the next
run of the same checkpoint loads them directly.
"""

import contextlib
import hashlib
import json
import logging
import os
import tempfile

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from utils import InputError, check_export_dir, give_new_file_mode, read_json, replaced_whole, write_json_atomically

HF_WEIGHTS = "model.safetensors"
HF_WEIGHTS_INDEX = "model.safetensors.index.json"
TORCH_WEIGHTS = "pytorch_model.bin"
# The transformers release whose layout --export_hf_dir writes (and the fixtures were made with).
TRANSFORMERS_LAYOUT = "4.46.3"
CONVERSION_VERSION = 1  # part of the cache key: a change of the conversion converts again
EXPORTED_BY = "ernie_m_xnli"  # config.json's "exported_by" in an export: a directory --export_hf_dir may replace
# PaddleNLP's config keys that mean something else, or nothing, to transformers (which would e.g. return
# tuples with return_dict false, or refuse an empty quantization_config).
PADDLENLP_ONLY = ("paddlenlp_version", "dtype", "quantization_config", "return_dict", "output_hidden_states")

logger = logging.getLogger(__name__)


def read_config(directory):
    return read_json(os.path.join(directory, "config.json"))


def is_hf_layout(config):
    """transformers writes its version into config.json, PaddleNLP its own."""
    return "transformers_version" in config and "paddlenlp_version" not in config


def weight_files(directory):
    """The safetensors files of a Hugging Face checkpoint (one, or the shards its index names)."""
    index = os.path.join(directory, HF_WEIGHTS_INDEX)
    if os.path.isfile(index):
        return shard_files(directory, index)
    if os.path.isfile(os.path.join(directory, HF_WEIGHTS)):
        return [os.path.join(directory, HF_WEIGHTS)]
    if os.path.isfile(os.path.join(directory, TORCH_WEIGHTS)):
        raise InputError(
            f"--model_name_or_path {directory}: {TORCH_WEIGHTS} is a PyTorch pickle, which this suite does not "
            f"read; convert it to {HF_WEIGHTS} first (transformers: model.save_pretrained(dir, "
            "safe_serialization=True))"
        )
    raise InputError(f"--model_name_or_path {directory}: no weights ({HF_WEIGHTS} or {HF_WEIGHTS_INDEX})")


def shard_files(directory, index):
    """The shards `index` (model.safetensors.index.json) names, each there: a download stopped between
    shards leaves the index naming files that never came."""
    weight_map = (read_json(index) or {}).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f'{index}: expected a "weight_map" from weight names to shard files')
    shards = [os.path.join(directory, shard) for shard in sorted(set(weight_map.values()))]
    missing = [os.path.basename(shard) for shard in shards if not os.path.isfile(shard)]
    if missing:
        raise InputError(f"{index}: names {', '.join(missing)}, not in {directory} (a download that stopped?)")
    return shards


@contextlib.contextmanager
def complete_safetensors(path):
    """Reading the safetensors file `path` in the block: InputError naming it where it is cut short or
    damaged, as an interrupted download or copy leaves it."""
    try:
        yield
    except SafetensorError as error:
        raise InputError(f"{path}: not a complete safetensors file ({error}); download or copy it again") from None


def read_weights(path):
    with complete_safetensors(path):
        return load_file(path)


def check_complete(path):
    """Reads only the header, which says how long the file must be."""
    with complete_safetensors(path), safe_open(path, framework="np"):
        pass


def to_paddle_state(family, hf_weights):
    """PaddleNLP's state dict of transformers' weights: the family's names (with the encoder's
    prefix, which a bare encoder's checkpoint lacks), Linear weights transposed."""
    prefixed = any(name.startswith(family.encoder + ".") for name in hf_weights)
    state = {}
    for name, array in hf_weights.items():
        if name.endswith("position_ids"):  # a buffer transformers saves, not a weight
            continue
        name = family.to_paddle_name(name if prefixed else f"{family.encoder}.{name}")
        state[name] = np.ascontiguousarray(array.T) if family.is_linear_weight(name, array) else array
    return state


def to_hf_state(family, paddle_state):
    """transformers' state dict of a PaddleNLP model's weights (the inverse of to_paddle_state)."""
    return {
        family.to_hf_name(name): np.ascontiguousarray(array.T) if family.is_linear_weight(name, array) else array
        for name, array in paddle_state.items()
    }


def conversion_key(directory, files):
    """Changes when the checkpoint's config or weights change (by size and modification time)."""
    parts = [CONVERSION_VERSION, os.path.realpath(directory)]
    for path in [os.path.join(directory, "config.json"), *files]:
        status = os.stat(path)
        parts.append([os.path.basename(path), status.st_size, status.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


@contextlib.contextmanager
def paddle_checkpoint(directory, family, config, cache_dir):
    """A PaddleNLP directory (config.json, model.safetensors) of a Hugging Face checkpoint: the one
    cached under `cache_dir`, converted now if there is none; a temporary one without a cache, or
    where the cache cannot be written."""
    files = weight_files(directory)
    target = cache_dir and os.path.join(cache_dir, "converted", conversion_key(directory, files))
    if target and os.path.isfile(os.path.join(target, HF_WEIGHTS)):
        logger.info("%s: converted weights from the cache (%s)", directory, target)
        yield target
        return
    state = to_paddle_state(family, {name: array for path in files for name, array in read_weights(path).items()})
    if target:
        try:
            write_checkpoint(target, config, state)
            logger.info("%s: converted from transformers' layout into %s", directory, target)
            yield target
            return
        except (OSError, SafetensorError) as error:
            logger.warning("cannot cache the converted weights in %s (%s); converting for this run only", target, error)
    with tempfile.TemporaryDirectory(prefix="ernie-m-xnli-converted-") as temporary:
        write_checkpoint(temporary, config, state)
        logger.info("%s: converted from transformers' layout for this run (no cache)", directory)
        yield temporary


def write_checkpoint(directory, config, state):
    """config.json and model.safetensors, the weights renamed into place last (a cache entry is
    complete once they are there)."""
    os.makedirs(directory, exist_ok=True)
    write_json_atomically(os.path.join(directory, "config.json"), config)
    partial = os.path.join(directory, f"{HF_WEIGHTS}.partial-{os.getpid()}")
    try:
        save_file(state, partial)
        give_new_file_mode(partial)  # safetensors makes private files
        os.replace(partial, os.path.join(directory, HF_WEIGHTS))
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def is_hf_export(directory):
    """Whether `directory` holds an earlier --export_hf_dir export of this suite."""
    return (read_json(os.path.join(directory, "config.json")) or {}).get("exported_by") == EXPORTED_BY


def export_hf_checkpoint(model, family, tokenizer, directory):
    """--export_hf_dir: the fine-tuned model in transformers' layout for its family (config.json with
    the suite's labels, model.safetensors, tokenizer files), for transformers'
    AutoModelForSequenceClassification and AutoTokenizer, and ready to upload (no path of this
    machine inside). An earlier export there is replaced whole, once the new one is complete."""
    state = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
    config = {key: value for key, value in model.config.to_diff_dict().items() if key not in PADDLENLP_ONLY}
    config.update(
        architectures=[family.class_name],
        model_type=family.model_type,
        transformers_version=TRANSFORMERS_LAYOUT,
        exported_by=EXPORTED_BY,
    )
    if family.feed_forward_is_4x_hidden:  # whatever size PaddleNLP's config.json gives
        config["intermediate_size"] = 4 * config["hidden_size"]
    check_export_dir("--export_hf_dir", directory, is_hf_export)
    with replaced_whole(directory) as new:
        save_file(to_hf_state(family, state), os.path.join(new, HF_WEIGHTS), metadata={"format": "pt"})
        write_json_atomically(os.path.join(new, "config.json"), config)
        tokenizer.save_pretrained(new)
        portable_tokenizer_config(os.path.join(new, "tokenizer_config.json"))
        for name in os.listdir(new):  # safetensors makes private files
            give_new_file_mode(os.path.join(new, name))
    logger.info("exported the model in transformers' layout to %s", directory)


def portable_tokenizer_config(tokenizer_config_path):
    """Drop from an exported tokenizer_config.json what only held on this machine: the file
    arguments PaddleNLP writes as null (DeBERTa-v2's `"vocab_file": null`, which transformers would
    pass on instead of its own file names) and absolute paths (`name_or_path`, `special_tokens_map_file`)."""
    with open(tokenizer_config_path, encoding="utf-8") as file:
        config = json.load(file)
    kept = {
        key: value
        for key, value in config.items()
        if not (key.endswith("_file") and value is None) and not (isinstance(value, str) and os.path.isabs(value))
    }
    if kept != config:
        write_json_atomically(tokenizer_config_path, kept)
