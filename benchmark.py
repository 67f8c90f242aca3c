"""Training and evaluation speed: the project's defaults against an upstream-style loop, in one run.

    python benchmark.py --xnli_dir ../shared/xnli                  # ernie-m-base shape, random weights
    python benchmark.py --xnli_dir ../shared/xnli --model large    # or a local checkpoint directory

upstream-style: random training batches padded to their longest input; evaluation re-tokenizes all
15 test sets at every evaluation and runs them through the dynamic graph in file order with the
training batch size. project: the same random batches, each packed (--packing, the default);
evaluation on features tokenized once (the cache load is timed), sorted by length, with
--eval_batch_size, through Paddle Inference with oneDNN on a CPU (--eval_backend inference, the
default there: the static-graph export and predictor creation are timed). Both run on the same CPU
threads with denormals flushed: the headline compares the code, not the machine settings. A third
setting, upstream-cpu-defaults, runs the upstream-style loop on Paddle's CPU defaults (one thread,
denormals kept), to show separately what --cpu_threads and --flush_denormals add.

Text lengths come from the real XNLI files (English training pairs, all 75,150 test pairs) under a
sentencepiece tokenizer trained on XNLI text. A CPU cannot run whole epochs or the whole test set
in a benchmark, so each setting forms its batches exactly as it would for the real run, times a
sample of them spread evenly over their computed sizes, and scales its computed tokens per second
up to the epoch or the test set (computed tokens, padding included, are counted exactly). Each
setting runs in its own process, so its peak memory is its own. Model FLOP/s count 6 (training) or
2 (evaluation) x non-embedding parameters x computed tokens, against a float32 matmul peak
measured on all the cores the machine lends this script.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial

import numpy as np
import paddle
import paddle.nn.functional as F
from paddlenlp.transformers import AutoTokenizer, ErnieMConfig, ErnieMForSequenceClassification

from ernie_m_xnli.data.batching import ShardedBatchSampler, eval_batches, pad_batch, padded_inputs
from ernie_m_xnli.data.encoding import PairEncoder, encode_pairs
from ernie_m_xnli.data.feature_cache import load_features, save_features
from ernie_m_xnli.data.packing import packed_inputs, packed_rows
from ernie_m_xnli.data.synthetic import build_tokenizer
from ernie_m_xnli.data.xnli_files import read_eval_split, read_train_split, xnli_file_paths
from ernie_m_xnli.models.inference import create_predictor, predictor_logits, save_static_graph
from ernie_m_xnli.models.packed import PackedClassifier
from ernie_m_xnli.setup.arguments import HelpFormatter
from ernie_m_xnli.training.optimization import create_optimizer, linear_schedule
from utils import (
    XNLI_LANGUAGES,
    available_cpu_cores,
    cpu_cores_per_process,
    flush_denormals,
    set_cpu_threads,
    str2bool,
    threads_per_process,
)

SHAPES = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
}
UPSTREAM, PROJECT, CPU_DEFAULTS = "upstream-style", "project", "upstream-cpu-defaults"
SETTINGS = (UPSTREAM, PROJECT, CPU_DEFAULTS)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--xnli_dir", default=os.environ.get("XNLI_DIR", "../shared/xnli"), help="XNLI files.")
    parser.add_argument("--model", default="base", help="base or large (random weights), or a checkpoint directory.")
    parser.add_argument("--device", default="gpu" if paddle.is_compiled_with_cuda() else "cpu")
    parser.add_argument("--batch_size", type=int, default=16, help="Training batch size (upstream's).")
    parser.add_argument("--eval_batch_size", type=int, default=64, help="The project's evaluation batch size.")
    parser.add_argument("--max_seq_length", type=int, default=256)
    parser.add_argument(
        "--cpu_threads",
        type=int,
        default=0,
        help=f"CPU threads of {UPSTREAM} and {PROJECT} (as run_classifier.py's); 0: the available cores.",
    )
    parser.add_argument(
        "--flush_denormals",
        type=str2bool,
        default=True,
        help=f"Flush denormal numbers to zero on CPU in {UPSTREAM} and {PROJECT} (true/false), as run_classifier.py "
        "does by default.",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="With --setting: also print Paddle's operator profile of one training step and one "
        "evaluation batch of median size.",
    )
    parser.add_argument(
        "--train_pairs", type=int, default=32768, help="English training pairs the epoch's batches are formed from."
    )
    parser.add_argument(
        "--test_pairs",
        type=int,
        default=5010,
        help="Test pairs per language the evaluation is formed from (5,010: all); fewer for a quick look.",
    )
    parser.add_argument("--train_steps", type=int, default=8, help="Timed training steps (after one untimed).")
    parser.add_argument("--eval_batches", type=int, default=24, help="Timed evaluation batches per setting.")
    parser.add_argument("--tokenizer_vocab", type=int, default=32000, help="Sentencepiece vocabulary to train.")
    parser.add_argument(
        "--setting",
        choices=("all", *SETTINGS),
        default="all",
        help=f"Run one setting only (each runs in its own process by default; {CPU_DEFAULTS} only on a CPU).",
    )
    parser.add_argument("--work_dir", default=None, help="Where the tokenizer and features go (default: temporary).")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.setting != "all":
        print(json.dumps(measure(args)), flush=True)
        return
    args.work_dir = args.work_dir or tempfile.mkdtemp(prefix="ernie-m-benchmark-")
    os.makedirs(args.work_dir, exist_ok=True)
    prepare_tokenizer(args)
    rows = []
    for setting in SETTINGS if args.device == "cpu" else SETTINGS[:2]:
        command = [
            sys.executable,
            os.path.abspath(__file__),
            *sys.argv[1:],
            "--setting",
            setting,
            "--work_dir",
            args.work_dir,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"benchmark.py: the {setting} run failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    paddle.set_device(args.device)
    if args.device == "cpu":
        set_cpu_threads(available_cpu_cores())
    peak = matmul_peak_flops()
    for row in rows:
        row["train_mfu"] = 6 * row["non_embedding_parameters"] * row["train_computed_tokens_per_s"] / peak
        row["eval_mfu"] = 2 * row["non_embedding_parameters"] * row["eval_computed_tokens_per_s"] / peak
    print(f"command: python benchmark.py {' '.join(sys.argv[1:])}")
    print(format_table(rows, peak, args.device))


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
    cpu_defaults = args.setting == CPU_DEFAULTS
    num_threads = 1 if cpu_defaults else threads_per_process(args.cpu_threads)
    flushed = args.flush_denormals and not cpu_defaults
    if args.device == "cpu":
        if flushed:
            flush_denormals()
        set_cpu_threads(num_threads)
    paddle.seed(0)
    tokenizer = AutoTokenizer.from_pretrained(
        args.model if os.path.isdir(args.model) else os.path.join(args.work_dir, "tokenizer")
    )
    if os.path.isdir(args.model):
        model = ErnieMForSequenceClassification.from_pretrained(args.model, num_labels=3)
    else:
        config = ErnieMConfig(vocab_size=250002, pad_token_id=1, num_labels=3, **SHAPES[args.model])
        model = ErnieMForSequenceClassification(config)
    paths = xnli_file_paths(args.xnli_dir, ["en"])
    train_pairs = read_train_split(paths["train"]).pairs_by_language["en"][: args.train_pairs]
    test_pairs = {
        lang: pairs[: args.test_pairs] for lang, pairs in read_eval_split(paths["test"]).pairs_by_language.items()
    }
    project = args.setting == PROJECT
    train = measure_training(args, model, tokenizer, train_pairs, packing=project)
    if project:
        evaluate = measure_project_evaluation(args, model, tokenizer, test_pairs, num_threads)
    else:
        evaluate = measure_upstream_evaluation(args, model, tokenizer, test_pairs)
    return {
        "setting": args.setting,
        "cpu_threads": num_threads,
        "denormals": "flushed" if flushed else "kept",
        **train,
        **evaluate,
        "non_embedding_parameters": sum(p.size for name, p in model.named_parameters() if "embeddings" not in name),
        "peak_memory_mb": peak_memory_mb(args.device),
    }


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


def computed_tokens_per_second(run_batch, sample, computed_tokens, profile=False):
    """Computed tokens per second of `run_batch` over `sample`, after one untimed batch; with
    `profile`, then Paddle's operator summary of the median batch."""
    run_batch(sample[0])
    started = time.perf_counter()
    for batch in sample:
        run_batch(batch)
    rate = sum(map(computed_tokens, sample)) / (time.perf_counter() - started)
    if profile:
        profiler = paddle.profiler.Profiler(
            targets=[
                paddle.profiler.ProfilerTarget.CPU,
                *([paddle.profiler.ProfilerTarget.GPU] if paddle.is_compiled_with_cuda() else []),
            ],
            on_trace_ready=lambda _: None,
        )  # the summary only, no trace files
        with profiler:
            run_batch(sample[len(sample) // 2])
        profiler.summary(
            sorted_by=paddle.profiler.SortedKeys.CPUTotal,
            op_detail=False,
            time_unit="ms",
            views=[paddle.profiler.SummaryView.ModelView, paddle.profiler.SummaryView.OperatorView],
        )
    return rate


def measure_training(args, model, tokenizer, pairs, packing):
    """Both settings draw upstream's random batches; the project packs each of them."""
    features = encode_pairs(tokenizer, pairs, args.max_seq_length, 0)
    sampler = ShardedBatchSampler(len(features), args.batch_size, seed=42)
    epoch = [[features.input_ids[i] for i in indices] for indices in sampler]
    if packing:
        model_inputs = partial(packed_inputs, max_length=args.max_seq_length)
        computed_tokens = partial(packed_tokens, max_length=args.max_seq_length)
    else:
        model_inputs, computed_tokens = padded_inputs, padded_tokens
    training_model = PackedClassifier(model) if packing else model
    optimizer = create_optimizer(model, linear_schedule(5e-5, 10000, 0.1), 0.8, 0.0, 1e-8)
    model.train()

    def training_step(batch):
        inputs = {name: paddle.to_tensor(value) for name, value in model_inputs(batch, tokenizer.pad_token_id).items()}
        logits = training_model(**inputs)
        F.cross_entropy(logits, paddle.zeros([len(batch)], dtype="int64")).backward()
        optimizer.step()
        optimizer.clear_grad()
        float(logits.sum())  # wait for the device

    sample = spread_sample(epoch, args.train_steps, computed_tokens)
    rate = computed_tokens_per_second(training_step, sample, computed_tokens, args.profile)
    computed, real = sum(map(computed_tokens, epoch)), real_tokens(epoch)
    epoch_seconds = computed / rate
    return {
        "train_examples_per_s": len(features) / epoch_seconds,
        "train_tokens_per_s": real / epoch_seconds,
        "train_computed_tokens_per_s": rate,
        "train_computed_per_real": computed / real,
    }


def measure_upstream_evaluation(args, model, tokenizer, test_pairs):
    started = time.perf_counter()
    features = {lang: encode_pairs(tokenizer, pairs, args.max_seq_length, 0) for lang, pairs in test_pairs.items()}
    tokenize_seconds = time.perf_counter() - started
    batches = [
        features[lang].input_ids[start : start + args.batch_size]
        for lang in XNLI_LANGUAGES
        for start in range(0, len(features[lang]), args.batch_size)
    ]
    return evaluation_row(
        args, dynamic_predict(model, tokenizer), batches, {"eval_tokenizing_seconds": tokenize_seconds}
    )


def measure_project_evaluation(args, model, tokenizer, test_pairs, num_threads):
    """Cached features sorted by length; on a CPU through Paddle Inference, whose export of the
    current weights and predictor creation (done at every evaluation) are timed."""
    cache_file = os.path.join(args.work_dir, "test-features.npz")
    if not os.path.isfile(cache_file):
        with PairEncoder(tokenizer, args.max_seq_length, 0, cpu_cores_per_process()) as encoder:
            save_features(cache_file, {lang: encoder.encode(pairs) for lang, pairs in test_pairs.items()}, 0)
    started = time.perf_counter()
    features, _ = load_features(cache_file)
    seconds = {"eval_tokenizing_seconds": time.perf_counter() - started}
    batches = [
        [features[lang].input_ids[i] for i in indices]
        for lang in XNLI_LANGUAGES
        for indices in eval_batches(features[lang], args.eval_batch_size)
    ]
    if args.device != "cpu":
        return evaluation_row(args, dynamic_predict(model, tokenizer), batches, seconds)
    model.eval()
    with tempfile.TemporaryDirectory(prefix="ernie-m-benchmark-export-") as directory:
        started = time.perf_counter()
        save_static_graph(model, os.path.join(directory, "model"))
        seconds["eval_export_seconds"] = time.perf_counter() - started
        predictor = create_predictor(os.path.join(directory, "model"), num_threads)
        seconds["eval_predictor_seconds"] = time.perf_counter() - started - seconds["eval_export_seconds"]

    def predict(batch):
        predictor_logits(predictor, *pad_batch(batch, tokenizer.pad_token_id))

    return evaluation_row(args, predict, batches, seconds)


def dynamic_predict(model, tokenizer):
    """The dynamic graph's logits of a batch, in eval mode."""
    model.eval()

    @paddle.no_grad()
    def predict(batch):
        inputs = padded_inputs(batch, tokenizer.pad_token_id)
        model(**{name: paddle.to_tensor(value) for name, value in inputs.items()}).numpy()

    return predict


def evaluation_row(args, predict, batches, seconds):
    """The whole test evaluation's time: the `seconds` of preparing it plus the model on every
    batch, from the computed-token rate of a sample of the batches."""
    sample = spread_sample(batches, args.eval_batches, padded_tokens)
    rate = computed_tokens_per_second(predict, sample, padded_tokens, args.profile)
    computed, real = sum(map(padded_tokens, batches)), real_tokens(batches)
    seconds = {"eval_tokenizing_seconds": 0.0, "eval_export_seconds": 0.0, "eval_predictor_seconds": 0.0, **seconds}
    return {
        "eval_seconds": sum(seconds.values()) + computed / rate,
        **seconds,
        "eval_computed_tokens_per_s": rate,
        "eval_computed_per_real": computed / real,
    }


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


COLUMNS = [
    ("CPU threads", "cpu_threads", "{}"),
    ("denormals", "denormals", "{}"),
    ("training examples/s", "train_examples_per_s", "{:.2f}"),
    ("training tokens/s", "train_tokens_per_s", "{:.0f}"),
    ("training computed/real tokens", "train_computed_per_real", "{:.2f}"),
    ("test evaluation s", "eval_seconds", "{:.0f}"),
    ("of which tokenizing/loading s", "eval_tokenizing_seconds", "{:.1f}"),
    ("of which export + predictor s", "eval_export_and_predictor_seconds", "{:.1f}"),
    ("evaluation computed/real tokens", "eval_computed_per_real", "{:.2f}"),
    ("peak memory MB", "peak_memory_mb", "{:.0f}"),
    ("training MFU", "train_mfu", "{:.0%}"),
    ("evaluation MFU", "eval_mfu", "{:.0%}"),
]


def ratio_row(name, faster, slower):
    """A table row of how many times `faster` trains and evaluates as fast as `slower`."""
    ratios = {
        "train_examples_per_s": f"{faster['train_examples_per_s'] / slower['train_examples_per_s']:.2f}x",
        "eval_seconds": f"{slower['eval_seconds'] / faster['eval_seconds']:.2f}x faster",
    }
    return f"| {name} | " + " | ".join(ratios.get(key, "") for _, key, _ in COLUMNS) + " |"


def cpu_model():
    """The CPU's name as /proc/cpuinfo gives it (the same code runs at very different speeds on
    Intel and AMD CPUs: MKL's matmul is much slower on AMD ones)."""
    try:
        with open("/proc/cpuinfo") as file:
            return next(line.split(":", 1)[1].strip() for line in file if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "an unknown CPU"


def format_table(rows, peak, device):
    by_setting = {row["setting"]: row for row in rows}
    lines = ["| setting | " + " | ".join(name for name, _, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for row in rows:
        row["eval_export_and_predictor_seconds"] = row["eval_export_seconds"] + row["eval_predictor_seconds"]
        lines.append(f"| {row['setting']} | " + " | ".join(form.format(row[key]) for _, key, form in COLUMNS) + " |")
    lines.append(ratio_row(f"{PROJECT} / {UPSTREAM} (equal settings)", by_setting[PROJECT], by_setting[UPSTREAM]))
    if CPU_DEFAULTS in by_setting:
        lines.append(ratio_row(f"{UPSTREAM} / {CPU_DEFAULTS}", by_setting[UPSTREAM], by_setting[CPU_DEFAULTS]))
    lines.append(
        f"\nmatmul peak: {peak / 1e9:.1f} GFLOP/s (Paddle's float32 2048x2048 matmul"
        f"{f', {available_cpu_cores()} threads on {cpu_model()}' if device == 'cpu' else ''})"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
