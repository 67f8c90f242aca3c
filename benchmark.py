"""Training and evaluation speed: the project's defaults against transformers on PyTorch and an
upstream-style loop, side by side in one run on the same CPU threads.

    python benchmark.py --xnli_dir ../shared/xnli                  # ernie-m-base shape, random weights
    python benchmark.py --xnli_dir ../shared/xnli --model large    # or a local checkpoint directory
    python benchmark.py --xnli_dir ../shared/xnli --transformers_python ~/hf-venv/bin/python

project: run_classifier.py's defaults. Upstream's random training batches, each packed (--packing);
evaluation on features tokenized once (the cache load is timed), sorted by length, with
--eval_batch_size, through Paddle Inference with oneDNN on a CPU (the static-graph export and the
predictor's creation are timed); MKL's AVX2 path on AMD CPUs; denormals flushed.
transformers: transformers' ErnieMForSequenceClassification on PyTorch, the same shape, trained
and evaluated the way run_xnli.py's Trainer does (benchmarks/transformers_peer.py) on the same token
ids; it runs under --transformers_python, a Python with torch and transformers (default: this one;
without them the setting is left out, saying why).
upstream-style: the same random batches padded to their longest input; evaluation re-tokenizes all
15 test sets at every evaluation and runs them through the dynamic graph in file order with the
training batch size; on the project's machine settings, so that the row compares the code.
upstream-cpu-defaults: the upstream-style loop on Paddle's CPU defaults (one thread, denormals kept,
MKL's default path), to show apart what the machine settings add.
project-bf16 and transformers-bf16: the project with --use_amp --amp_dtype bfloat16 (the encoder's
products through oneDNN in training, Paddle Inference's oneDNN bfloat16 in evaluation) and
transformers with Trainer's --bf16 (torch.autocast on the CPU), on CPUs with AVX512-BF16 only.
transformers-compile and transformers-bf16-compile: the two with Trainer's --torch_compile (inductor;
the time compiling takes is printed under the table and left out of their times). The last ratio row
sets the project's fastest setting against transformers' fastest, in training and evaluation apart.

Text lengths come from the real XNLI files (English training pairs, all 75,150 test pairs) under a
sentencepiece tokenizer trained on XNLI text. A CPU cannot run whole epochs or the whole test set
in a benchmark, so each setting forms its batches exactly as it would for the real run, times a
sample of them spread evenly over their computed sizes, and scales its computed tokens per second
up to the epoch or the test set (computed tokens, padding included, are counted exactly). Each
setting runs in its own process, so its peak memory is its own. Model FLOP/s count 6 (training) or
2 (evaluation) x non-embedding parameters x computed tokens, against the fastest 2048 x 2048 matmul
of the row's type measured on the same threads: in float32 Paddle's (MKL), Paddle Inference's
(oneDNN), numpy's and PyTorch's (when the peer runs); in bfloat16 oneDNN's, Paddle Inference's and
PyTorch's. Each row names the library of its products; a line under the table gives each library's
rate on the model's own Linear shapes, and the CPU's model and instruction sets head the output.

    python benchmark.py --settings project project-bf16 transformers transformers-bf16 \
        --transformers_python ~/hf-venv/bin/python      # the bfloat16 comparison alone
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

import numpy as np

from benchmarks.common import (
    BFLOAT16_SETTINGS,
    COMPILED_SETTINGS,
    CPU_DEFAULTS,
    PEER_BATCHES_FILE,
    PEER_SETTINGS,
    PROJECT,
    PROJECT_BF16,
    PROJECT_SETTINGS,
    SETTINGS,
    SHAPES,
    TRANSFORMERS,
    TRANSFORMERS_BF16,
    TRANSFORMERS_BF16_COMPILE,
    TRANSFORMERS_COMPILE,
    UPSTREAM,
    matmul_flops,
    python_problem,
)
from ernie_m_xnli.data.xnli_files import XnliDataError, xnli_file_paths
from ernie_m_xnli.models.hf_checkpoints import is_hf_layout, read_config
from ernie_m_xnli.setup.arguments import HelpFormatter, OneLineErrorParser
from utils import (
    CPU_MATMUL_CHOICES,
    PRODUCT_MEASUREMENT_TOKENS,
    InputError,
    describe_cpu,
    has_bfloat16_instructions,
    str2bool,
    threads_per_process,
    use_mkl_fast_path_on_amd,
)

PEER_PACKAGES = ("torch", "transformers")


def parse_args(argv=None):
    parser = OneLineErrorParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--xnli_dir", default=os.environ.get("XNLI_DIR", "../shared/xnli"), help="XNLI files.")
    parser.add_argument(
        "--model",
        type=benchmark_model,
        default="base",
        help="base or large (random weights), or a PaddleNLP ERNIE-M checkpoint directory.",
    )
    parser.add_argument("--device", default=None, help="cpu or gpu; default: gpu with a CUDA build of Paddle.")
    parser.add_argument("--batch_size", type=int, default=16, help="Training batch size (upstream's).")
    parser.add_argument("--eval_batch_size", type=int, default=64, help="The project's evaluation batch size.")
    parser.add_argument("--max_seq_length", type=int, default=256)
    parser.add_argument(
        "--cpu_threads", type=int, default=0, help="CPU threads of every setting but upstream-cpu-defaults; 0: all."
    )
    parser.add_argument(
        "--flush_denormals",
        type=str2bool,
        default=True,
        help=f"Flush denormal numbers to zero on CPU in {UPSTREAM} and {PROJECT} (true/false), as run_classifier.py "
        "does by default.",
    )
    parser.add_argument(
        "--mkl_fast_path_on_amd",
        type=str2bool,
        default=True,
        help=f"MKL's AVX2 path on an AMD CPU in {UPSTREAM} and {PROJECT} (true/false), as run_classifier.py's default.",
    )
    parser.add_argument(
        "--cpu_matmul",
        choices=CPU_MATMUL_CHOICES,
        default="auto",
        help=f"The float32 products of {PROJECT} on a CPU, as run_classifier.py's --cpu_matmul: auto measures MKL "
        "and oneDNN on the model's shapes (anew in --work_dir) and takes the faster.",
    )
    parser.add_argument(
        "--transformers_python",
        default=sys.executable,
        help="The Python interpreter that runs the transformers setting (it needs torch and transformers).",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="With --setting: also print the operator profile of one training step and one evaluation batch of "
        "median size (Paddle's, or PyTorch's for the transformers setting).",
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
        help=f"Run one setting only (each runs in its own process by default; {CPU_DEFAULTS} only on a CPU; "
        f"{TRANSFORMERS} needs --work_dir with the batches a whole run writes there).",
    )
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=SETTINGS,
        default=SETTINGS,
        help="The settings to compare (default: all that this machine runs).",
    )
    parser.add_argument(
        "--work_dir",
        default=None,
        help="Where the tokenizer and features go, kept for the next run (default: a temporary folder, removed after).",
    )
    args = parser.parse_args(argv)
    problem = find_invalid_argument(args)
    if problem:
        parser.error(problem)
    if args.setting in PEER_SETTINGS and not os.path.isfile(os.path.join(args.work_dir or "", PEER_BATCHES_FILE)):
        parser.error(
            f"--setting {args.setting} reads the token ids a whole run writes ({PEER_BATCHES_FILE}), and --work_dir "
            f"{args.work_dir} has none: run benchmark.py with --settings {args.setting} --work_dir DIR once first"
        )
    return args


def find_invalid_argument(args):
    """A one-line description of the first invalid argument, or None."""
    counts = ("batch_size", "eval_batch_size", "max_seq_length", "train_pairs", "test_pairs", "train_steps")
    for name in (*counts, "eval_batches", "tokenizer_vocab"):
        if getattr(args, name) < 1:
            return f"--{name} must be at least 1, got {getattr(args, name)}"
    if args.cpu_threads < 0:
        return f"--cpu_threads must be 0 (all the cores) or more, got {args.cpu_threads}"
    if args.work_dir and os.path.isfile(args.work_dir):
        return f"--work_dir {args.work_dir}: a file, not a directory"
    try:
        xnli_file_paths(args.xnli_dir, ["en"])
    except XnliDataError as error:
        return f"--xnli_dir {error}"
    return None


def benchmark_model(value):
    """--model: a named ERNIE-M shape, or a directory of PaddleNLP's ERNIE-M (the shape the peer builds)."""
    if value in SHAPES:
        return value
    if not os.path.isdir(value):
        raise argparse.ArgumentTypeError(f"{value!r}: expected {' or '.join(SHAPES)}, or a checkpoint directory")
    try:
        config = read_config(value)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if config is None or config.get("model_type", "ernie_m") != "ernie_m" or is_hf_layout(config):
        kind = "no config.json" if config is None else f"config.json of {config.get('model_type')!r}"
        kind += " in Hugging Face's layout" if config and is_hf_layout(config) else ""
        raise argparse.ArgumentTypeError(
            f"{value}: {kind}; the benchmark compares ERNIE-M as PaddleNLP saves it (or --model base or large)"
        )
    return value


def main(argv=None):
    args = parse_args(argv)
    if args.setting != "all":
        print(json.dumps(measure_setting(args)), flush=True)
        return
    # The driver is on Paddle's side: it trains the tokenizer and writes the peer's token ids.
    from benchmarks import paddle_settings

    args.device = args.device or paddle_settings.default_device()
    notes = []
    settings = settings_to_run(args, notes)
    if not settings:
        print(f"benchmark.py: error: no setting asked for runs here: {'; '.join(notes)}", file=sys.stderr)
        sys.exit(2)
    with paddle_settings.work_dir(args):
        paddle_settings.prepare_tokenizer(args)
        if any(setting in PEER_SETTINGS for setting in settings):
            paddle_settings.write_peer_batches(args, os.path.join(args.work_dir, PEER_BATCHES_FILE))
        rows = [run_setting(args, setting) for setting in settings]
    # After the settings: the peaks run on the project's machine settings, which the children choose themselves.
    num_threads = threads_per_process(args.cpu_threads)
    use_mkl_fast_path_on_amd(args.mkl_fast_path_on_amd)
    peaks = paddle_settings.matmul_peaks(args.device, num_threads, bfloat16=has_bfloat16(args))
    peaks[f"numpy {np.__version__} matmul"] = numpy_matmul_flops()
    for row in rows:
        peaks.update(row.pop("matmul_peaks", {}))
    peak_names = {
        dtype: max((name for name in peaks if is_bfloat16(name) == (dtype == "bfloat16")), key=peaks.get, default=None)
        for dtype in ("float32", "bfloat16")
    }
    for row in rows:
        peak = peaks[peak_names["bfloat16" if row["setting"] in BFLOAT16_SETTINGS else "float32"]]
        row["train_mfu"] = 6 * row["non_embedding_parameters"] * row["train_computed_tokens_per_s"] / peak
        row["eval_mfu"] = 2 * row["non_embedding_parameters"] * row["eval_computed_tokens_per_s"] / peak
    print(f"command: python benchmark.py {' '.join(sys.argv[1:])}")
    print(f"CPU: {describe_cpu()}" if args.device == "cpu" else f"device: {args.device}")
    print(format_table(rows, peaks, peak_names, num_threads, args.device))
    for note in notes:
        print(note)


def measure_setting(args):
    """One setting's row, measured in this process: the peer imports PyTorch, the others Paddle, never both."""
    if args.setting in PEER_SETTINGS:
        from benchmarks import transformers_peer

        return transformers_peer.measure(args)
    from benchmarks import paddle_settings

    args.device = args.device or paddle_settings.default_device()
    with paddle_settings.work_dir(args):
        if not os.path.isdir(paddle_settings.tokenizer_dir(args)):  # a setting run on its own, not by a whole run
            paddle_settings.prepare_tokenizer(args)
        return paddle_settings.measure(args)


def settings_to_run(args, notes):
    """The settings asked for that this machine runs; a note says why one is left out."""
    settings = [setting for setting in args.settings if args.device == "cpu" or setting in (PROJECT, UPSTREAM)]
    if not has_bfloat16(args):
        for setting in set(settings) & set(BFLOAT16_SETTINGS):
            settings.remove(setting)
            notes.append(f"{setting}: left out, this CPU ({describe_cpu()}) lacks avx512_bf16")
    problem = python_problem(args.transformers_python, PEER_PACKAGES)
    for setting in set(settings) & set(PEER_SETTINGS) if problem else ():
        settings.remove(setting)
        notes.append(
            f"{setting}: left out, {problem} "
            "(README: Benchmark says how to install them apart; then pass --transformers_python)"
        )
    compiler = os.environ.get("CXX", "g++")  # what inductor compiles its CPU kernels with
    for setting in set(settings) & set(COMPILED_SETTINGS) if not shutil.which(compiler) else ():
        settings.remove(setting)
        notes.append(f"{setting}: left out, torch.compile needs a C++ compiler and {compiler} is not on PATH")
    return settings


def has_bfloat16(args):
    return args.device == "cpu" and has_bfloat16_instructions()


def is_bfloat16(peak_name):
    return "bfloat16" in peak_name


def run_setting(args, setting):
    """A setting's row, measured in a process of its own (its own peak memory, its own machine settings)."""
    python = args.transformers_python if setting in PEER_SETTINGS else sys.executable
    command = [python, os.path.abspath(__file__), *sys.argv[1:], "--setting", setting, "--work_dir", args.work_dir]
    command += ["--device", args.device]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"benchmark.py: the {setting} run failed:\n{done.stderr[-3000:]}")
    if args.profile:
        print(done.stdout.rsplit("\n", 2)[0])
    return json.loads(done.stdout.strip().splitlines()[-1])


def numpy_matmul_flops():
    a, b = np.random.randn(2048, 2048).astype(np.float32), np.random.randn(2048, 2048).astype(np.float32)
    return matmul_flops(lambda: a @ b)


COLUMNS = [
    ("CPU threads", "cpu_threads", "{}"),
    ("matrix products by", "products", "{}"),
    ("denormals", "denormals", "{}"),
    ("MKL_DEBUG_CPU_TYPE", "mkl_cpu_type", "{}"),
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
    """A table row of how many times `faster` trains and evaluates as fast as `slower`, and its memory's share
    (where both rows have one)."""
    ratios = {
        "train_examples_per_s": f"{faster['train_examples_per_s'] / slower['train_examples_per_s']:.2f}x",
        "eval_seconds": f"{slower['eval_seconds'] / faster['eval_seconds']:.2f}x faster",
    }
    if "peak_memory_mb" in faster and "peak_memory_mb" in slower:
        ratios["peak_memory_mb"] = f"{faster['peak_memory_mb'] / slower['peak_memory_mb']:.2f}x"
    return f"| {name} | " + " | ".join(ratios.get(key, "") for _, key, _ in COLUMNS) + " |"


def fastest(rows, settings):
    """The best training and the best evaluation among the rows of `settings`, with the settings they came from."""
    measured = [row for row in rows if row["setting"] in settings]
    training = max(measured, key=lambda row: row["train_examples_per_s"])
    evaluation = min(measured, key=lambda row: row["eval_seconds"])
    times = {"train_examples_per_s": training["train_examples_per_s"], "eval_seconds": evaluation["eval_seconds"]}
    return times, training["setting"], evaluation["setting"]


def fastest_ratio_row(rows):
    """The project's fastest setting against transformers' fastest, in training and in evaluation apart:
    what a user who picks the best of each gets."""
    project, project_training, project_evaluation = fastest(rows, PROJECT_SETTINGS)
    peer, peer_training, peer_evaluation = fastest(rows, PEER_SETTINGS)
    name = (
        f"project's fastest / transformers' fastest (training: {project_training} / {peer_training}; "
        f"evaluation: {project_evaluation} / {peer_evaluation})"
    )
    return ratio_row(name, project, peer)


def compile_notes(rows):
    return [
        f"{row['setting']}: torch.compile took {row['train_compile_seconds']:.0f} s on training's shapes and "
        f"{row['eval_compile_seconds']:.0f} s on evaluation's, left out of its times"
        for row in rows
        if "eval_compile_seconds" in row
    ]


def format_table(rows, peaks, peak_names, num_threads, device):
    by_setting = {row["setting"]: row for row in rows}
    lines = ["| setting | " + " | ".join(name for name, _, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for row in rows:
        row["eval_export_and_predictor_seconds"] = row["eval_export_seconds"] + row["eval_predictor_seconds"]
        lines.append(f"| {row['setting']} | " + " | ".join(form.format(row[key]) for _, key, form in COLUMNS) + " |")
    comparisons = [
        (PROJECT, TRANSFORMERS, "same threads"),
        (PROJECT_BF16, TRANSFORMERS_BF16, "bfloat16, same threads"),
        (PROJECT_BF16, TRANSFORMERS, "bfloat16 against float32"),
        (PROJECT_BF16, PROJECT, "bfloat16 against float32"),
        (TRANSFORMERS_BF16, TRANSFORMERS, "bfloat16 against float32"),
        (TRANSFORMERS_COMPILE, TRANSFORMERS, "torch.compile against eager"),
        (TRANSFORMERS_BF16_COMPILE, TRANSFORMERS_BF16, "torch.compile against eager"),
        (PROJECT, UPSTREAM, "equal settings"),
        (UPSTREAM, CPU_DEFAULTS, "machine settings"),
    ]
    for faster, slower, what in comparisons:
        if faster in by_setting and slower in by_setting:
            lines.append(ratio_row(f"{faster} / {slower} ({what})", by_setting[faster], by_setting[slower]))
    if len(set(by_setting) & set(PEER_SETTINGS)) > 1 and set(by_setting) & set(PROJECT_SETTINGS):
        lines.append(fastest_ratio_row(rows))
    where = f", {num_threads} threads on {describe_cpu()}" if device == "cpu" else ""
    measured = ", ".join(f"{name} {flops / 1e9:.1f}" for name, flops in sorted(peaks.items(), key=lambda kv: -kv[1]))
    lines.append("")
    for dtype, name in peak_names.items():
        if name:
            lines.append(f"{dtype} matmul peak: {peaks[name] / 1e9:.1f} GFLOP/s ({name}, 2048x2048{where})")
    lines.append(f"measured GFLOP/s: {measured}; MFU of a bfloat16 row is against the bfloat16 peak")
    encoder = {name: flops for row in rows for name, flops in row.get("encoder_products", {}).items()}
    if encoder:
        rates = ", ".join(f"{name} {flops / 1e9:.1f}" for name, flops in sorted(encoder.items(), key=lambda kv: -kv[1]))
        lines.append(
            f"the model's Linear products (forward and both gradients, {PRODUCT_MEASUREMENT_TOKENS} tokens{where}), "
            f"GFLOP/s: {rates}"
        )
    return "\n".join(lines + compile_notes(rows))


if __name__ == "__main__":
    main()
