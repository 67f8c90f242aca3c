"""Which library computes a CPU run's float32 matrix products: Paddle's MKL or the wheel's oneDNN.

Paddle's dynamic graph multiplies with MKL, whose fastest path on an AMD CPU is its AVX2 one
(MKL_DEBUG_CPU_TYPE=5), where oneDNN's kernels use AVX-512 where the CPU has it. On a 2-core AMD EPYC
of family 26 (AVX-512 at full width) oneDNN computed ernie-m-base's float32 products (2,048 tokens x
768 x 768 or 3,072, forward and both backward products) at 295-460 GFLOP/s, MKL at 175-240; on a
tiny model's products oneDNN's fixed cost per call loses. Intel's MKL takes AVX-512 itself, and a CPU
with AVX2 only leaves both libraries the same instructions. So `--cpu_matmul auto` measures the two
on the model's own Linear shapes, once per CPU model, thread count, Paddle version and shapes, and
keeps the answer in the cache folder. The two take turns on every shape, three rounds, each keeping
its fastest: measured one after the other, a moment another process took a core once fell on all of
oneDNN's products and halved its rate, and the kept answer slowed every later run. (A machine busy
throughout can still mislead it; `--cpu_matmul mkl` or `onednn` decides instead.)
"""

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass

import numpy as np
import paddle

from ernie_m_xnli.models import onednn
from ernie_m_xnli.models.cpu_matmuls import FLOAT32, ONEDNN_FLOAT32
from ernie_m_xnli.setup import distributed
from utils import (
    CPU_MATMUL_CHOICES,
    PRODUCT_MEASUREMENT_TOKENS,
    InputError,
    describe_cpu,
    seconds_of,
    write_json_atomically,
)

AUTO, MKL, ONEDNN = CPU_MATMUL_CHOICES
CACHE_FILE = "cpu_matmul_paths.json"
# oneDNN is taken where it computes the products at least this much faster (MKL is Paddle's own).
REQUIRED_SPEEDUP = 1.05
TOKENS = PRODUCT_MEASUREMENT_TOKENS
# Part of a kept answer's key: answers measured another way (the libraries one after the other, before
# 2026-12-07) are measured again rather than followed.
MEASUREMENT = "measured in 3 rounds of turns"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatmulPath:
    path: str
    reason: str


def float32_matmul_path(requested, model, num_threads, cache_dir, resumed=None):
    """The library of a CPU run's float32 products: `requested` (--cpu_matmul), or for `auto` the one
    the run being resumed computed with (`resumed`), or else the one rank 0 measured faster here on
    `model`'s Linear layers (or found measured in `cache_dir`; '' measures every run)."""
    if requested != AUTO:
        choice = MatmulPath(requested, f"--cpu_matmul {requested}")
    elif resumed in (MKL, ONEDNN):
        choice = MatmulPath(resumed, "as the run being resumed computed them")
    else:
        measured = _measured_path(linear_shapes(model), num_threads, cache_dir) if distributed.is_main() else None
        choice = distributed.gather(measured, "rank 0's measurement of the matmul libraries")[0]
    if choice.path == ONEDNN:
        try:
            onednn.library()
        except (OSError, onednn.OneDnnError) as error:
            raise InputError(
                f"oneDNN's float32 products ({choice.reason}): the Paddle wheel's oneDNN cannot be used here ({error})"
            ) from None
    logger.info("float32 products by %s (%s)", describe_path(choice.path), choice.reason)
    return choice.path


def describe_path(path):
    if path == ONEDNN:
        kernel = onednn.implementation_name(input_dtype=paddle.float32)
        return f"oneDNN {onednn.version()} ({kernel})"
    return "Paddle's MKL"


def linear_shapes(model):
    """{(inputs, outputs): how many} of `model`'s Linear layers with a bias (those models/cpu_matmuls.py computes)."""
    layers = [
        layer
        for layer in model.sublayers(include_self=True)
        if isinstance(layer, paddle.nn.Linear) and layer.bias is not None
    ]
    return dict(sorted(Counter(tuple(layer.weight.shape) for layer in layers).items()))


def _measured_path(shapes, num_threads, cache_dir):
    if not shapes:
        return MatmulPath(MKL, "the model has no Linear layer to measure")
    layers = ", ".join(f"{count} x {inputs}x{outputs}" for (inputs, outputs), count in shapes.items())
    key = (
        f"{describe_cpu()}, {num_threads} thread(s), paddle {paddle.__version__}, Linear layers {layers}, {MEASUREMENT}"
    )
    cache_path = os.path.join(cache_dir, CACHE_FILE) if cache_dir else None
    cached = _read_cache(cache_path).get(key)
    if cached:
        return MatmulPath(cached["path"], f"measured on this CPU before: {_rates(cached)}; kept in {cache_path}")
    try:
        rates = product_rates({MKL: FLOAT32.matmul, ONEDNN: ONEDNN_FLOAT32.matmul}, shapes)
    except (OSError, onednn.OneDnnError) as error:
        return MatmulPath(MKL, f"oneDNN cannot be used here: {error}")
    gflops = {name: round(rate / 1e9, 2) for name, rate in rates.items()}
    # Decided on the rates as recorded, so that the cache's record and the log explain the choice.
    path = ONEDNN if gflops[ONEDNN] >= REQUIRED_SPEEDUP * gflops[MKL] else MKL
    measured = {"path": path, "gflops": gflops}
    if cache_path:
        _write_cache(cache_path, key, measured)
    return MatmulPath(path, f"measured now: {_rates(measured)}")


def _rates(measured):
    return ", ".join(f"{name} {gflops} GFLOP/s" for name, gflops in measured["gflops"].items())


def product_rates(matmuls, shapes, rounds=3):
    """{name: FLOP/s} of each of `matmuls` ({name: matmul(a, b, transpose_a, transpose_b)}) computing the
    three products of a training step (forward, input and weight gradients) through Linear layers of
    `shapes` ({(inputs, outputs): how many}) on TOKENS rows: each shape's fastest of `rounds` after one
    untimed, counted as often as the model has it. The libraries take turns on every shape of every round,
    in alternating order, so that a moment another process takes a core slows both, not one library's
    whole measurement. Its inputs come from numpy: the run's seeded Paddle generator stays untouched."""
    rng = np.random.default_rng(0)
    operands = {
        shape: [
            paddle.to_tensor(rng.standard_normal(dims, dtype=np.float32))
            for dims in ((TOKENS, shape[0]), shape, (TOKENS, shape[1]))
        ]
        for shape in shapes
    }
    fastest = {(name, shape): float("inf") for name in matmuls for shape in shapes}
    for shape in shapes:
        for matmul in matmuls.values():
            _training_products(matmul, *operands[shape])
    for turn in range(rounds):
        for shape in shapes:
            for name in list(matmuls)[:: 1 if turn % 2 == 0 else -1]:
                seconds = seconds_of(_training_products, matmuls[name], *operands[shape])
                fastest[name, shape] = min(fastest[name, shape], seconds)
    flops = sum(count * 3 * 2 * TOKENS * inputs * outputs for (inputs, outputs), count in shapes.items())
    return {name: flops / sum(count * fastest[name, shape] for shape, count in shapes.items()) for name in matmuls}


def _training_products(matmul, x, weight, gradient):
    return matmul(x, weight, False, False), matmul(gradient, weight, False, True), matmul(x, gradient, True, False)


def _read_cache(path):
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except (TypeError, OSError, ValueError):
        return {}  # none yet, unreadable or damaged: measured again


def _write_cache(path, key, measured):
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json_atomically(path, {**_read_cache(path), key: measured})
    except OSError as error:
        logger.warning("could not keep the measured matmul path in %s (%s): measured again next run", path, error)
