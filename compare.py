r"""Compare models, settings or encoders on the same XNLI test pairs, as a paper prints it: per language,
test accuracy mean ± std over seeds with a 95% confidence interval, and each row's difference from the
first row with a p-value whose unit is the run.

    python compare.py --output_dir output/comparison \
        e5=output/e5-clt-seed42,output/e5-clt-seed43,output/e5-clt-seed44 \
        transformers=output/e5-hf-seed42,output/e5-hf-seed43,output/e5-hf-seed44

Each RUN is an output directory of run_classifier.py (or of benchmarks/hf_finetune_peer.py) holding
results.json and test_predictions.tsv; the RUNs of one NAME are its seeds. Seeds, not test pairs, are
the experimental units: two runs of one model differ by a few points from the luck of training alone,
and thousands of test pairs within a run do not tell that apart from a better model. So a row's
interval counts the spread between its seeds and the sampling of the test pairs, and each p-value is a
t-test over the runs: paired over the seeds both rows ran where one harness trained both, Welch's
otherwise (another harness's seed 42 draws other batches and another start). A row of one run has no
run-to-run variance to count: its figures count the test pairs only, are marked † and say so.
Fifteen languages are fifteen tests: each language's p-value is also given adjusted by Holm's method
over the 15, and a note says how many seeds a row would find the average's difference, were it real.
Writes comparison.json, comparison.md and comparison.png to --output_dir.
"""

import argparse
import os
import sys

import numpy as np

from ernie_m_xnli.evaluation.predictions import TEST_PREDICTIONS_FILE, read_test_predictions
from ernie_m_xnli.evaluation.provenance import machine_notes
from ernie_m_xnli.evaluation.reporting import COLUMNS, RESULTS_FILE, format_results_table
from ernie_m_xnli.evaluation.significance import (
    TEST_PAIRS,
    difference_estimates,
    holm_adjusted,
    row_estimates,
    run_accuracies,
    seeds_for_power,
)
from ernie_m_xnli.setup.arguments import OneLineErrorParser
from utils import XNLI_LANGUAGES, InputError, read_json, write_json_atomically, writing_into, written_then_renamed

COMPARISON_FILE, COMPARISON_MARKDOWN_FILE, COMPARISON_PLOT_FILE = "comparison.json", "comparison.md", "comparison.png"
SIGNIFICANT = 0.05


def parse_args(argv=None):
    parser = OneLineErrorParser(
        prog="compare.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("rows", nargs="+", metavar="NAME=RUN[,RUN...]", help="A row: its name and its runs (seeds).")
    parser.add_argument("--output_dir", required=True, help="Where comparison.{json,md,png} go.")
    args = parser.parse_args(argv)
    names = []
    for row in args.rows:
        name, _, runs = row.partition("=")
        if not name or not runs or "" in runs.split(","):
            parser.error(f"expected NAME=RUN[,RUN...], got {row!r}")
        if name in names:
            parser.error(f"two rows are named {name!r}: each row needs a name of its own")
        names.append(name)
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        rows = [read_row(*row.split("=", 1)) for row in args.rows]
        check_same_test_pairs(rows)
        comparison = compare(rows)
        markdown = format_comparison(comparison)
        with writing_into(args.output_dir):
            write_json_atomically(os.path.join(args.output_dir, COMPARISON_FILE), comparison)
            with written_then_renamed(os.path.join(args.output_dir, COMPARISON_MARKDOWN_FILE)) as temporary:
                with open(temporary, "w", encoding="utf-8") as file:
                    file.write(markdown)
            plot_comparison(os.path.join(args.output_dir, COMPARISON_PLOT_FILE), comparison)
    except InputError as error:
        print(f"compare.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(markdown)
    print(
        f"wrote {os.path.join(args.output_dir, COMPARISON_FILE)}, {COMPARISON_MARKDOWN_FILE} and {COMPARISON_PLOT_FILE}"
    )


def read_row(name, runs):
    """{"name", "runs": [{"dir", "results", "predictions"}]} of one NAME=RUN,... argument."""
    row = {"name": name, "runs": []}
    for run_dir in runs.split(","):
        results_path, predictions_path = (os.path.join(run_dir, f) for f in (RESULTS_FILE, TEST_PREDICTIONS_FILE))
        if not os.path.isdir(run_dir):
            raise InputError(f"{run_dir} (row {name}): no such directory")
        if any(os.path.samefile(run_dir, run["dir"]) for run in row["runs"]):
            raise InputError(f"{run_dir}: given twice in row {name} (a run counts once)")
        if not os.path.isfile(predictions_path):
            raise InputError(f"{run_dir}: no {TEST_PREDICTIONS_FILE} (a finished run of this suite writes it)")
        results = read_json(results_path)
        if results is None:
            raise InputError(f"{run_dir}: no {RESULTS_FILE} (a finished run of this suite writes it)")
        try:
            predictions = read_test_predictions(predictions_path)
        except ValueError as error:
            raise InputError(str(error)) from None
        missing = [lang for lang in XNLI_LANGUAGES if lang not in predictions]
        if missing:
            raise InputError(f"{predictions_path}: no predictions for {', '.join(missing)}")
        row["runs"].append({"dir": run_dir, "results": results, "predictions": predictions})
    return row


def check_same_test_pairs(rows):
    """Refuse runs evaluated on other test pairs than the first run: another test file, or other pairs of it."""
    runs = [run for row in rows for run in row["runs"]]
    first = runs[0]
    for run in runs[1:]:
        digests = [r["results"].get("test_file", {}).get("sha256") for r in (first, run)]
        if digests[0] and digests[1] and digests[0] != digests[1]:
            raise InputError(
                f"{run['dir']}: evaluated on another test file than {first['dir']} "
                f"({run['results']['test_file']['path']} vs {first['results']['test_file']['path']})"
            )
        for lang in XNLI_LANGUAGES:
            gold, first_gold = run["predictions"][lang][0], first["predictions"][lang][0]
            if len(gold) != len(first_gold) or not np.array_equal(gold, first_gold):
                raise InputError(
                    f"{run['dir']}: other {lang} test pairs than {first['dir']} ({len(gold)} vs {len(first_gold)} "
                    "pairs, or other gold labels): compare runs evaluated on the same test pairs"
                )


def correctness(run):
    """{language: [pairs]} 1 where the run classified a test pair correctly, else 0."""
    return {lang: run["predictions"][lang][0] == run["predictions"][lang][1] for lang in XNLI_LANGUAGES}


def harness(run):
    """Which program trained a run: "transformers" (benchmarks/hf_finetune_peer.py) or "suite"."""
    versions = (run["results"].get("environment") or {}).get("versions", {})
    return "transformers" if "transformers" in versions else "suite"


def matched_runs(row_a, row_b):
    """The runs of each row with the seeds both have, where one seed draws the same batches in both
    (rows of one harness); all of each row's runs otherwise (no seed in common, or two harnesses,
    whose seed numbers draw unrelated batches and starts)."""
    seeds_a = [run["results"]["args"].get("seed") for run in row_a["runs"]]
    seeds_b = [run["results"]["args"].get("seed") for run in row_b["runs"]]
    harnesses = {harness(run) for run in row_a["runs"] + row_b["runs"]}
    common = [seed for seed in seeds_a if seed in seeds_b] if len(harnesses) == 1 else []
    if not common:
        return row_a["runs"], row_b["runs"], []

    def of_common_seeds(row, seeds):
        return [row["runs"][seeds.index(seed)] for seed in common]

    return of_common_seeds(row_a, seeds_a), of_common_seeds(row_b, seeds_b), common


def compare(rows):
    """The comparison.json content (accuracies in percent)."""
    summaries = []
    for row in rows:
        estimates = row_estimates([correctness(run) for run in row["runs"]])
        per_run = [run_accuracies(correctness(run)) for run in row["runs"]]
        seed_std = {
            column: float(np.std([acc[column] for acc in per_run], ddof=1)) if len(per_run) > 1 else None
            for column in COLUMNS
        }
        summaries.append(
            {
                "name": row["name"],
                "runs": [run["dir"] for run in row["runs"]],
                "seeds": [run["results"]["args"].get("seed") for run in row["runs"]],
                "model_type": row["runs"][0]["results"].get("model_type"),
                "unit": estimates["avg"].unit,
                "seed_std": seed_std,
                "test": {
                    column: {
                        "mean": estimates[column].value,
                        "std": seed_std[column],
                        "standard_error": estimates[column].standard_error,
                        "ci95": estimates[column].interval(),
                    }
                    for column in COLUMNS
                },
            }
        )
    paired = []
    for row in rows[1:]:
        runs_a, runs_b, seeds = matched_runs(rows[0], row)
        estimates = difference_estimates(
            [correctness(run) for run in runs_a], [correctness(run) for run in runs_b], paired=bool(seeds)
        )
        across_languages = dict(
            zip(XNLI_LANGUAGES, holm_adjusted([estimates[lang].p_value() for lang in XNLI_LANGUAGES]))
        )
        for column in COLUMNS:
            estimate = estimates[column]
            paired.append(
                {
                    "a": rows[0]["name"],
                    "b": row["name"],
                    "language": column,
                    "difference": estimate.value,
                    "p_value": estimate.p_value(),
                    "p_value_holm": across_languages.get(column),
                    "unit": estimate.unit,
                    "test": test_name(estimate, seeds),
                    "standard_error": estimate.standard_error,
                    "degrees_of_freedom": finite_or_none(estimate.degrees_of_freedom),
                    "critical_ratio": estimate.critical_ratio(),
                    "seeds_for_80_percent_power": seeds_for_power(estimate.value, estimate.run_stds),
                    "ci95": estimate.interval(),
                    "seeds": seeds,
                }
            )
    return {"rows": summaries, "paired": paired, "method": METHOD, "machines": machine_notes(rows)}


METHOD = {
    "unit": "run: the seeds are the experimental units, the test pairs are within them",
    "ci95": "mean over seeds +- t quantile x standard error; the standard error adds the seeds' spread "
    "(std^2 / seeds) and the test pairs' sampling variance of the seed-averaged correctness; degrees of freedom "
    "by Welch-Satterthwaite from the seeds (a row of one run: the test pairs only, normal quantile)",
    "p_value": "two-sided t-test of the difference from the first row: paired over the seeds both rows ran "
    "where they come from one harness (one seed, the same batches), Welch's otherwise; the rows share the test "
    "pairs, so the seeds' spread is the whole uncertainty of a difference; where a row has one run the "
    "run-to-run variance is unknown and the p-value counts the test pairs only (unit 'test pairs')",
    "p_value_holm": "a language's p-value adjusted by Holm's method over the 15 languages of one comparison, "
    "so that any of them falls under 0.05 by chance in at most 5% of comparisons of two equal models; the "
    "average is one test of its own (null)",
    "seeds_for_80_percent_power": "seeds a row with which the same test would find the difference seen "
    "(p < 0.05) in 80% of experiments, were it the true difference and the runs' spread as seen (null: over "
    "1,000, or the run-to-run variance unknown): a plan for the next runs, not evidence",
}


def test_name(estimate, seeds):
    if estimate.unit == TEST_PAIRS:
        return "z-test over test pairs only (run-to-run variance unknown)"
    return f"paired t-test over seeds {seeds}" if seeds else "Welch's t-test over the rows' seeds"


def finite_or_none(number):
    return float(number) if np.isfinite(number) else None


def format_comparison(comparison):
    """comparison.md: one table of mean ±std per row, each later row's difference from the first
    below it, marked * where p < 0.05 over the runs (or † where only the test pairs are counted); then
    the intervals, the method, what the seeds allow and the machine notes."""
    table_rows = {}
    for row in comparison["rows"]:
        table_rows[f"{row['name']} ({len(row['runs'])} run(s))"] = {
            column: f"{row['test'][column]['mean']:.1f}"
            + (f" ±{row['test'][column]['std']:.1f}" if row["test"][column]["std"] is not None else "")
            for column in COLUMNS
        }
        differences = [p for p in comparison["paired"] if p["b"] == row["name"]]
        if differences and row is not comparison["rows"][0]:
            table_rows[f"{row['name']} - {differences[0]['a']}"] = {
                p["language"]: f"{p['difference']:+.1f}{significance_mark(p)}" for p in differences
            }
    intervals = {
        f"{row['name']} 95% CI{' †' if row['unit'] == TEST_PAIRS else ''}": {
            column: "{:.1f}-{:.1f}".format(*row["test"][column]["ci95"]) for column in COLUMNS
        }
        for row in comparison["rows"]
    }
    lines = [
        "# XNLI test accuracy (%): mean ±std over seeds; differences from the first row, * where p < 0.05",
        "",
        format_results_table(table_rows),
        "",
        format_results_table(intervals),
        "",
        f"Unit: {comparison['method']['unit']}. Intervals: {comparison['method']['ci95']}. "
        f"p-values: {comparison['method']['p_value']}.",
    ]
    lines += [f"\nNote: {note}." for note in what_the_seeds_allow(comparison)]
    lines += [f"\nNote: {note}." for note in languages_under_threshold(comparison)]
    lines += [f"\nNote: {note}." for note in comparison["machines"]]
    return "\n".join(lines) + "\n"


def significance_mark(paired):
    if paired["p_value"] >= SIGNIFICANT:
        return ""
    return "†" if paired["unit"] == TEST_PAIRS else "*"


def what_the_seeds_allow(comparison):
    """Sentences on the comparisons that count the test pairs only, and on how large a difference
    the seeds let reach p < 0.05."""
    notes = []
    for row in comparison["rows"][1:]:
        avg = next(p for p in comparison["paired"] if p["b"] == row["name"] and p["language"] == "avg")
        if avg["unit"] == TEST_PAIRS:
            notes.append(
                f"† {row['name']} vs {avg['a']}: a row has one run, so the run-to-run variance is unknown; the "
                "p-values and intervals count the test pairs only, and a difference of a few points may be the "
                "luck of training: run more seeds"
            )
        else:
            notes.append(
                f"{row['name']} vs {avg['a']} ({avg['test']}): p < 0.05 needs a difference of "
                f"{avg['critical_ratio']:.1f} standard errors; on the average that is "
                f"{avg['critical_ratio'] * avg['standard_error']:.1f} points here. A difference without * is "
                f"no difference shown, not an equality. {seeds_to_find(avg)}"
            )
    return notes


def seeds_to_find(paired):
    """A sentence on how many seeds would find the difference seen, were it real."""
    seeds = paired["seeds_for_80_percent_power"]
    were_it_real = f"Were the {paired['difference']:+.1f} on the average the true difference"
    if seeds is None:
        return f"{were_it_real}, over 1,000 seeds a row would be needed to find it 80% of the time"
    return f"{were_it_real}, {seeds} seeds a row would find it (p < 0.05) 80% of the time"


def languages_under_threshold(comparison):
    """A sentence per comparison naming the languages under p < 0.05 alone and after Holm's adjustment."""
    notes = []
    for row in comparison["rows"][1:]:
        languages = [p for p in comparison["paired"] if p["b"] == row["name"] and p["language"] in XNLI_LANGUAGES]
        alone = [p["language"] for p in languages if p["p_value"] < SIGNIFICANT] or ["none"]
        adjusted = [p["language"] for p in languages if p["p_value_holm"] < SIGNIFICANT] or ["none"]
        notes.append(
            f"{row['name']} vs {languages[0]['a']}, languages under p < 0.05: {', '.join(alone)}; after Holm's "
            f"adjustment for {len(languages)} languages (one of which falls under 0.05 by chance in many "
            f"comparisons of equal models): {', '.join(adjusted)}"
        )
    return notes


def plot_comparison(path, comparison):
    """Each row's mean accuracy per language as grouped bars with its 95% interval, 1200 x 500."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = comparison["rows"]
    positions = np.arange(len(COLUMNS))
    width = 0.8 / len(rows)
    figure, axes = plt.subplots(figsize=(12, 5), dpi=100)
    for index, row in enumerate(rows):
        means = np.array([row["test"][column]["mean"] for column in COLUMNS])
        low = means - np.array([row["test"][column]["ci95"][0] for column in COLUMNS])
        high = np.array([row["test"][column]["ci95"][1] for column in COLUMNS]) - means
        offset = (index - (len(rows) - 1) / 2) * width
        axes.bar(positions + offset, means, width, yerr=[low, high], capsize=2, label=row["name"])
    axes.set_xticks(positions, COLUMNS)
    axes.set_ylim(0, 100)
    axes.set_ylabel("test accuracy (%)")
    axes.set_title("XNLI test accuracy, mean over seeds, 95% interval (seeds and test pairs)")
    axes.legend(loc="lower left")
    figure.tight_layout()
    with written_then_renamed(path) as temporary:
        figure.savefig(temporary)
    plt.close(figure)


if __name__ == "__main__":
    main()
