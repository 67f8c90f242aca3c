"""Padding-free training batches: the inputs of a batch packed into as few rows as fit.

A padded batch of XNLI pairs is about half padding. Packing keeps the batch (the same inputs, in the
same step) and lays its inputs side by side in rows, first-fit decreasing, choosing the row length
that computes the fewest tokens. Each input keeps its own position ids (0, 1, ... as if alone) and
token types, a block-diagonal attention mask lets no token see another input, and each input's
`[CLS]` state is gathered for the classification head. So the logits, the loss and every gradient
are those of the padded batch, up to float rounding (models.families says how each family takes them).
"""

from typing import NamedTuple

import numpy as np

from ernie_m_xnli.data.batching import token_type_ids


class PackedBatch(NamedTuple):
    """Model inputs of a packed batch; `cls_index` is, for each input in batch order, the flat
    index (row x length + start) of its [CLS] token."""

    input_ids: np.ndarray  # [rows, length]
    attention_mask: np.ndarray  # [rows, length (queries), length (keys)], 1 where a query sees a key
    position_ids: np.ndarray  # [rows, length]
    token_type_ids: np.ndarray  # [rows, length]
    cls_index: np.ndarray  # [inputs]


def first_fit_decreasing(lengths, capacity):
    """Rows of input indices, longest inputs placed first, each in the first row it fits in."""
    rows, free = [], []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, space in enumerate(free) if space >= lengths[index]), None)
        if row is None:
            rows.append([])
            free.append(capacity)
            row = len(rows) - 1
        rows[row].append(index)
        free[row] -= lengths[index]
    return rows


def packed_rows(lengths, max_length):
    """(rows of input indices, row length) that compute the fewest tokens (rows x length), the
    shortest such rows on ties. Rows are tried from the longest input's length to twice that (and at
    most `max_length`): attention grows with the square of a row, and one row holding a whole batch,
    though it computes no padding, was measured slower."""
    longest = max(lengths)
    row_lengths = range(longest, max(longest, min(2 * longest, max_length)) + 1)
    packings = ((first_fit_decreasing(lengths, length), length) for length in row_lengths)
    return min(packings, key=lambda packing: len(packing[0]) * packing[1])


def pack_batch(input_ids, pad_token_id, sep_token_id, max_length):
    """The PackedBatch of a list of token-id arrays, in rows of at most `max_length` tokens.
    A padding token sees only itself, so that no attention row is empty."""
    lengths = [len(ids) for ids in input_ids]
    rows, length = packed_rows(lengths, max_length)
    packed = np.full((len(rows), length), pad_token_id, dtype=np.int64)
    attention_mask = np.broadcast_to(np.eye(length, dtype=np.float32), (len(rows), length, length)).copy()
    position_ids = np.zeros((len(rows), length), dtype=np.int64)
    types = np.zeros((len(rows), length), dtype=np.int64)
    cls_index = np.zeros(len(input_ids), dtype=np.int64)
    for row, members in enumerate(rows):
        start = 0
        for index in members:
            end = start + lengths[index]
            packed[row, start:end] = input_ids[index]
            attention_mask[row, start:end, start:end] = 1
            position_ids[row, start:end] = np.arange(lengths[index])
            types[row, start:end] = token_type_ids(input_ids[index], sep_token_id)
            cls_index[index] = row * length + start
            start = end
    return PackedBatch(packed, attention_mask, position_ids, types, cls_index)


def packed_inputs(input_ids, pad_token_id, sep_token_id, max_length):
    """models.families.Classifier's inputs (name: array) for a list of token-id arrays, packed."""
    return pack_batch(input_ids, pad_token_id, sep_token_id, max_length)._asdict()
