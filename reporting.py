"""The results: results.json for programs; for people, Markdown tables beside the paper's numbers,
a bar chart and log lines."""

import logging
import os

import numpy as np

from utils import XNLI_LANGUAGES, average_accuracy, write_json_atomically

RESULTS_FILE = "results.json"
RESULTS_MARKDOWN_FILE = "results.md"
RESULTS_PLOT_FILE = "results.png"

# XNLI test accuracy (%) per language reported in the ERNIE-M paper, in XNLI_LANGUAGES order.
PAPER_ACCURACY = {
    ("ernie-m-base", "cross-lingual-transfer"): (
        85.5,
        80.1,
        81.2,
        79.2,
        79.1,
        80.4,
        78.1,
        76.8,
        76.3,
        78.3,
        75.8,
        77.4,
        72.9,
        69.5,
        68.8,
    ),
    ("ernie-m-large", "cross-lingual-transfer"): (
        89.3,
        85.1,
        85.7,
        84.4,
        83.7,
        84.5,
        82.0,
        81.2,
        81.2,
        81.9,
        79.2,
        81.0,
        78.6,
        76.2,
        75.4,
    ),
    ("ernie-m-base", "translate-train-all"): (
        86.2,
        82.5,
        83.8,
        82.6,
        82.4,
        83.4,
        80.2,
        80.6,
        80.5,
        81.1,
        79.2,
        80.5,
        77.7,
        75.0,
        73.3,
    ),
    ("ernie-m-large", "translate-train-all"): (
        89.5,
        86.5,
        86.9,
        86.1,
        86.0,
        86.8,
        84.1,
        83.8,
        84.1,
        84.5,
        82.1,
        83.5,
        81.1,
        79.4,
        77.9,
    ),
}
# (layers, hidden size) of the two pretrained models, to recognise them in a local checkpoint.
ARCHITECTURES = {(12, 768): "ernie-m-base", (24, 1024): "ernie-m-large"}


def paper_reference(num_layers, hidden_size, task_type):
    """The paper's accuracies (as fractions) for a model of this shape and setting, or None."""
    model = ARCHITECTURES.get((num_layers, hidden_size))
    accuracy = PAPER_ACCURACY.get((model, task_type))
    return None if accuracy is None else (model, {lang: value / 100 for lang, value in zip(XNLI_LANGUAGES, accuracy)})


def table_row(name, accuracy_by_language):
    cells = [f"{100 * accuracy_by_language[lang]:.1f}" for lang in XNLI_LANGUAGES]
    return f"| {name} | " + " | ".join([*cells, f"{100 * average_accuracy(accuracy_by_language):.1f}"]) + " |"


def format_results_table(rows):
    """A Markdown table of accuracies in percent, one decimal, languages in the paper's order;
    `rows` maps a row name to {language: accuracy}."""
    header = "| Model | " + " | ".join(XNLI_LANGUAGES) + " | Avg |"
    rule = "|" + "---|" * (len(XNLI_LANGUAGES) + 2)
    return "\n".join([header, rule, *(table_row(name, accuracy) for name, accuracy in rows.items())])


def plot_results(path, title, accuracy_by_language, reference=None):
    """Per-language test accuracy as bars, the paper's as markers, saved as a 1200x500 PNG."""
    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # it logs building its font cache
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = np.arange(len(XNLI_LANGUAGES) + 1)
    labels = [*XNLI_LANGUAGES, "avg"]
    values = [100 * accuracy_by_language[lang] for lang in XNLI_LANGUAGES]
    values.append(100 * average_accuracy(accuracy_by_language))
    figure, axes = plt.subplots(figsize=(12, 5), dpi=100)
    axes.bar(positions, values, color="#4c72b0", label="this run")
    for position, value in zip(positions, values):
        axes.text(position, value - 4, f"{value:.1f}", ha="center", fontsize=8, color="white")
    if reference is not None:
        reference_name, reference_accuracy = reference
        reference_values = [100 * reference_accuracy[lang] for lang in XNLI_LANGUAGES]
        reference_values.append(100 * average_accuracy(reference_accuracy))
        axes.plot(positions, reference_values, "D", color="#dd8452", label=f"{reference_name}, paper")
    axes.set_xticks(positions, labels)
    axes.set_ylim(0, 105)
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(title)
    axes.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def format_evaluation(split, step, result):
    """One log line of an EvaluationResult: the average and every language, in percent."""
    languages = " ".join(f"{lang} {100 * result.accuracy[lang]:.1f}" for lang in XNLI_LANGUAGES)
    return f"{split} accuracy at step {step}: avg {100 * result.average:.2f} | {languages}"


def report_results(args, model_config, state, dev_result, test_result, runtime_seconds):
    """Print the test table; write results.json, results.md (beside the paper) and results.png."""
    model_name = os.path.basename(os.path.normpath(args.model_name_or_path))
    title = f"XNLI test accuracy (%), {args.task_type}, selected on dev {args.select_on}"
    print(f"{title}:\n{format_results_table({model_name: test_result.accuracy})}", flush=True)

    reference = paper_reference(model_config.num_hidden_layers, model_config.hidden_size, args.task_type)
    reference_rows = {f"{reference[0]} (paper)": reference[1]} if reference else {}
    test_table = format_results_table({model_name: test_result.accuracy, **reference_rows})
    dev_table = format_results_table({model_name: dev_result.accuracy})
    with open(os.path.join(args.output_dir, RESULTS_MARKDOWN_FILE), "w", encoding="utf-8") as file:
        file.write(f"# {title}\n\n{test_table}\n\nDev accuracy (%) of the same checkpoint:\n\n{dev_table}\n")
    plot_results(
        os.path.join(args.output_dir, RESULTS_PLOT_FILE), f"{model_name}: {title}", test_result.accuracy, reference
    )

    write_json_atomically(
        os.path.join(args.output_dir, RESULTS_FILE),
        {
            "model": args.model_name_or_path,
            "task_type": args.task_type,
            "select_on": args.select_on,
            "checkpoint": state.best_checkpoint or args.model_name_or_path,
            "global_step": state.global_step,
            "runtime_seconds": runtime_seconds,
            "dev_accuracy": {**dev_result.accuracy, "avg": dev_result.average},
            "test_accuracy": {**test_result.accuracy, "avg": test_result.average},
            "dev_loss": dev_result.loss,
            "test_loss": test_result.loss,
            "dev_history": state.dev_history,
            "args": vars(args),
        },
    )
