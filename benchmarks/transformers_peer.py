"""The transformers peer: transformers' ErnieMForSequenceClassification on PyTorch, trained and
evaluated the way `run_xnli.py` (transformers' Trainer) does, on the token ids Paddle's side wrote.

Training: upstream's random batches (the same ones), padded to their longest input as
DataCollatorWithPadding does; AdamW with linear warmup and decay, gradients clipped to norm 1.0
(Trainer's default), the loss from the model's own head. Evaluation: Trainer's way, each language's
test inputs in file order at its default evaluation batch size (8), padded per batch, in eval mode
under no_grad. run_xnli.py tokenizes once per run through the datasets cache: no tokenizing is
counted. transformers-bf16 is Trainer's `--bf16` on a CPU: the forward passes of training and
evaluation under `torch.autocast("cpu", dtype=torch.bfloat16)`, weights and optimizer in float32.
transformers-compile and transformers-bf16-compile add Trainer's `--torch_compile`: the model through
`torch.compile` (inductor, default mode), as accelerate wraps it for training and for evaluation; the
time compiling takes is measured apart and left out of the setting's times (a warm cache skips most of
it). (`--bf16_full_eval` is no setting: ErnieM's float32 attention mask meets bfloat16 values in a
product, and transformers 4.46.3 raises "expected m1 and m2 to have the same dtype".)
Needs torch and transformers (4.46 still has ErnieM), not Paddle.
"""

import json
import os
from collections import Counter
from contextlib import nullcontext
from functools import partial

import numpy as np
import torch
from transformers import ErnieMConfig, ErnieMForSequenceClassification, get_linear_schedule_with_warmup

from benchmarks.common import (
    BFLOAT16_SETTINGS,
    COMPILED_SETTINGS,
    ERNIE_M_VOCABULARY,
    PEER_BATCHES_FILE,
    SHAPES,
    evaluation_row,
    file_order_batches,
    matmul_flops,
    padded_tokens,
    process_peak_memory_mb,
    training_row,
)
from utils import PRODUCT_MEASUREMENT_TOKENS, XNLI_LANGUAGES, seconds_of, threads_per_process

# Trainer's defaults (TrainingArguments).
TRAINER_EVAL_BATCH_SIZE = 8
TRAINER_MAX_GRAD_NORM = 1.0


def model_config(model):
    """transformers' ErnieMConfig of the benchmark's model: a named shape, or a checkpoint's config.json
    (PaddleNLP's ErnieM builds its feed-forward layers 4 x hidden, whatever the file says)."""
    if os.path.isdir(model):
        with open(os.path.join(model, "config.json"), encoding="utf-8") as file:
            saved = json.load(file)
        names = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "max_position_embeddings")
        shape = {name: saved[name] for name in names if name in saved}
    else:
        shape = dict(SHAPES[model], vocab_size=ERNIE_M_VOCABULARY)
    return ErnieMConfig(
        **shape, intermediate_size=4 * shape["hidden_size"], pad_token_id=1, num_labels=3, torch_dtype="float32"
    )


def padded(batch, pad_token_id):
    """DataCollatorWithPadding's tensors of a batch of token-id arrays."""
    length = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, : len(ids)] = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def split(ids, lengths, counts):
    """Lists of token-id arrays from their concatenation, `counts` arrays at a time."""
    arrays = np.split(ids, np.cumsum(lengths)[:-1])
    return [arrays[start : start + count] for start, count in zip(np.cumsum([0, *counts[:-1]]), counts)]


def print_profile(run_batch, batch):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        run_batch(batch)
    print(profiler.key_averages().table(sort_by="cpu_time_total", row_limit=30), flush=True)


def measure(args):
    """The JSON row of the transformers setting, from the batches file in args.work_dir."""
    num_threads = threads_per_process(args.cpu_threads)
    torch.set_num_threads(num_threads)
    torch.manual_seed(0)
    saved = np.load(os.path.join(args.work_dir, PEER_BATCHES_FILE))
    pad_token_id = int(saved["pad_token_id"])
    epoch = split(saved["train_ids"], saved["train_lengths"], saved["train_batch_sizes"])
    test = split(saved["test_ids"], saved["test_lengths"], saved["test_pairs_per_language"])
    model = ErnieMForSequenceClassification(model_config(args.model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, eps=1e-8, weight_decay=0.0)
    scheduler = get_linear_schedule_with_warmup(optimizer, 1000, 10000)
    profile = print_profile if args.profile else None
    bfloat16 = args.setting in BFLOAT16_SETTINGS
    compiled = args.setting in COMPILED_SETTINGS
    run_model = torch.compile(model) if compiled else model

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bfloat16 else nullcontext()

    def training_step(batch):
        inputs = padded(batch, pad_token_id)
        with autocast():
            loss = run_model(**inputs, labels=torch.zeros(len(batch), dtype=torch.long)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), TRAINER_MAX_GRAD_NORM)
        optimizer.step()
        scheduler.step()
        model.zero_grad()

    @torch.no_grad()
    def predict(batch):
        with autocast():
            run_model(**padded(batch, pad_token_id)).logits.float().numpy()

    compiling = {}
    model.train()
    if compiled:
        compiling["train_compile_seconds"] = compile_seconds(training_step, epoch)
    train = training_row(training_step, epoch, int(saved["num_examples"]), args.train_steps, padded_tokens, profile)
    model.eval()
    batches = file_order_batches(dict(zip(XNLI_LANGUAGES, test)), XNLI_LANGUAGES, TRAINER_EVAL_BATCH_SIZE)
    if compiled:
        compiling["eval_compile_seconds"] = compile_seconds(predict, batches)
    evaluate = evaluation_row(predict, batches, args.eval_batches, {}, profile)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    peaks = {f"PyTorch {torch.__version__} matmul": matmul_flops(lambda: float(torch.mm(a, b)[0, 0]))}
    if bfloat16:
        a16, b16 = a.bfloat16(), b.bfloat16()
        peaks[f"PyTorch {torch.__version__} bfloat16 matmul"] = matmul_flops(lambda: float(torch.mm(a16, b16)[0, 0]))
    return {
        "setting": args.setting,
        "cpu_threads": num_threads,
        "denormals": "kept",
        "mkl_cpu_type": "n/a",
        "products": f"PyTorch {torch.__version__}: {'oneDNN bfloat16 (autocast)' if bfloat16 else blas() + ' float32'}"
        + (", torch.compile (inductor)" if compiled else ""),
        **train,
        **evaluate,
        **compiling,
        "non_embedding_parameters": sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name),
        "peak_memory_mb": process_peak_memory_mb(),
        "matmul_peaks": peaks,
        "encoder_products": encoder_product_rates(model, bfloat16),
    }


def compile_seconds(run_batch, batches):
    """How long torch.compile takes on the shapes of `batches`: a batch of each kind it recompiles for
    (the largest, the smallest, one of each batch size), run twice, the first time less the second."""
    by_size = {len(batch): batch for batch in batches}
    kinds = [max(batches, key=padded_tokens), min(batches, key=padded_tokens), *by_size.values()]

    def run_kinds():
        for batch in kinds:
            run_batch(batch)

    return max(0.0, seconds_of(run_kinds) - seconds_of(run_kinds))


def blas():
    """The BLAS of PyTorch's float32 products on a CPU (MKL in its x86 wheels)."""
    return "MKL" if torch.backends.mkl.is_available() else "its BLAS"


def encoder_product_rates(model, bfloat16):
    """{library: FLOP/s} of the model's Linear layers' three training products (forward and both
    gradients) on 1,024 tokens: PyTorch's in float32 and, with `bfloat16`, under CPU autocast."""
    linears = [layer for layer in model.modules() if isinstance(layer, torch.nn.Linear)]
    shapes = Counter((layer.in_features, layer.out_features) for layer in linears)
    rates = {f"PyTorch {torch.__version__} float32": product_rate(shapes, nullcontext)}
    if bfloat16:
        rates[f"PyTorch {torch.__version__} bfloat16 (autocast)"] = product_rate(
            shapes, lambda: torch.autocast("cpu", dtype=torch.bfloat16)
        )
    return rates


def product_rate(shapes, context, tokens=PRODUCT_MEASUREMENT_TOKENS, repeats=3):
    """One library's rate on the model's Linear shapes, each shape's fastest of three after one untimed
    (matmul_path.product_rates's count; one library at a time), in PyTorch (this process imports no Paddle)."""
    seconds = flops = 0.0
    for (inputs, outputs), count in shapes.items():
        operands = torch.randn(tokens, inputs), torch.randn(outputs, inputs), torch.randn(tokens, outputs)
        products = partial(linear_products, context, *operands)
        products()
        seconds += count * min(seconds_of(products) for _ in range(repeats))
        flops += count * 3 * 2 * tokens * inputs * outputs
    return flops / seconds


def linear_products(context, x, weight, gradient):
    with context():
        return torch.nn.functional.linear(x, weight), gradient @ weight, gradient.t() @ x
