"""Batches: padded evaluation and training batches, micro-batches, and the shuffled, sharded sampler."""

from typing import NamedTuple

import numpy as np


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


def token_type_ids(input_ids, sep_token_id):
    """0 up to and including the first separator, 1 after it: the segments of `[CLS] A [SEP] B [SEP]`."""
    is_sep = input_ids == sep_token_id
    return ((np.cumsum(is_sep, axis=-1) - is_sep) > 0).astype(np.int64)


def padded_inputs(input_ids, pad_token_id, sep_token_id):
    """models.families.Classifier's inputs (name: array) for a list of token-id arrays, padded."""
    padded, attention_mask = pad_batch(input_ids, pad_token_id)
    position_ids = np.broadcast_to(np.arange(padded.shape[1], dtype=np.int64), padded.shape).copy()
    return {
        "input_ids": padded,
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "token_type_ids": token_type_ids(padded, sep_token_id) * attention_mask,
    }


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
