"""The process group in a few words, so that nothing else passes rank and world size around.

Under `paddle.distributed.launch` every rank runs the same script; outside it there is one
process, and every helper here is then a no-op (or the identity).

The collectives between training steps (an evaluation's sums, a checkpoint, the cache, the start of
training) first wait, patiently, until all ranks reach them: gloo, the CPU backend, gives up on a
peer after 30 s (its context's fixed default; Paddle sets no other), which a rank exporting a
static graph or evaluating on a busy CPU easily outlasts. The wait polls the launcher's key-value
store for up to the collective timeout (--collective_timeout), and a rank that gives up leaves its
reason there, so that every rank stops with one line, none hangs. A look at the store costs about
45 ms (Paddle's store client, measured): too much for every training step, whose gradient
all-reduce keeps the ranks in step anyway.
"""

import itertools
import time

import numpy as np
import paddle
import paddle.distributed as dist
from paddle.base import core

from utils import DEFAULT_COLLECTIVE_TIMEOUT

# The launcher's key-value store: ARRIVED/<point> says which ranks reached a point; REASON holds the line of a
# rank that waited too long, TOLD counts the ranks that have read it.
ARRIVED, REASON, TOLD = (f"ernie_m_xnli/{key}" for key in ("arrived", "reason", "told"))
MAX_NAMED_RANKS, GAVE_UP = 62, 1 << 62  # an arrival is a bit of a 64-bit integer up to 62 ranks
STORE_KEPT_FOR_READERS = 60.0  # seconds rank 0, the store's host, waits for the others to read why before it exits
LONGEST_POLL = 0.01  # seconds between two looks at the store, after the first few quicker ones


class RankTimeout(Exception):
    """A rank waited longer than the collective timeout for the others, or another rank did."""


class Rendezvous:
    """Where the ranks meet before a collective: numbered points, reached in the same order on every
    rank, each an integer in the store. Arriving, rank r adds 2**r (a count of 1 each past
    MAX_NAMED_RANKS ranks), so one look says who is missing; a rank that gives up adds GAVE_UP, so
    that the last to come learns it with the same one look."""

    def __init__(self):
        self.points, self.timeout = itertools.count(), DEFAULT_COLLECTIVE_TIMEOUT

    def wait_for_all(self, what):
        """Return once every rank has reached this point; raise RankTimeout after `timeout` seconds,
        or as soon as a rank has given up here."""
        store, key = core.create_or_get_global_tcp_store(), f"{ARRIVED}/{next(self.points)}"
        named = world_size() <= MAX_NAMED_RANKS
        everyone = (1 << world_size()) - 1 if named else world_size()
        try:
            arrived, started = store.add(key, 1 << rank() if named else 1), time.monotonic()
            for polls in itertools.count():
                if arrived == everyone:
                    return
                if arrived >= GAVE_UP:
                    reason = store.get(REASON).decode()
                    store.add(TOLD, 1)
                    raise RankTimeout(f"rank {rank()} stopped at {what}: {reason}")
                if time.monotonic() - started > self.timeout:
                    missing = [f"rank {r}" for r in range(world_size()) if not arrived >> r & 1] if named else []
                    self.give_up(store, key, what, " and ".join(missing) or "the other ranks")
                time.sleep(min(LONGEST_POLL, 1e-4 * 2**polls))
                arrived = store.add(key, 0)
        except RuntimeError as error:  # the store's server, in rank 0's process, is gone
            raise RankTimeout(f"rank {rank()} lost rank 0 at {what} ({error}): see rank 0's log") from None

    def give_up(self, store, key, what, missing):
        reason = (
            f"rank {rank()} waited {self.timeout:g} s for {missing} at {what} (--collective_timeout "
            f"{self.timeout:g}): a rank that slow is busy or stuck; free the CPU or raise --collective_timeout"
        )
        store.set(REASON, reason.encode())
        store.add(key, GAVE_UP)
        if rank() == 0:  # the store lives in this process: keep it up until the others have read why
            deadline = time.monotonic() + STORE_KEPT_FOR_READERS
            while store.add(TOLD, 0) < world_size() - 1 and time.monotonic() < deadline:
                time.sleep(LONGEST_POLL)
        raise RankTimeout(reason)


rendezvous = Rendezvous()


def rank():
    return dist.get_rank()


def world_size():
    return dist.get_world_size()


def is_main():
    """Rank 0 logs, writes files and prints for the whole run."""
    return rank() == 0


def join(collective_timeout=DEFAULT_COLLECTIVE_TIMEOUT):
    """Join the process group that `paddle.distributed.launch` set up, if there is one; a rank waits
    up to `collective_timeout` seconds for the others at each collective."""
    rendezvous.timeout = collective_timeout
    if world_size() > 1:
        dist.init_parallel_env()


def all_ranks_reach(what):
    """Wait until every rank reaches this point (`what`, for the message of a rank that waits too long)."""
    if world_size() > 1:
        rendezvous.wait_for_all(what)


def barrier(what="a barrier"):
    if world_size() > 1:
        rendezvous.wait_for_all(what)
        dist.barrier()


def gather(value, what="gathering a value from every rank"):
    """Every rank's `value` (any picklable object), in rank order, on every rank."""
    if world_size() == 1:
        return [value]
    rendezvous.wait_for_all(what)
    values = []
    dist.all_gather_object(values, value)
    return values


def max_over_ranks(value):
    """The largest of the ranks' integers, at once: it runs after every training step, whose gradients
    are all-reduced already (ranks in step), where a wait through the store would cost its 45 ms a look."""
    if world_size() == 1:
        return value
    tensor = paddle.to_tensor([value], dtype="int64")
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor)


def sum_over_ranks(array, what="the sum of the ranks' values"):
    """The element-wise sum of the ranks' float arrays."""
    if world_size() == 1:
        return array
    rendezvous.wait_for_all(what)
    tensor = paddle.to_tensor(np.ascontiguousarray(array))
    dist.all_reduce(tensor)
    return tensor.numpy()


def broadcast_parameters(model, what="rank 0's weights"):
    """Give every rank rank 0's weights."""
    if world_size() > 1:
        rendezvous.wait_for_all(what)
        for parameter in model.parameters():
            dist.broadcast(parameter, src=0)
