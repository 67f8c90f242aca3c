"""Where a model given by name comes from: PaddleNLP's own names (ernie-m-base,
bert-base-multilingual-cased, ...) are downloaded by PaddleNLP; any other name is a Hugging Face hub
id (xlm-roberta-base, microsoft/mdeberta-v3-base), fetched with huggingface_hub (weights as
safetensors only, never pickles) into the run's cache and loaded as a Hugging Face directory."""

import os
import re

from paddlenlp import transformers

from ernie_m_xnli.models.families import FAMILIES
from utils import InputError, error_reason

# What a hub checkpoint needs: config, safetensors weights (sharded or not), every tokenizer layout.
HUB_FILES = ("*.json", "*.safetensors", "*.model", "vocab.txt", "merges.txt")


def is_paddlenlp_name(name):
    """Whether PaddleNLP resolves the name itself for one of the families."""
    return any(name in getattr(transformers, family.class_name).pretrained_init_configuration for family in FAMILIES)


def local_model_source(name_or_path, cache_dir):
    """A directory or a PaddleNLP name as it is; a hub id downloaded into `cache_dir`/hub, as its directory."""
    if os.path.isdir(name_or_path) or is_paddlenlp_name(name_or_path):
        return name_or_path
    way_forward = (
        f"without network, run `huggingface-cli download {name_or_path} --local-dir DIR` on a machine that has it, "
        "then pass --model_name_or_path DIR"
    )
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise InputError(
            f"--model_name_or_path {name_or_path}: neither a directory nor a name PaddleNLP resolves; to fetch it "
            f"from the Hugging Face hub, pip install huggingface_hub, or {way_forward}"
        ) from None
    try:
        return snapshot_download(
            name_or_path,
            allow_patterns=list(HUB_FILES),
            cache_dir=os.path.join(cache_dir, "hub") if cache_dir else None,
        )
    except Exception as error:  # huggingface_hub's errors for no network, an unknown id, a gated model, ...
        raise InputError(
            f"--model_name_or_path {name_or_path}: neither a directory nor a name PaddleNLP resolves, and the "
            f"Hugging Face hub did not give it ({hub_reason(error)}); {way_forward}"
        ) from None


def hub_reason(error):
    """Why the hub did not answer: a failed connection in the system's words (requests passes on
    urllib3's nested reprs), anything else in huggingface_hub's whole sentences."""
    connection = re.search(r"\[Errno -?\d+\] [^\"'()]+", str(error))
    if "Max retries exceeded" in str(error) and connection:
        return f"no connection to the hub: {connection.group(0).strip()}"
    return error_reason(error)
