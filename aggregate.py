r"""Summarize runs that differ only in their seed: mean, std, min and max per language.

XNLI averages move by a few tenths of a point between seeds, so one run can neither confirm nor
refute the paper; the ERNIE-M authors report the mean of 5 runs. Run each seed as its own job
(README: "Several seeds"), then:

    python aggregate.py output/base-clt-seed*          # writes output/summary.{json,md,png}
    python aggregate.py RUN_DIR... --output_dir DIR --skip_unfinished

Each RUN_DIR holds the results.json of a finished run of run_classifier.py. Runs whose arguments
differ in anything but the seed, the output directory, resuming, logging, caching, the evaluation
batch size and exports are refused, naming the arguments that differ; runs on another machine or with
other versions than the first are summarized and named in a note. To compare different settings,
models or encoders, with confidence intervals and paired tests, use compare.py.
"""

import argparse
import os
import sys

import numpy as np

from ernie_m_xnli.evaluation.provenance import machine_notes
from ernie_m_xnli.evaluation.reporting import COLUMNS, RESULTS_FILE, format_results_table, plot_results
from ernie_m_xnli.setup.arguments import OneLineErrorParser
from utils import InputError, read_json, write_json_atomically, writing_into, written_then_renamed

SUMMARY_FILE, SUMMARY_MARKDOWN_FILE, SUMMARY_PLOT_FILE = "summary.json", "summary.md", "summary.png"
# Arguments that may differ between the runs of one summary: they do not change what a run computes.
FREE_ARGUMENTS = {
    "seed",
    "output_dir",
    "resume_from_checkpoint",
    "overwrite_output_dir",
    "logging_steps",
    "disable_tqdm",
    "visualdl",
    "debug",
    "cache_dir",
    "preprocessing_num_workers",
    "eval_batch_size",
    "export_hf_dir",
    "export_model_dir",
}
# The results.json fields summarized: (summary key, results key).
SUMMARIZED = (
    ("test_accuracy", "test_accuracy_select_avg"),
    ("test_accuracy_select_en", "test_accuracy_select_en"),
    ("dev_accuracy", "dev_accuracy_select_avg"),
)
# The sample standard deviation (n - 1) is undefined for one run: null.
STATISTICS = {
    "mean": lambda values: float(np.mean(values)),
    "std": lambda values: float(np.std(values, ddof=1)) if len(values) > 1 else None,
    "min": lambda values: float(np.min(values)),
    "max": lambda values: float(np.max(values)),
}


def parse_args(argv=None):
    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="Output directories of finished runs.")
    parser.add_argument("--output_dir", help="Where the summary files go. Default: the runs' common parent.")
    parser.add_argument("--skip_unfinished", action="store_true", help="Leave out runs without results.json.")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        runs = read_runs(args.run_dirs, args.skip_unfinished)
        check_same_settings(runs)
        output_dir = args.output_dir or os.path.commonpath([os.path.dirname(os.path.abspath(d)) for d in runs])
        summary = summarize(runs)
        with writing_into(output_dir):
            write_summary(output_dir, summary)
    except InputError as error:
        print(f"aggregate.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(format_summary_table(summary, SUMMARIZED[0][0]))
    for note in summary["machines"]:
        print(f"Note: {note}.")
    print(f"wrote {os.path.join(output_dir, SUMMARY_FILE)}, {SUMMARY_MARKDOWN_FILE} and {SUMMARY_PLOT_FILE}")


def read_runs(run_dirs, skip_unfinished):
    """{run directory: its results.json}, in the order given."""
    runs = {}
    for run_dir in run_dirs:
        if not os.path.isdir(run_dir):
            raise InputError(f"{run_dir}: no such directory")
        if any(os.path.samefile(run_dir, earlier) for earlier in runs):
            raise InputError(f"{run_dir}: given twice (a run counts once)")
        path = os.path.join(run_dir, RESULTS_FILE)
        results = read_json(path)
        if results is None:
            if skip_unfinished:
                print(f"aggregate.py: skipping {run_dir}: no {RESULTS_FILE} (unfinished)", file=sys.stderr)
                continue
            raise InputError(f"{run_dir}: no {RESULTS_FILE}, the run has not finished (or pass --skip_unfinished)")
        missing = [key for _, key in SUMMARIZED if key not in results]
        if missing:
            raise InputError(
                f"{path}: no {', '.join(missing)} (a training run of run_classifier.py has them; compare.py "
                "NAME=RUN,RUN,... tabulates runs of benchmarks/hf_finetune_peer.py too)"
            )
        runs[run_dir] = results
    if not runs:
        raise InputError("no finished run to summarize")
    return runs


def check_same_settings(runs):
    """Refuse runs whose arguments differ in anything that changes what they compute."""
    first_dir, first = next(iter(runs.items()))
    for run_dir, results in runs.items():
        names = (set(first["args"]) | set(results["args"])) - FREE_ARGUMENTS
        differing = sorted(name for name in names if first["args"].get(name) != results["args"].get(name))
        if differing:
            changes = ", ".join(
                f"--{name} ({first['args'].get(name)!r} vs {results['args'].get(name)!r})" for name in differing
            )
            raise InputError(f"{run_dir} differs from {first_dir} in more than the seed: {changes}")


def summarize(runs):
    """The summary.json content: the runs, their seeds, statistics of each summarized field (in
    percent, per language and averaged), and the paper's row for the same model and setting."""
    first = next(iter(runs.values()))
    summary = {"runs": list(runs), "seeds": [results["args"]["seed"] for results in runs.values()], "n": len(runs)}
    for summary_key, results_key in SUMMARIZED:
        values = {column: [results[results_key][column] for results in runs.values()] for column in COLUMNS}
        summary[summary_key] = {
            name: {column: statistic(values[column]) for column in COLUMNS} for name, statistic in STATISTICS.items()
        }
    summary["model"], summary["task_type"] = first["model"], first["task_type"]
    summary["paper"] = first.get("paper")
    summary["machines"] = machine_notes(
        [{"name": "seeds", "runs": [{"dir": d, "results": r} for d, r in runs.items()]}]
    )
    return summary


def format_summary_table(summary, key):
    """A Markdown table of mean ± std (min-max) per language, and the paper's row."""
    statistics = summary[key]

    def cell(column):
        mean, std, low, high = (statistics[name][column] for name in ("mean", "std", "min", "max"))
        return f"{mean:.1f}{f' ± {std:.1f}' if std is not None else ''} ({low:.1f}-{high:.1f})"

    rows = {
        f"{os.path.basename(os.path.normpath(summary['model']))}, {summary['n']} run(s)": {c: cell(c) for c in COLUMNS}
    }
    if summary["paper"]:
        rows[f"{summary['paper']['model']} (paper)"] = summary["paper"]["accuracy"]
    return format_results_table(rows)


def write_summary(output_dir, summary):
    write_json_atomically(os.path.join(output_dir, SUMMARY_FILE), summary)
    titles = {
        "test_accuracy": "Test accuracy (%), selected on dev avg",
        "test_accuracy_select_en": "Test accuracy (%), selected on English dev (strict zero-shot)",
        "dev_accuracy": "Dev accuracy (%) of the models selected on dev avg",
    }
    sections = [f"## {titles[key]}\n\n{format_summary_table(summary, key)}\n" for key, _ in SUMMARIZED]
    header = f"# {summary['task_type']}: mean ± std (min-max) over seeds {', '.join(map(str, summary['seeds']))}\n"
    markdown_path = os.path.join(output_dir, SUMMARY_MARKDOWN_FILE)
    with written_then_renamed(markdown_path) as temporary, open(temporary, "w", encoding="utf-8") as file:
        file.write("\n".join([header, *sections, *(f"Note: {note}.\n" for note in summary["machines"])]))
    test = summary["test_accuracy"]
    errors = {column: test["std"][column] or 0.0 for column in COLUMNS}
    reference = (summary["paper"]["model"], summary["paper"]["accuracy"]) if summary["paper"] else None
    title = f"{summary['task_type']}: test accuracy, mean ± std of {summary['n']} run(s), selected on dev avg"
    plot_results(
        os.path.join(output_dir, SUMMARY_PLOT_FILE), title, test["mean"], reference, errors, "mean of the runs"
    )


if __name__ == "__main__":
    main()
