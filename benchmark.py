"""Training and evaluation speed: an upstream-style loop against this project's defaults, in one run.

    python benchmark.py --xnli_dir ../shared/xnli                  # ernie-m-base shape, random weights
    python benchmark.py --xnli_dir ../shared/xnli --model large    # or a local checkpoint directory

upstream-style: random training batches padded to their longest input; evaluation re-tokenizes
each language's test pairs at every evaluation and runs them in file order with the training batch
size. project: training batches grouped by length (--group_by_length), evaluation on features
tokenized once (the cache load is timed), sorted by length, with --eval_batch_size.
Text lengths come from the real XNLI files (English training pairs, the test pairs of all 15
languages) under a sentencepiece tokenizer trained on XNLI text. Each setting runs in its own
process, so its peak memory is its own. Model FLOP/s count 6 (training) or 2 (evaluation) x
non-embedding parameters x computed tokens (padding included), against a float32 matmul peak
measured by the same script.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
import paddle
import paddle.nn.functional as F
from paddlenlp.transformers import AutoTokenizer, ErnieMConfig, ErnieMForSequenceClassification

from data import (
    ShardedBatchSampler,
    collate_training_batch,
    encode_pairs,
    pad_batch,
    read_eval_split,
    read_train_split,
    xnli_file_paths,
)
from evaluation import predict_logits
from feature_cache import load_features, save_features
from run_classifier import HelpFormatter
from synthetic import build_tokenizer
from utils import XNLI_LANGUAGES

SHAPES = {"base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
          "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16)}
SETTINGS = ("upstream-style", "project")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--xnli_dir", default=os.environ.get("XNLI_DIR", "../shared/xnli"), help="XNLI files.")
    parser.add_argument("--model", default="base", help="base or large (random weights), or a checkpoint directory.")
    parser.add_argument("--device", default="gpu" if paddle.is_compiled_with_cuda() else "cpu")
    parser.add_argument("--batch_size", type=int, default=16, help="Training batch size (upstream's).")
    parser.add_argument("--eval_batch_size", type=int, default=64, help="The project's evaluation batch size.")
    parser.add_argument("--max_seq_length", type=int, default=256)
    parser.add_argument("--train_steps", type=int, default=4, help="Timed training steps (after one untimed).")
    parser.add_argument("--eval_pairs", type=int, default=64,
                        help="Test pairs per language to evaluate; 0 for all 5,010 (hours on a CPU).")
    parser.add_argument("--tokenizer_vocab", type=int, default=32000, help="Sentencepiece vocabulary to train.")
    parser.add_argument("--setting", choices=("both", *SETTINGS), default="both",
                        help="Run one setting only (each runs in its own process by default).")
    parser.add_argument("--work_dir", default=None, help="Where the tokenizer and features go (default: temporary).")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.setting != "both":
        print(json.dumps(measure(args)), flush=True)
        return
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="ernie-m-benchmark-")
    prepare_tokenizer(args)
    rows = []
    for setting in SETTINGS:
        command = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--setting", setting,
                   "--work_dir", args.work_dir]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"benchmark.py: the {setting} run failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"command: python benchmark.py {' '.join(sys.argv[1:])}")
    print(format_table(rows))


def prepare_tokenizer(args):
    if os.path.isdir(args.model):
        return
    dev = read_eval_split(xnli_file_paths(args.xnli_dir, [])["dev"]).pairs_by_language
    text_file = os.path.join(args.work_dir, "xnli-text.txt")
    with open(text_file, "w", encoding="utf-8") as file:
        file.write("\n".join(text for lang in XNLI_LANGUAGES for pair in dev[lang] for text in pair[:2]))
    build_tokenizer(os.path.join(args.work_dir, "tokenizer"), text_file, args.tokenizer_vocab)


def measure(args):
    paddle.set_device(args.device)
    paddle.seed(0)
    tokenizer = AutoTokenizer.from_pretrained(args.model if os.path.isdir(args.model) else
                                              os.path.join(args.work_dir, "tokenizer"))
    if os.path.isdir(args.model):
        model = ErnieMForSequenceClassification.from_pretrained(args.model, num_labels=3)
    else:
        config = ErnieMConfig(vocab_size=250002, pad_token_id=1, num_labels=3, **SHAPES[args.model])
        model = ErnieMForSequenceClassification(config)
    paths = xnli_file_paths(args.xnli_dir, ["en"])
    train_pairs = read_train_split(paths["train"]).pairs_by_language["en"]
    test_pairs = {lang: pairs[: args.eval_pairs or None]
                  for lang, pairs in read_eval_split(paths["test"]).pairs_by_language.items()}
    upstream = args.setting == "upstream-style"
    train = measure_training(args, model, tokenizer, train_pairs, group_by_length=not upstream)
    evaluate = (measure_upstream_evaluation if upstream else measure_project_evaluation)(args, model, tokenizer,
                                                                                          test_pairs)
    non_embedding = sum(p.size for name, p in model.named_parameters() if "embeddings" not in name)
    peak = matmul_peak_flops()
    return {
        "setting": args.setting, **train, **evaluate,
        "train_mfu": 6 * non_embedding * train["train_computed_tokens_per_s"] / peak,
        "eval_mfu": 2 * non_embedding * evaluate["eval_computed_tokens_per_s"] / peak,
        "matmul_peak_gflops": peak / 1e9, "peak_memory_mb": peak_memory_mb(args.device),
    }


def measure_training(args, model, tokenizer, pairs, group_by_length):
    features = encode_pairs(tokenizer, pairs, args.max_seq_length, 0)
    lengths = features.lengths()
    sampler = ShardedBatchSampler(len(features), args.batch_size, seed=42, lengths=lengths if group_by_length else None)
    optimizer = paddle.optimizer.AdamW(learning_rate=5e-5, parameters=model.parameters())
    model.train()
    batches = iter(sampler)
    examples = real_tokens = computed_tokens = 0
    for step in range(args.train_steps + 1):
        indices = next(batches)
        input_ids, attention_mask, labels = collate_training_batch([features[i] for i in indices], tokenizer.pad_token_id)
        if step == 1:
            started = time.perf_counter()
        logits = model(paddle.to_tensor(input_ids), attention_mask=paddle.to_tensor(attention_mask))
        F.cross_entropy(logits, paddle.to_tensor(labels)).backward()
        optimizer.step()
        optimizer.clear_grad()
        if step >= 1:
            examples, real_tokens = examples + len(indices), real_tokens + int(attention_mask.sum())
            computed_tokens += input_ids.size
    float(logits.sum())  # wait for the device
    elapsed = time.perf_counter() - started
    return {"train_examples_per_s": examples / elapsed, "train_tokens_per_s": real_tokens / elapsed,
            "train_computed_tokens_per_s": computed_tokens / elapsed, "train_padding": computed_tokens / real_tokens}


@paddle.no_grad()
def measure_upstream_evaluation(args, model, tokenizer, test_pairs):
    model.eval()
    started, computed_tokens = time.perf_counter(), 0
    for pairs in test_pairs.values():
        features = encode_pairs(tokenizer, pairs, args.max_seq_length, 0)
        for start in range(0, len(features), args.batch_size):
            input_ids, attention_mask = pad_batch(features.input_ids[start : start + args.batch_size],
                                                  tokenizer.pad_token_id)
            model(paddle.to_tensor(input_ids), attention_mask=paddle.to_tensor(attention_mask)).numpy()
            computed_tokens += input_ids.size
    elapsed = time.perf_counter() - started
    return {"eval_seconds": elapsed, "eval_computed_tokens_per_s": computed_tokens / elapsed}


def measure_project_evaluation(args, model, tokenizer, test_pairs):
    cache_file = os.path.join(args.work_dir, "test-features.npz")
    save_features(cache_file, {lang: encode_pairs(tokenizer, pairs, args.max_seq_length, 0)
                               for lang, pairs in test_pairs.items()}, 0)
    started, computed_tokens = time.perf_counter(), 0
    features_by_language, _ = load_features(cache_file)
    for features in features_by_language.values():
        predict_logits(model, features, args.eval_batch_size, tokenizer.pad_token_id, use_amp=False)
        lengths = features.lengths()[np.argsort(features.lengths(), kind="stable")]
        computed_tokens += sum(len(batch) * batch.max() for batch in np.split(
            lengths, range(args.eval_batch_size, len(lengths), args.eval_batch_size)))
    elapsed = time.perf_counter() - started
    return {"eval_seconds": elapsed, "eval_computed_tokens_per_s": computed_tokens / elapsed}


def matmul_peak_flops(size=2048, repeats=10):
    a, b = paddle.randn([size, size]), paddle.randn([size, size])
    float(paddle.matmul(a, b).sum())
    started = time.perf_counter()
    for _ in range(repeats):
        c = paddle.matmul(a, b)
    float(c.sum())
    return 2 * size**3 * repeats / (time.perf_counter() - started)


def peak_memory_mb(device):
    if device == "gpu":
        return paddle.device.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def format_table(rows):
    upstream, project = rows
    columns = [
        ("training examples/s", "train_examples_per_s", "{:.2f}"),
        ("training tokens/s", "train_tokens_per_s", "{:.0f}"),
        ("computed/real tokens", "train_padding", "{:.2f}"),
        ("test evaluation s", "eval_seconds", "{:.1f}"),
        ("peak memory MB", "peak_memory_mb", "{:.0f}"),
        ("training MFU", "train_mfu", "{:.0%}"),
        ("evaluation MFU", "eval_mfu", "{:.0%}"),
    ]
    lines = ["| setting | " + " | ".join(name for name, _, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        lines.append(f"| {row['setting']} | " + " | ".join(form.format(row[key]) for _, key, form in columns) + " |")
    lines.append(f"| project / upstream | {project['train_examples_per_s'] / upstream['train_examples_per_s']:.2f}x"
                 f" | | | {upstream['eval_seconds'] / project['eval_seconds']:.2f}x faster | | | |")
    lines.append(f"\nmatmul peak: {upstream['matmul_peak_gflops']:.1f} GFLOP/s (float32, 2048x2048)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
