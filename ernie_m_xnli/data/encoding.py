"""Tokenizing pairs once into ERNIE-M's input windows, in worker processes for long lists."""

import multiprocessing
import warnings
from dataclasses import dataclass

import numpy as np

from utils import NUM_SPECIAL_TOKENS


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

    def first_examples(self, count):
        """The Features of the first `count` pairs only (all of them where there are fewer)."""
        kept = np.flatnonzero(self.example_ids < count)
        return Features(
            [self.input_ids[i] for i in kept], self.labels[kept], self.example_ids[kept], min(count, self.num_examples)
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
