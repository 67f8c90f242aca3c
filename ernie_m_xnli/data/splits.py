"""The XNLI splits of a run: read, checked, and tokenized once (or loaded from the cache)."""

import logging
import os
from functools import partial
from typing import NamedTuple

from ernie_m_xnli.data.encoding import Features, PairEncoder
from ernie_m_xnli.data.feature_cache import cache_key, load_or_tokenize
from ernie_m_xnli.data.xnli_files import (
    XNLI_EVAL_PAIRS,
    download_xnli,
    read_eval_split,
    read_train_split,
    unexpected_pair_counts,
    xnli_file_paths,
)
from ernie_m_xnli.setup import distributed
from ernie_m_xnli.setup.runtime import progress_bar

logger = logging.getLogger(__name__)


class XnliFeatures(NamedTuple):
    train: Features  # None with --eval_only
    dev: dict  # {language: Features}
    test: dict
    test_file: str  # its path


def find_data_files(args):
    """The XNLI files the run reads, {"dev": path, "test": path, "train": {language: path}} (no training
    files with --eval_only), under --data_dir or downloaded; a missing one is named."""
    train_languages = () if args.eval_only else args.train_languages
    return xnli_file_paths(args.data_dir or download_xnli(with_train=bool(train_languages)), train_languages)


def prepare_features(args, tokenizer, paths):
    """Read the XNLI files `paths` (find_data_files') and tokenize every split once for the whole run
    (or load it from the cache)."""
    readers = {split: (partial(read_eval_split, paths[split]), [paths[split]]) for split in ("dev", "test")}
    if paths["train"]:
        readers["train"] = (partial(read_train_split, paths["train"]), list(paths["train"].values()))
    features = {split: tokenized_split(split, read, files, tokenizer, args) for split, (read, files) in readers.items()}
    train_features = Features.concatenate(features["train"].values()) if paths["train"] else None
    dev, test = (first_pairs(features[split], args.eval_pairs_per_language, split) for split in ("dev", "test"))
    return XnliFeatures(train_features, dev, test, paths["test"])


def first_pairs(features_by_language, count, split):
    """{language: Features} of the first `count` pairs of each language (all of them where `count` is 0)."""
    if not count:
        return features_by_language
    logger.info("%s: evaluating the first %d pairs of each language only (--eval_pairs_per_language)", split, count)
    return {lang: features.first_examples(count) for lang, features in features_by_language.items()}


def tokenized_split(split, read_split, data_files, tokenizer, args):
    """{language: Features} of one split, from the cache or tokenized (in worker processes)."""

    def tokenize(num_workers):
        xnli_file = read_split()
        num_pairs = sum(len(pairs) for pairs in xnli_file.pairs_by_language.values())
        bar = progress_bar(args.disable_tqdm, total=num_pairs, desc=f"tokenizing {split}", unit="pair")
        encoder = PairEncoder(
            tokenizer, args.max_seq_length, args.memory_length, args.preprocessing_num_workers or num_workers
        )
        with bar, encoder:
            features = {lang: encoder.encode(pairs, bar.update) for lang, pairs in xnli_file.pairs_by_language.items()}
        warn_about_rows(split, xnli_file, data_files)
        return features, xnli_file.num_skipped

    cache_path = args.cache_dir and os.path.join(
        args.cache_dir, f"{split}-{cache_key(tokenizer, data_files, args.max_seq_length, args.memory_length)}.npz"
    )
    split_data = load_or_tokenize(cache_path, tokenize)
    features_by_language = split_data.features_by_language
    logger.info(
        "%s: %d pairs in %d language(s) -> %d inputs; %d empty or malformed rows skipped (%s)",
        split,
        sum(features.num_examples for features in features_by_language.values()),
        len(features_by_language),
        sum(len(features) for features in features_by_language.values()),
        split_data.num_skipped,
        split_data.source,
    )
    return features_by_language


def warn_about_rows(split, xnli_file, data_files):
    """Name the skipped malformed rows of training files, and dev/test files not of XNLI-1.0's size."""
    if not distributed.is_main():
        return
    for path, lines in xnli_file.malformed_lines.items():
        shown = ", ".join(map(str, lines[:3])) + (", ..." if len(lines) > 3 else "")
        logger.warning("%s: %d row(s) with a wrong number of fields skipped (line %s)", path, len(lines), shown)
    counts = unexpected_pair_counts(split, xnli_file) if split in XNLI_EVAL_PAIRS else {}
    if counts:
        logger.warning(
            "%s: %d language(s) without XNLI-1.0's %d %s pairs (%s): a sample, or another version?",
            data_files[0],
            len(counts),
            XNLI_EVAL_PAIRS[split],
            split,
            " ".join(f"{lang} {count}" for lang, count in counts.items()),
        )
