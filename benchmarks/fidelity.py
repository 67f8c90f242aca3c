r"""Does this suite train a checkpoint as transformers' Trainer does? Run it on your checkpoint before
trusting a comparison between the two harnesses.

    python benchmarks/fidelity.py --model_dir ~/models/multilingual-e5-small --xnli_dir ../shared/xnli \
        --transformers_python ~/hf-venv/bin/python --output_dir output/fidelity

Both harnesses start from one Hugging Face checkpoint with one classifier start (the suite draws the
head with --seed and exports it with --export_hf_dir; both then load that export), train with the
same settings on identical batches (run_classifier.py's, which benchmarks/hf_finetune_peer.py takes
with --batch_order suite) with dropout off, and evaluate the first --eval_pairs_per_language test
pairs of each language. Printed: each step's two losses and their difference, the largest
difference, and the share of test pairs both harnesses label alike. Exit 1 when the largest loss
difference exceeds --tolerance or fewer than --min_identical of the predictions agree: the two
harnesses then compute something different. Where they part tells which: a different computation
within a few steps (transformers' own warmup rule, one step longer at 469 x 0.1, parted them at step 3),
float rounding (products summed in another order) only once Adam has grown it over tens of steps:
multilingual-e5 at 1e-4 stayed within 2.4e-7 for 49 steps, then passed 1e-4 at step 64 and the
default tolerance at step 94, so the default run is short.

`--dropout on` keeps the checkpoint's dropout: the two harnesses then draw different dropout masks
and their losses differ by that; it reports without a verdict. `--reference FILE` takes
transformers' side from a file written by an earlier run (transformers_reference.json in
--output_dir) instead of running transformers: for machines without torch. Writes fidelity.json.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)  # run as a script, from anywhere

from benchmarks.common import python_problem  # noqa: E402
from benchmarks.fine_tuning_settings import add_fine_tuning_settings, refuse_unusable_paths  # noqa: E402
from ernie_m_xnli.evaluation.predictions import TEST_PREDICTIONS_FILE, read_test_predictions  # noqa: E402
from ernie_m_xnli.setup.arguments import OneLineErrorParser  # noqa: E402
from utils import XNLI_LANGUAGES, write_json_atomically  # noqa: E402

PROGRAM = "fidelity.py"
# What benchmarks/hf_finetune_peer.py imports: transformers' Trainer needs accelerate.
TRAINER_PACKAGES = ("torch", "transformers", "accelerate")
REFERENCE_FILE, RESULT_FILE = "transformers_reference.json", "fidelity.json"
# The config.json keys of the dropout rates of the families' encoders and heads.
DROPOUT_KEYS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "pooler_dropout",
    "cls_dropout",
)


def parse_args(argv=None):
    parser = OneLineErrorParser(prog=PROGRAM, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="A Hugging Face checkpoint directory.")
    parser.add_argument("--xnli_dir", required=True, help="XNLI in the release layout (XNLI-1.0/, XNLI-MT-1.0/).")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--transformers_python", help="A Python with torch, transformers and accelerate.")
    source.add_argument("--reference", help=f"transformers' side as recorded by an earlier run ({REFERENCE_FILE}).")
    parser.add_argument("--output_dir", default="output/fidelity", help="Where both runs and fidelity.json go.")
    parser.add_argument("--steps", type=int, default=30, help="Training steps of each harness.")
    add_fine_tuning_settings(parser, eval_pairs_per_language=100)
    parser.add_argument("--dropout", choices=("off", "on"), default="off")
    parser.add_argument("--tolerance", type=float, default=2e-3, help="Largest loss difference allowed at any step.")
    parser.add_argument(
        "--min_identical", type=float, default=0.98, help="Smallest share of test pairs both must label alike."
    )
    args = parser.parse_args(argv)
    problem = args.transformers_python and python_problem(args.transformers_python, TRAINER_PACKAGES)
    if problem:
        parser.error(f"--transformers_python {problem}")
    refuse_unusable_paths(parser, args, ["en"])
    if args.reference and not os.path.isfile(args.reference):
        parser.error(f"--reference {args.reference}: no such file")
    # The harnesses run in the repository's directory.
    for name in ("model_dir", "xnli_dir", "reference", "output_dir"):
        setattr(args, name, getattr(args, name) and os.path.abspath(getattr(args, name)))
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    return args


def main(argv=None):
    args = parse_args(argv)
    reference = args.reference and read_reference(args)
    os.makedirs(args.output_dir, exist_ok=True)
    start = common_start(args)
    suite = suite_run(args, start)
    transformers = reference or transformers_run(args, start)
    report = fidelity_report(args, suite, transformers)
    write_json_atomically(os.path.join(args.output_dir, RESULT_FILE), report)
    print(format_report(report))
    sys.exit(0 if report["passed"] is not False else 1)


def common_start(args):
    """The checkpoint both harnesses start from: --model_dir with the suite's classifier drawn with
    --seed, in transformers' layout, with dropout off unless --dropout on."""
    start = os.path.join(args.output_dir, "start")
    shutil.rmtree(start, ignore_errors=True)
    run_suite(
        args,
        "--eval_only",
        "--allow_untrained_classifier",
        "--model_name_or_path",
        args.model_dir,
        "--export_hf_dir",
        start,
        "--output_dir",
        os.path.join(args.output_dir, "start-evaluation"),
        "--eval_pairs_per_language",
        "1",
        "--max_seq_length",
        str(args.max_seq_length),
        "--seed",
        str(args.seed),
    )
    if args.dropout == "off":
        config_path = os.path.join(start, "config.json")
        with open(config_path, encoding="utf-8") as file:
            config = json.load(file)
        config.update({key: 0.0 for key in DROPOUT_KEYS if key in config or key == "classifier_dropout"})
        write_json_atomically(config_path, config)
    return start


def training_settings(args):
    """The flags both harnesses take with the same meaning."""
    settings = {
        "max_steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "warmup_proportion": args.warmup_proportion,
        "weight_decay": args.weight_decay,
        "max_grad_norm": args.max_grad_norm,
        "max_seq_length": args.max_seq_length,
        "eval_pairs_per_language": args.eval_pairs_per_language,
        "seed": args.seed,
    }
    return [item for name, value in settings.items() for item in (f"--{name}", str(value))]


def suite_run(args, start):
    """{train_loss_history, test_predictions} of run_classifier.py trained from `start`."""
    output_dir = os.path.join(args.output_dir, "suite")
    with open(os.path.join(start, "config.json"), encoding="utf-8") as file:
        config = json.load(file)
    run_suite(
        args,
        "--model_name_or_path",
        start,
        "--output_dir",
        output_dir,
        "--overwrite_output_dir",
        *training_settings(args),
        "--layerwise_decay",
        "1.0",
        "--dropout",
        str(config.get("classifier_dropout") or config.get("hidden_dropout_prob", 0.0)),
        "--logging_steps",
        "1",
        "--eval_steps",
        str(args.steps),
        "--save_steps",
        str(args.steps),
        "--save_total_limit",
        "1",
    )
    return run_outcome(output_dir)


def run_suite(args, *arguments):
    command = [sys.executable, os.path.join(REPO_ROOT, "run_classifier.py"), "--task_type", "cross-lingual-transfer"]
    command += ["--data_dir", args.xnli_dir, "--device", "cpu", "--cpu_threads", str(args.threads)]
    command += ["--cache_dir", os.path.join(args.output_dir, "cache"), "--disable_tqdm", *arguments]
    run_or_exit(command, "run_classifier.py")


def transformers_run(args, start):
    """{train_loss_history, test_predictions} of transformers' Trainer trained from `start` on the
    suite's batches; also written to transformers_reference.json for --reference."""
    output_dir = os.path.join(args.output_dir, "transformers")
    command = [args.transformers_python, "-m", "benchmarks.hf_finetune_peer", "--model_dir", start]
    command += ["--xnli_dir", os.path.abspath(args.xnli_dir), "--output_dir", output_dir, "--batch_order", "suite"]
    command += ["--threads", str(args.threads), *training_settings(args)]
    run_or_exit(command, "transformers' Trainer (benchmarks/hf_finetune_peer.py)")
    outcome = run_outcome(output_dir)
    write_json_atomically(
        os.path.join(args.output_dir, REFERENCE_FILE), {**outcome, "settings": compared_settings(args)}
    )
    return outcome


def compared_settings(args):
    """The settings that decide both runs' losses and predictions (not paths, which do not travel)."""
    names = ("steps", "batch_size", "learning_rate", "warmup_proportion", "weight_decay", "max_grad_norm")
    names += ("max_seq_length", "eval_pairs_per_language", "seed", "dropout")
    return {name: getattr(args, name) for name in names}


def run_or_exit(command, what):
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        lines = done.stderr.strip().splitlines()[-20:]
        sys.exit(f"{PROGRAM}: error: {what} failed (exit {done.returncode}):\n" + "\n".join(lines))


def run_outcome(output_dir):
    with open(os.path.join(output_dir, "results.json"), encoding="utf-8") as file:
        results = json.load(file)
    predictions = read_test_predictions(os.path.join(output_dir, TEST_PREDICTIONS_FILE))
    return {
        "train_loss_history": results["train_loss_history"],
        "test_predictions": {lang: predictions[lang][1].tolist() for lang in XNLI_LANGUAGES},
    }


def read_reference(args):
    """transformers' side recorded by an earlier run with the same settings."""
    path = args.reference
    try:
        with open(path, encoding="utf-8") as file:
            reference = json.load(file)
    except (OSError, ValueError) as error:
        sys.exit(f"{PROGRAM}: error: --reference {path}: {error}")
    if not isinstance(reference, dict) or not {"train_loss_history", "test_predictions", "settings"} <= set(reference):
        sys.exit(f"{PROGRAM}: error: --reference {path}: not a {REFERENCE_FILE} written by this script")
    differing = {
        name: value for name, value in compared_settings(args).items() if reference["settings"].get(name) != value
    }
    if differing:
        recorded = ", ".join(f"--{name} {reference['settings'].get(name)}" for name in differing)
        asked = ", ".join(f"--{name} {value}" for name, value in differing.items())
        sys.exit(f"{PROGRAM}: error: --reference {path} was recorded with {recorded}; this run has {asked}")
    return reference


def fidelity_report(args, suite, transformers):
    """fidelity.json: both loss series, their largest difference, the share of identical test
    predictions, and the verdict (None with dropout on)."""
    suite_losses = {entry["step"]: entry["loss"] for entry in suite["train_loss_history"]}
    transformers_losses = {entry["step"]: entry["loss"] for entry in transformers["train_loss_history"]}
    steps = sorted(set(suite_losses) & set(transformers_losses))
    if len(steps) < args.steps:
        sys.exit(f"{PROGRAM}: error: losses of steps 1-{args.steps} expected, both harnesses logged {len(steps)}")
    losses = [
        {"step": s, "suite": suite_losses[s], "transformers": transformers_losses[s]} for s in steps[: args.steps]
    ]
    differences = [abs(entry["suite"] - entry["transformers"]) for entry in losses]
    beyond = [entry["step"] for entry, difference in zip(losses, differences) if difference > args.tolerance]
    pairs = [
        (a, b)
        for lang in XNLI_LANGUAGES
        for a, b in zip(suite["test_predictions"][lang], transformers["test_predictions"][lang], strict=True)
    ]
    identical = sum(a == b for a, b in pairs) / len(pairs)
    judged = args.dropout == "off"
    return {
        "losses": losses,
        "max_loss_difference": max(differences),
        "first_step_beyond_tolerance": beyond[0] if beyond else None,
        "identical_test_predictions": identical,
        "test_pairs": len(pairs),
        "tolerance": args.tolerance,
        "min_identical": args.min_identical,
        "dropout": args.dropout,
        "passed": (not beyond and identical >= args.min_identical) if judged else None,
        "transformers_source": args.reference or args.transformers_python,
    }


def format_report(report):
    lines = ["step  suite loss  transformers loss  difference"]
    lines += [
        f"{e['step']:>4}  {e['suite']:.6f}    {e['transformers']:.6f}           {e['suite'] - e['transformers']:+.2e}"
        for e in report["losses"]
    ]
    beyond = report["first_step_beyond_tolerance"]
    lines.append(
        f"largest loss difference {report['max_loss_difference']:.2e} (tolerance {report['tolerance']:.0e}"
        + (f", beyond it from step {beyond}" if beyond else "")
        + f"); identical test predictions {100 * report['identical_test_predictions']:.1f}% of {report['test_pairs']} "
        f"pairs (at least {100 * report['min_identical']:.0f}%)"
    )
    if report["passed"] is None:
        lines.append("dropout on: the harnesses draw different dropout masks, so no verdict")
    elif report["passed"]:
        lines.append("PASS: the suite trains this checkpoint as transformers' Trainer does, up to float rounding")
    else:
        lines.append("FAIL: the two harnesses compute something different on this checkpoint")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
