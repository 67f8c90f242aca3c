"""XNLI data: reading the release files, tokenizing into windows, and batching.

The files are read in the original release layout:

    DIR/XNLI-1.0/xnli.{dev,test}.tsv
    DIR/XNLI-MT-1.0/multinli/multinli.train.<lang>.tsv

or PaddleNLP's download cache, where each release folder is nested twice
(`$PPNLP_HOME/datasets/XNLI/XNLI-1.0/XNLI-1.0/...`).
"""

import multiprocessing
import os
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from utils import LABELS, XNLI_LANGUAGES, InputError

LABEL_IDS = {label: index for index, label in enumerate(LABELS)}
# The label of a pair to predict whose gold label is unknown.
NO_LABEL = -1
# XNLI-MT spells one label differently from XNLI.
LABEL_IDS["contradictory"] = LABEL_IDS["contradiction"]

# Columns are found by header name; the release files carry more columns than these.
PREMISE_COLUMNS = ("sentence1", "premise")
HYPOTHESIS_COLUMNS = ("sentence2", "hypo", "hypothesis")
LABEL_COLUMNS = ("gold_label", "label")

# `[CLS] A [SEP] [SEP] B [SEP]`
NUM_SPECIAL_TOKENS = 4


class XnliDataError(InputError):
    """A missing or malformed XNLI file; the message names the file (and line)."""


class Pair(NamedTuple):
    premise: str
    hypothesis: str
    label: int


# Pairs per language in XNLI-1.0's dev and test files.
XNLI_EVAL_PAIRS = {"dev": 2490, "test": 5010}
# The share of malformed rows (a wrong number of fields) a training file may have: the released
# XNLI-MT files have a few; more means a wrong file.
MAX_MALFORMED_FRACTION = 0.01


class XnliFile(NamedTuple):
    pairs_by_language: dict
    num_skipped: int  # rows skipped for an empty field, or (training files) a wrong number of fields
    malformed_lines: dict = {}  # {path: line numbers of the rows with a wrong number of fields}


def _find_column(header, names, path, required=True):
    for name in names:
        if name in header:
            return header.index(name)
    if required:
        raise XnliDataError(f"{path}:1: header has no {' or '.join(names)} column (found: {', '.join(header)})")
    return None


def _tsv_rows(path):
    """(line number, fields) of each line. Quotes are plain text (like `csv.QUOTE_NONE`: XNLI has
    unbalanced `"`); a UTF-8 BOM and CRLF line ends are accepted."""
    with open(path, "rb") as file:
        for line_number, raw_line in enumerate(file, start=1):
            try:
                line = raw_line.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise XnliDataError(
                    f"{path}:{line_number}: invalid UTF-8 ({error.reason} at byte {error.start})"
                ) from None
            yield line_number, (line.lstrip("\ufeff") if line_number == 1 else line).split("\t")


def read_xnli_tsv(path, labelled=True, skip_malformed=False):
    """Read one XNLI TSV into `Pair`s grouped by language ("language" column, else None).

    Columns are found by header name. Rows with an empty premise or hypothesis (or label, when
    `labelled`) are skipped and counted; so are rows with a wrong number of fields if
    `skip_malformed`, unless they are more than MAX_MALFORMED_FRACTION of the rows. Any other bad
    row is an error naming file and line. Without `labelled`, the label column may be missing or
    empty: the label is then NO_LABEL.
    """
    rows = _tsv_rows(path)
    _, header = next(rows, (1, [""]))
    if header == [""]:
        raise XnliDataError(f"{path}: the file is empty (expected a header line)")
    premise_column, hypothesis_column = (
        _find_column(header, names, path) for names in (PREMISE_COLUMNS, HYPOTHESIS_COLUMNS)
    )
    label_column = _find_column(header, LABEL_COLUMNS, path, required=labelled)
    language_column = _find_column(header, ("language",), path, required=False)
    pairs_by_language, num_skipped, malformed, num_rows = {}, 0, [], 0
    for line_number, fields in rows:
        num_rows += 1
        if fields == [""]:
            num_skipped += 1
            continue
        if len(fields) != len(header):
            message = f"{path}:{line_number}: expected {len(header)} tab-separated fields, found {len(fields)}"
            if not skip_malformed:
                raise XnliDataError(message)
            malformed.append((line_number, message))
            num_skipped += 1
            continue
        label = fields[label_column] if label_column is not None else ""
        if not (fields[premise_column] and fields[hypothesis_column] and (label or not labelled)):
            num_skipped += 1
            continue
        if label and label not in LABEL_IDS:
            raise XnliDataError(f"{path}:{line_number}: unknown label {label!r} (expected one of {', '.join(LABELS)})")
        language = fields[language_column] if language_column is not None else None
        pair = Pair(fields[premise_column], fields[hypothesis_column], LABEL_IDS[label] if label else NO_LABEL)
        pairs_by_language.setdefault(language, []).append(pair)
    if len(malformed) > MAX_MALFORMED_FRACTION * num_rows:
        raise XnliDataError(
            f"{malformed[0][1]}; {len(malformed)} of its {num_rows} rows have a wrong number of fields (more than "
            f"{MAX_MALFORMED_FRACTION:.0%}): not an XNLI file of this layout"
        )
    return XnliFile(pairs_by_language, num_skipped, {path: [line for line, _ in malformed]} if malformed else {})


def read_prediction_file(path):
    """Pairs to predict, in file order: an XNLI file (columns by header name, labels optional), or
    `premise<TAB>hypothesis` rows without a header."""
    _, first_fields = next(_tsv_rows(path), (1, [""]))
    if any(name in first_fields for name in PREMISE_COLUMNS):
        xnli_file = read_xnli_tsv(path, labelled=False)
        return [pair for pairs in xnli_file.pairs_by_language.values() for pair in pairs], xnli_file.num_skipped
    pairs, num_skipped = [], 0
    for line_number, fields in _tsv_rows(path):
        if len(fields) != 2 and fields != [""]:
            raise XnliDataError(f"{path}:{line_number}: expected premise<TAB>hypothesis, found {len(fields)} field(s)")
        if not all(fields) or fields == [""]:
            num_skipped += 1
            continue
        pairs.append(Pair(fields[0], fields[1], NO_LABEL))
    return pairs, num_skipped


def _release_folder(data_dir, release):
    nested = os.path.join(data_dir, release, release)
    return nested if os.path.isdir(nested) else os.path.join(data_dir, release)


def xnli_file_paths(data_dir, train_languages):
    """The dev, test and training files under `data_dir`; names every missing one."""
    eval_folder = _release_folder(data_dir, "XNLI-1.0")
    train_folder = os.path.join(_release_folder(data_dir, "XNLI-MT-1.0"), "multinli")
    paths = {split: os.path.join(eval_folder, f"xnli.{split}.tsv") for split in ("dev", "test")}
    paths["train"] = {lang: os.path.join(train_folder, f"multinli.train.{lang}.tsv") for lang in train_languages}
    missing = [path for path in [paths["dev"], paths["test"], *paths["train"].values()] if not os.path.isfile(path)]
    if missing:
        raise XnliDataError(f"{data_dir}: missing XNLI file(s): {', '.join(missing)}")
    return paths


def download_xnli(with_train=True):
    """Download XNLI-1.0 (and XNLI-MT-1.0) through PaddleNLP; returns the folder they land in."""
    from paddlenlp.datasets import load_dataset
    from paddlenlp.utils.env import DATA_HOME

    # `lazy=True` fetches and checks the archives (rank by rank, as PaddleNLP coordinates it)
    # without reading them: our own reader does that, once.
    try:
        load_dataset("xnli", "en", splits=("train", "dev", "test") if with_train else ("dev", "test"), lazy=True)
    except (OSError, RuntimeError) as error:
        raise XnliDataError(
            f"XNLI could not be downloaded ({str(error).strip()[:160]}). Without network, pass --data_dir with "
            "XNLI-1.0/xnli.{dev,test}.tsv and XNLI-MT-1.0/multinli/multinli.train.<lang>.tsv (README: Data)"
        ) from None
    return os.path.join(DATA_HOME, "XNLI")


def read_eval_split(path):
    """Dev or test pairs for each of the 15 languages, read strictly: a malformed row is an error."""
    xnli_file = read_xnli_tsv(path)
    missing = [lang for lang in XNLI_LANGUAGES if lang not in xnli_file.pairs_by_language]
    if missing:
        raise XnliDataError(f"{path}: no rows for language(s) {', '.join(missing)}")
    return XnliFile({lang: xnli_file.pairs_by_language[lang] for lang in XNLI_LANGUAGES}, xnli_file.num_skipped)


def unexpected_pair_counts(split, xnli_file):
    """{language: pairs} of the languages whose count differs from XNLI-1.0's for `split`."""
    expected = XNLI_EVAL_PAIRS[split]
    return {lang: len(pairs) for lang, pairs in xnli_file.pairs_by_language.items() if len(pairs) != expected}


def read_train_split(paths_by_language):
    """Training pairs of each given language (one for cross-lingual transfer, 15 otherwise); the
    few malformed rows of the released XNLI-MT files are skipped and reported."""
    pairs_by_language, num_skipped, malformed_lines = {}, 0, {}
    for lang, path in paths_by_language.items():
        xnli_file = read_xnli_tsv(path, skip_malformed=True)
        pairs_by_language[lang] = [pair for pairs in xnli_file.pairs_by_language.values() for pair in pairs]
        num_skipped += xnli_file.num_skipped
        malformed_lines.update(xnli_file.malformed_lines)
    return XnliFile(pairs_by_language, num_skipped, malformed_lines)


@dataclass
class Features:
    """Tokenized windows of a list of pairs; `example_ids[i]` is the pair window i comes from.

    Indexing gives one training sample, `(input_ids, label)`.
    """

    input_ids: list[np.ndarray]
    labels: np.ndarray
    example_ids: np.ndarray
    num_examples: int

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, index):
        return self.input_ids[index], self.labels[index]

    def lengths(self):
        return np.array([len(ids) for ids in self.input_ids])

    @classmethod
    def concatenate(cls, features_list):
        """One Features of several, their examples numbered one after the other."""
        features_list = list(features_list)
        offsets = np.cumsum([0] + [features.num_examples for features in features_list])
        return cls(
            [ids for features in features_list for ids in features.input_ids],
            np.concatenate([features.labels for features in features_list]),
            np.concatenate([features.example_ids + offset for features, offset in zip(features_list, offsets)]),
            int(offsets[-1]),
        )

    def example_labels(self):
        labels = np.zeros(self.num_examples, dtype=np.int64)
        labels[self.example_ids] = self.labels
        return labels


def truncate_longest_first(premise_length, hypothesis_length, budget):
    """Lengths after the tokenizer's `longest_first` truncation: drop one token at a time from
    the longer text (the hypothesis on ties) until both fit in `budget`."""
    excess = premise_length + hypothesis_length - budget
    if excess <= 0:
        return premise_length, hypothesis_length
    if premise_length > hypothesis_length:
        cut = min(excess, premise_length - hypothesis_length)
        premise_length -= cut
    else:
        cut = min(excess, hypothesis_length - premise_length)
        hypothesis_length -= cut
    excess -= cut
    return premise_length - excess // 2, hypothesis_length - (excess + 1) // 2


def pair_windows(premise, hypothesis, budget, memory_length):
    """Split a tokenized pair into (premise part, hypothesis) windows of at most `budget` tokens.

    With `memory_length` 0, or when the pair fits, this is plain `longest_first` truncation (one
    window). Otherwise the premise is cut into successive windows, consecutive ones sharing
    `memory_length` tokens, each paired with the hypothesis; a hypothesis too long to leave the
    premise half of the budget is truncated first.
    """
    if memory_length == 0 or len(premise) + len(hypothesis) <= budget:
        premise_length, hypothesis_length = truncate_longest_first(len(premise), len(hypothesis), budget)
        return [(premise[:premise_length], hypothesis[:hypothesis_length])]
    window = min(len(premise), max(budget - len(hypothesis), budget // 2, memory_length + 1))
    hypothesis = hypothesis[: budget - window]
    stride = window - memory_length
    windows, start = [], 0
    while True:
        windows.append((premise[start : start + window], hypothesis))
        if start + window >= len(premise):
            return windows
        start += stride


def _token_ids(tokenizer, texts):
    if not texts:
        return []
    encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
    return encoded["input_ids"]


def encode_pairs(tokenizer, pairs, max_seq_length, memory_length):
    """Tokenize pairs once into `[CLS] A [SEP] [SEP] B [SEP]` windows (ERNIE-M has no token types)."""
    premises = _token_ids(tokenizer, [pair.premise for pair in pairs])
    hypotheses = _token_ids(tokenizer, [pair.hypothesis for pair in pairs])
    budget = max_seq_length - NUM_SPECIAL_TOKENS
    input_ids, labels, example_ids = [], [], []
    for example_id, (pair, premise, hypothesis) in enumerate(zip(pairs, premises, hypotheses)):
        for premise_part, hypothesis_part in pair_windows(premise, hypothesis, budget, memory_length):
            ids = tokenizer.build_inputs_with_special_tokens(premise_part, hypothesis_part)
            input_ids.append(np.array(ids, dtype=np.int64))
            labels.append(pair.label)
            example_ids.append(example_id)
    return Features(input_ids, np.array(labels, dtype=np.int64), np.array(example_ids, dtype=np.int64), len(pairs))


class PairEncoder:
    """`encode_pairs` over a list of pairs in chunks, in worker processes when there are several.

    The workers are forked when a list of several chunks first comes, so they share the loaded
    tokenizer instead of loading or unpickling it; their features equal `encode_pairs`' on the
    whole list. Use it as a context manager: leaving it stops the workers.
    """

    CHUNK_PAIRS = 2048

    def __init__(self, tokenizer, max_seq_length, memory_length, num_workers=1):
        self.tokenizer, self.max_seq_length, self.memory_length = tokenizer, max_seq_length, memory_length
        self.num_workers = num_workers if "fork" in multiprocessing.get_all_start_methods() else 1
        self.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None

    def encode(self, pairs, on_chunk_done=lambda num_pairs: None):
        """The Features of `pairs`; `on_chunk_done(n)` is called as each chunk of n pairs is done."""
        chunks = [pairs[start : start + self.CHUNK_PAIRS] for start in range(0, len(pairs), self.CHUNK_PAIRS)]
        if len(chunks) <= 1:
            features = self._encode(pairs)
            on_chunk_done(len(pairs))
            return features
        if self.num_workers > 1 and self.pool is None:
            # Python 3.12 warns about forking a process that has threads (Paddle's); the children
            # only run the tokenizer, which shares no lock with those threads.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self.pool = multiprocessing.get_context("fork").Pool(
                    self.num_workers, initializer=_set_worker_encoder, initargs=(self,)
                )
        encoded = []
        for features in self.pool.imap(_encode_in_worker, chunks) if self.pool else map(self._encode, chunks):
            encoded.append(features)
            on_chunk_done(features.num_examples)
        return Features.concatenate(encoded)

    def _encode(self, pairs):
        return encode_pairs(self.tokenizer, pairs, self.max_seq_length, self.memory_length)


_worker_encoder = None


def _set_worker_encoder(encoder):
    global _worker_encoder
    _worker_encoder = encoder


def _encode_in_worker(pairs):
    return _worker_encoder._encode(pairs)


def average_window_logits(logits, example_ids, num_examples):
    """One row of logits per example: the mean over its windows."""
    sums = np.zeros((num_examples, logits.shape[1]), dtype=np.float64)
    np.add.at(sums, example_ids, logits)
    counts = np.bincount(example_ids, minlength=num_examples)
    return sums / np.maximum(counts, 1)[:, None]


def pad_batch(input_ids, pad_token_id):
    """Right-pad to the longest sequence; the attention mask marks the real tokens."""
    max_length = max(len(ids) for ids in input_ids)
    batch = np.full((len(input_ids), max_length), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(input_ids), max_length), dtype=np.int64)
    for row, ids in enumerate(input_ids):
        batch[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
    return batch, attention_mask


class MicroBatch(NamedTuple):
    """Model inputs (name: array), labels, and the number of real (not padding) tokens."""

    inputs: dict
    labels: np.ndarray
    real_tokens: int

    @property
    def computed_tokens(self):
        return self.inputs["input_ids"].size


def padded_inputs(input_ids, pad_token_id):
    padded, attention_mask = pad_batch(input_ids, pad_token_id)
    return {"input_ids": padded, "attention_mask": attention_mask}


def collate_micro_batches(samples, num_micro_batches, model_inputs):
    """A rank's samples of one step cut into (up to) `num_micro_batches` consecutive MicroBatches,
    `model_inputs` (padded_inputs, or packing.packed_inputs) forming each one's inputs on its own."""
    slices = np.array_split(np.arange(len(samples)), min(num_micro_batches, len(samples)))
    micro_batches = []
    for indices in slices:
        input_ids = [samples[i][0] for i in indices]
        labels = np.array([samples[i][1] for i in indices], dtype=np.int64)
        micro_batches.append(MicroBatch(model_inputs(input_ids), labels, sum(map(len, input_ids))))
    return micro_batches


class ShardedBatchSampler:
    """Shuffled training batches for one rank of `world_size`.

    Every rank draws the same permutation (seeded by `seed` and the epoch), padded by wrapping
    around so that it divides evenly, cut into global batches of `batch_size * world_size`; each
    rank takes every `world_size`-th example of each global batch. Ranks thus see disjoint
    examples and the same number of batches, so data-parallel steps stay in lockstep.

    With `lengths`, batches are grouped by length: the permutation is cut into mega-batches of
    MEGA_BATCH global batches, each sorted by length before it is cut into global batches, whose
    order is then shuffled. A batch then holds inputs of similar length and little padding, while
    the order of the batches stays random.
    """

    MEGA_BATCH = 50

    def __init__(self, num_samples, batch_size, rank=0, world_size=1, seed=0, lengths=None):
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size = rank, world_size
        self.seed, self.lengths = seed, lengths
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch, start_batch=0):
        """Draw `epoch`'s order; the next pass starts at its batch `start_batch` (to resume)."""
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        rng = np.random.RandomState(self.seed + self.epoch)
        padded_size = -(-self.num_samples // self.world_size) * self.world_size
        indices = np.resize(rng.permutation(self.num_samples), padded_size)
        global_batch = self.batch_size * self.world_size
        if self.lengths is not None:
            mega_batch = global_batch * self.MEGA_BATCH
            indices = np.concatenate(
                [
                    chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                    for chunk in np.split(indices, range(mega_batch, len(indices), mega_batch))
                ]
            )
        batches = np.split(indices, range(global_batch, len(indices), global_batch))
        if self.lengths is not None:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        for batch in batches[self.start_batch :]:
            yield batch[self.rank :: self.world_size].tolist()

    def __len__(self):
        return -(-self.num_samples // (self.batch_size * self.world_size))


def eval_batches(features, batch_size, rank=0, world_size=1):
    """This rank's share of evaluation batches, as window indices.

    Examples (not windows) are split across ranks, so that all windows of a pair are averaged on
    one rank; within a shard, windows are sorted by length so that batches carry little padding.
    """
    indices = np.flatnonzero(features.example_ids % world_size == rank)
    indices = indices[np.argsort(features.lengths()[indices], kind="stable")]
    return [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]
