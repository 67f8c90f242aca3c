"""Dropout: in training on a CPU, its masks drawn by numpy's PCG64 in chunks on the run's threads;
outside training, none at all.

Paddle's CPU dropout draws every element from one std::mt19937_64 in one thread: 9.3 ns an element on
this project's 2-core AMD EPYC (family 26), 11% of a bfloat16 ernie-m-base training step. numpy draws a
float32 uniform in 1.2 ns, and the chunks of a tensor go to the run's threads: forward and backward
take ~2 ns an element in all (tests/test_dropout.py; docs/benchmark.md has the step).

What is computed is Paddle's `upscale_in_train` dropout: an element is kept where its uniform draw is
>= p and then scaled by 1 / (1 - p); the gradient goes through the same mask and scale. A call's masks
depend only on two numbers drawn from Paddle's generator (seeded by --seed and saved in checkpoints)
and each chunk's position, never on the number of threads: a run repeats, and resumes, exactly.

Outside training, upscale_in_train dropout is the identity, yet Paddle's F.dropout still runs its kernel
(a copy of the tensor) and a traced static graph keeps the op: 37 copies in every batch Paddle Inference
evaluates for ernie-m-base. A graph traced inside `no_dropout_outside_training()` has none.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from functools import cache

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle.autograd import PyLayer

CHUNK = 1 << 19  # elements a generator draws: ~0.6 ms, against ~15 us to seed it
_paddle_dropout = F.dropout


@cache
def _threads(count):
    return ThreadPoolExecutor(count, thread_name_prefix="dropout")


def _cpu_threads():
    """The threads the run gave Paddle's CPU kernels (utils.set_cpu_threads)."""
    return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))


def _chunks(size):
    return [slice(start, min(start + CHUNK, size)) for start in range(0, size, CHUNK)]


def _in_chunks(work, size):
    """work(chunk index, slice) for each chunk of `size` elements, on the run's threads."""
    chunks = list(enumerate(_chunks(size)))
    if len(chunks) == 1:
        work(*chunks[0])
    else:
        list(_threads(_cpu_threads()).map(lambda chunk: work(*chunk), chunks))


def _flat(tensor):
    """A flat numpy view of a tensor's memory (no copy where it is contiguous)."""
    return np.from_dlpack(tensor.detach().contiguous()).reshape(-1)


class _Dropout(PyLayer):
    @staticmethod
    def forward(ctx, x, p):
        seed = [int(value) for value in paddle.randint(0, 2**31 - 1, [2]).numpy()]
        inputs = _flat(x)
        outputs, keep = np.empty_like(inputs), np.empty(inputs.shape, dtype=bool)
        scale = np.float32(1 / (1 - p))

        def drop(index, chunk):
            generator = np.random.Generator(np.random.PCG64(np.random.SeedSequence([*seed, index])))
            np.greater_equal(generator.random(chunk.stop - chunk.start, dtype=np.float32), p, out=keep[chunk])
            np.multiply(inputs[chunk], keep[chunk], out=outputs[chunk])
            outputs[chunk] *= scale

        _in_chunks(drop, inputs.size)
        ctx.keep, ctx.scale, ctx.shape = keep, scale, x.shape
        return paddle.from_dlpack(outputs.reshape(x.shape))

    @staticmethod
    def backward(ctx, output_gradient):
        gradients = _flat(output_gradient)
        input_gradients = np.empty_like(gradients)

        def through_mask(_, chunk):
            np.multiply(gradients[chunk], ctx.keep[chunk], out=input_gradients[chunk])
            input_gradients[chunk] *= ctx.scale

        _in_chunks(through_mask, gradients.size)
        return paddle.from_dlpack(input_gradients.reshape(ctx.shape))


def _training_dropout(x, p=0.5, axis=None, training=True, inplace=False, mode="upscale_in_train", name=None):
    """F.dropout: a float32 tensor's training dropout of 0 < p < 1 by _Dropout, anything else Paddle's."""
    plain = axis is None and not inplace and mode == "upscale_in_train"
    if training and plain and 0 < p < 1 and x.dtype == paddle.float32:
        return _Dropout.apply(x, float(p))
    return _paddle_dropout(x, p, axis, training, inplace, mode, name)


def _no_dropout_outside_training(x, p=0.5, axis=None, training=True, inplace=False, mode="upscale_in_train", name=None):
    """F.dropout: the input itself for upscale_in_train outside training, anything else Paddle's."""
    if not training and mode == "upscale_in_train":
        return x
    return _paddle_dropout(x, p, axis, training, inplace, mode, name)


@contextmanager
def _dropout_by(function):
    """Inside it, F.dropout (nn.Dropout's and attention's) is `function`."""
    F.dropout = function
    try:
        yield
    finally:
        F.dropout = _paddle_dropout


def cpu_dropout(device):
    """Inside it, on a CPU, training's dropout draws its masks as above."""
    return _dropout_by(_training_dropout) if device == "cpu" else nullcontext()


def no_dropout_outside_training():
    """Inside it, dropout outside training (upscale_in_train) computes nothing and traces no op."""
    return _dropout_by(_no_dropout_outside_training)
