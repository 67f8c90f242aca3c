"""Tokenized XNLI splits kept on disk, so that a second run (and every rank) skips tokenization.

An entry is keyed by everything that decides its content: the tokenizer's files, max_seq_length,
memory_length, and each data file's path, size and modification time. A changed file or setting
therefore gets a new entry; nothing is ever read back stale.
"""

import hashlib
import json
import os
import tempfile
from typing import NamedTuple

import numpy as np

from ernie_m_xnli.data.encoding import Features
from ernie_m_xnli.setup import distributed
from utils import available_cpu_cores, cpu_cores_per_process, file_digest

# Bump when the stored layout or the tokenization code changes meaning.
CACHE_FORMAT = 1


def cache_key(tokenizer, data_files, max_seq_length, memory_length):
    """A name for the features of `data_files` under this tokenizer and these settings."""
    parts = {
        "format": CACHE_FORMAT,
        "vocab": file_digest(tokenizer.vocab_file),
        "sentencepiece": file_digest(tokenizer.sentencepiece_model_file),
        "do_lower_case": tokenizer.do_lower_case,
        "max_seq_length": max_seq_length,
        "memory_length": memory_length,
        "files": [[os.path.realpath(path), os.stat(path).st_size, os.stat(path).st_mtime_ns] for path in data_files],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def save_features(path, features_by_language, num_skipped):
    """Write atomically: a reader never sees half an entry."""
    arrays = {"num_skipped": np.array(num_skipped), "languages": np.array(list(features_by_language))}
    for index, features in enumerate(features_by_language.values()):
        arrays[f"{index}_ids"] = np.concatenate(features.input_ids) if len(features) else np.zeros(0, np.int64)
        arrays[f"{index}_lengths"] = features.lengths()
        arrays[f"{index}_labels"] = features.labels
        arrays[f"{index}_example_ids"] = features.example_ids
        arrays[f"{index}_num_examples"] = np.array(features.num_examples)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), suffix=".tmp", delete=False) as tmp:
        np.savez(tmp, **arrays)
    os.replace(tmp.name, path)


def load_features(path):
    """(features by language, number of skipped rows) of an entry."""
    with np.load(path) as arrays:
        features_by_language = {}
        for index, lang in enumerate(arrays["languages"].tolist()):
            ends = np.cumsum(arrays[f"{index}_lengths"])
            input_ids = np.split(arrays[f"{index}_ids"], ends[:-1]) if len(ends) else []
            features_by_language[lang] = Features(
                input_ids,
                arrays[f"{index}_labels"],
                arrays[f"{index}_example_ids"],
                int(arrays[f"{index}_num_examples"]),
            )
        return features_by_language, int(arrays["num_skipped"])


class CachedSplit(NamedTuple):
    features_by_language: dict
    num_skipped: int
    source: str  # "tokenized", or "from <cache file>"


def load_or_tokenize(cache_path, tokenize):
    """A split from the cache entry `cache_path`, or from `tokenize(num_workers)`, which returns
    (features by language, number of skipped rows); `cache_path` '' or None turns the cache off.

    Rank 0 tokenizes and stores what the cache lacks, with all the machine's cores, while the other
    ranks on the machine wait and then load it; a rank that cannot see rank 0's cache (on another
    machine) tokenizes too.
    """
    if not cache_path:
        return CachedSplit(*tokenize(cpu_cores_per_process()), "tokenized")
    tokenized = None
    if distributed.is_main() and not os.path.isfile(cache_path):
        tokenized = tokenize(available_cpu_cores())
        save_features(cache_path, *tokenized)
    distributed.barrier()
    if tokenized:
        return CachedSplit(*tokenized, "tokenized")
    if os.path.isfile(cache_path):
        return CachedSplit(*load_features(cache_path), f"from {cache_path}")
    return CachedSplit(*tokenize(cpu_cores_per_process()), "tokenized")
