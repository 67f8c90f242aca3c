"""What every setting shares: the settings, the model shapes, and how each is timed. numpy only, so
that the transformers peer runs it without Paddle.

A CPU cannot run a whole epoch or test set inside a benchmark: a setting forms all the batches it
would run, times a sample of them spread evenly over their computed sizes, and scales its computed
tokens per second up to all of them, whose computed tokens (padding included) are counted exactly.
"""

import resource
import shutil
import subprocess
import time

import numpy as np

from ernie_m_xnli.data.packing import packed_rows

PROJECT, TRANSFORMERS, UPSTREAM, CPU_DEFAULTS = "project", "transformers", "upstream-style", "upstream-cpu-defaults"
# bfloat16 mixed precision on a CPU: the project's --use_amp --amp_dtype bfloat16, transformers' --bf16.
PROJECT_BF16, TRANSFORMERS_BF16 = "project-bf16", "transformers-bf16"
# Trainer's --torch_compile: the peer's model through torch.compile (inductor), as accelerate wraps it.
TRANSFORMERS_COMPILE, TRANSFORMERS_BF16_COMPILE = "transformers-compile", "transformers-bf16-compile"
PROJECT_SETTINGS = (PROJECT, PROJECT_BF16)
PEER_SETTINGS = (TRANSFORMERS, TRANSFORMERS_BF16, TRANSFORMERS_COMPILE, TRANSFORMERS_BF16_COMPILE)
COMPILED_SETTINGS = (TRANSFORMERS_COMPILE, TRANSFORMERS_BF16_COMPILE)
SETTINGS = (*PROJECT_SETTINGS, *PEER_SETTINGS, UPSTREAM, CPU_DEFAULTS)
BFLOAT16_SETTINGS = (PROJECT_BF16, TRANSFORMERS_BF16, TRANSFORMERS_BF16_COMPILE)
SHAPES = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
}
ERNIE_M_VOCABULARY = 250002
# The token ids the transformers peer runs, written by Paddle's side into the work directory.
PEER_BATCHES_FILE = "peer-batches.npz"


def spread_sample(batches, count, computed_tokens):
    """`count` batches at evenly spaced quantiles of their computed size (largest first, so that the
    allocator has grown before the clock starts): a small sample whose shapes represent them all."""
    ordered = sorted(batches, key=computed_tokens)
    count = min(count, len(ordered))
    positions = ((np.arange(count) + 0.5) * len(ordered) / count).astype(int)
    return [ordered[position] for position in positions[::-1]]


def padded_tokens(batch):
    return len(batch) * max(len(ids) for ids in batch)


def packed_tokens(batch, max_length):
    rows, length = packed_rows([len(ids) for ids in batch], max_length)
    return len(rows) * length


def real_tokens(batches):
    return sum(len(ids) for batch in batches for ids in batch)


def computed_tokens_per_second(run_batch, sample, computed_tokens, profile=None):
    """Computed tokens per second of `run_batch` over `sample`, after one untimed batch; then
    `profile(run_batch, the median batch)`, when given, prints an operator profile."""
    run_batch(sample[0])
    started = time.perf_counter()
    for batch in sample:
        run_batch(batch)
    rate = sum(map(computed_tokens, sample)) / (time.perf_counter() - started)
    if profile:
        profile(run_batch, sample[len(sample) // 2])
    return rate


def training_row(run_step, epoch, num_examples, sample_size, computed_tokens, profile=None):
    """The training columns of an epoch of batches (lists of token-id arrays) run by `run_step`."""
    sample = spread_sample(epoch, sample_size, computed_tokens)
    rate = computed_tokens_per_second(run_step, sample, computed_tokens, profile)
    computed, real = sum(map(computed_tokens, epoch)), real_tokens(epoch)
    epoch_seconds = computed / rate
    return {
        "train_examples_per_s": num_examples / epoch_seconds,
        "train_tokens_per_s": real / epoch_seconds,
        "train_computed_tokens_per_s": rate,
        "train_computed_per_real": computed / real,
    }


def evaluation_row(predict, batches, sample_size, seconds, profile=None):
    """The whole test evaluation's time: the `seconds` of preparing it plus the model on every
    batch, from the computed-token rate of a sample of the batches."""
    sample = spread_sample(batches, sample_size, padded_tokens)
    rate = computed_tokens_per_second(predict, sample, padded_tokens, profile)
    computed, real = sum(map(padded_tokens, batches)), real_tokens(batches)
    seconds = {"eval_tokenizing_seconds": 0.0, "eval_export_seconds": 0.0, "eval_predictor_seconds": 0.0, **seconds}
    return {
        "eval_seconds": sum(seconds.values()) + computed / rate,
        **seconds,
        "eval_computed_tokens_per_s": rate,
        "eval_computed_per_real": computed / real,
        "eval_pairs": sum(map(len, batches)),
    }


def file_order_batches(input_ids_by_language, languages, batch_size):
    """Evaluation batches the way upstream and transformers' Trainer form them: each language's
    inputs in file order, `batch_size` at a time."""
    return [
        input_ids_by_language[lang][start : start + batch_size]
        for lang in languages
        for start in range(0, len(input_ids_by_language[lang]), batch_size)
    ]


def process_peak_memory_mb():
    """This process's peak resident memory (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_flops(matmul, repeats=10):
    """FLOP/s of `matmul()` (a 2048 x 2048 product that returns once it is computed)."""
    matmul()
    started = time.perf_counter()
    for _ in range(repeats):
        matmul()
    return 2 * 2048**3 * repeats / (time.perf_counter() - started)


def python_problem(python, packages):
    """Why the Python program `python` cannot run a peer that imports `packages`: not a program, or the
    packages it cannot import; None when it can."""
    if shutil.which(python) is None:
        return f"{python}: no such program"
    check = (
        "import importlib.util, sys; print(' '.join(n for n in sys.argv[1:] if importlib.util.find_spec(n) is None))"
    )
    found = subprocess.run([python, "-c", check, *packages], capture_output=True, text=True, check=False)
    missing = found.stdout.split() if found.returncode == 0 else packages
    return f"{python} has no {' or '.join(missing)}" if missing else None
