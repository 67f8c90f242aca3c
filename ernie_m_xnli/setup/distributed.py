"""The process group in a few words, so that nothing else passes rank and world size around.

Under `paddle.distributed.launch` every rank runs the same script; outside it there is one
process, and every helper here is then a no-op (or the identity).
"""

import numpy as np
import paddle
import paddle.distributed as dist


def rank():
    return dist.get_rank()


def world_size():
    return dist.get_world_size()


def is_main():
    """Rank 0 logs, writes files and prints for the whole run."""
    return rank() == 0


def join():
    """Join the process group that `paddle.distributed.launch` set up, if there is one."""
    if world_size() > 1:
        dist.init_parallel_env()


def barrier():
    if world_size() > 1:
        dist.barrier()


def gather(value):
    """Every rank's `value` (any picklable object), in rank order, on every rank."""
    if world_size() == 1:
        return [value]
    values = []
    dist.all_gather_object(values, value)
    return values


def max_over_ranks(value):
    """The largest of the ranks' integers."""
    if world_size() == 1:
        return value
    tensor = paddle.to_tensor([value], dtype="int64")
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor)


def sum_over_ranks(array):
    """The element-wise sum of the ranks' float arrays."""
    if world_size() == 1:
        return array
    tensor = paddle.to_tensor(np.ascontiguousarray(array))
    dist.all_reduce(tensor)
    return tensor.numpy()


def broadcast_parameters(model):
    """Give every rank rank 0's weights."""
    if world_size() > 1:
        for parameter in model.parameters():
            dist.broadcast(parameter, src=0)
