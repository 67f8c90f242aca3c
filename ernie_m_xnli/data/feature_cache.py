"""Tokenized XNLI splits kept on disk, so that a second run (and every rank) skips tokenization.

An entry is keyed by everything that decides its content: the tokenizer's files, max_seq_length,
memory_length, and each data file's path, size and modification time. A changed file or setting
therefore gets a new entry; nothing is ever read back stale.
"""

import hashlib
import json
import logging
import os
from typing import NamedTuple

import numpy as np

from ernie_m_xnli.data.encoding import Features
from ernie_m_xnli.setup import distributed
from utils import available_cpu_cores, cpu_cores_per_process, file_digest, write_npz, written_then_renamed

# Bump when the stored layout or the tokenization code changes meaning.
CACHE_FORMAT = 1

logger = logging.getLogger(__name__)


def cache_key(tokenizer, data_files, max_seq_length, memory_length):
    """A name for the features of `data_files` under this tokenizer and these settings."""
    parts = {
        "format": CACHE_FORMAT,
        "tokenizer": tokenizer_identity(tokenizer),
        "max_seq_length": max_seq_length,
        "memory_length": memory_length,
        "files": [[os.path.realpath(path), os.stat(path).st_size, os.stat(path).st_mtime_ns] for path in data_files],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def tokenizer_identity(tokenizer):
    """What decides a tokenizer's ids: its class, settings and the digests of its files (vocabulary,
    sentencepiece model; the vocabulary itself where it has no file, as a fast tokenizer's)."""
    paths = [getattr(tokenizer, name, None) for name in sorted(getattr(tokenizer, "resource_files_names", {}))]
    digests = [file_digest(path) for path in paths if isinstance(path, str) and os.path.isfile(path)]
    if not digests:
        vocabulary = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode()
        digests = [hashlib.sha256(vocabulary).hexdigest()]
    return [type(tokenizer).__name__, getattr(tokenizer, "do_lower_case", None), digests]


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
    with written_then_renamed(path) as temporary:
        write_npz(temporary, arrays)


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
    ranks on the machine wait and then load it; a rank that cannot read rank 0's entry (on another
    machine, or not written) tokenizes too. The cache only saves time: a damaged entry is tokenized
    again and replaced, and one that cannot be written is left out, each with a warning.
    """
    if not cache_path:
        return CachedSplit(*tokenize(cpu_cores_per_process()), "tokenized")
    split = None
    if distributed.is_main():
        split = read_entry(cache_path)
        if split is None:
            split = CachedSplit(*tokenize(available_cpu_cores()), "tokenized")
            write_entry(cache_path, split)
    distributed.barrier(what="the tokenized cache (rank 0 tokenizes, the others wait for it)")
    return split or read_entry(cache_path) or CachedSplit(*tokenize(cpu_cores_per_process()), "tokenized")


def read_entry(path):
    """The CachedSplit of an entry, or None where there is none or it cannot be read (a warning says so)."""
    if not os.path.isfile(path):
        return None
    try:
        return CachedSplit(*load_features(path), f"from {path}")
    except Exception as error:  # a truncated or otherwise damaged file: zipfile, numpy and the OS each have theirs
        logger.warning(
            "the token cache entry %s is damaged (%s: %s); tokenizing again", path, type(error).__name__, error
        )
        return None


def write_entry(path, split):
    try:
        save_features(path, split.features_by_language, split.num_skipped)
    except Exception as error:  # a full or read-only file system: numpy and the OS each raise their own
        logger.warning(
            "could not write the token cache entry %s (%s: %s); the run goes on without it",
            path,
            type(error).__name__,
            error,
        )
