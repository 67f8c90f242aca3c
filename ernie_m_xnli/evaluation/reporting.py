"""The results: results.json for programs; for people, Markdown tables beside the paper's numbers,
a bar chart and log lines."""

import logging
import os
from dataclasses import dataclass

import numpy as np

from ernie_m_xnli.evaluation.predictions import TEST_PREDICTIONS_FILE, write_test_predictions
from ernie_m_xnli.setup.recipes import MODEL_SIZES
from utils import (
    XNLI_LANGUAGES,
    average_accuracy,
    file_digest,
    machine_description,
    write_json_atomically,
    written_then_renamed,
)

RESULTS_FILE = "results.json"
RESULTS_MARKDOWN_FILE = "results.md"
RESULTS_PLOT_FILE = "results.png"

# XNLI test accuracy (%) per language reported in the ERNIE-M paper, in XNLI_LANGUAGES order.
# fmt: off
PAPER_ACCURACY = {
    ("ernie-m-base", "cross-lingual-transfer"):
        (85.5, 80.1, 81.2, 79.2, 79.1, 80.4, 78.1, 76.8, 76.3, 78.3, 75.8, 77.4, 72.9, 69.5, 68.8),
    ("ernie-m-large", "cross-lingual-transfer"):
        (89.3, 85.1, 85.7, 84.4, 83.7, 84.5, 82.0, 81.2, 81.2, 81.9, 79.2, 81.0, 78.6, 76.2, 75.4),
    ("ernie-m-base", "translate-train-all"):
        (86.2, 82.5, 83.8, 82.6, 82.4, 83.4, 80.2, 80.6, 80.5, 81.1, 79.2, 80.5, 77.7, 75.0, 73.3),
    ("ernie-m-large", "translate-train-all"):
        (89.5, 86.5, 86.9, 86.1, 86.0, 86.8, 84.1, 83.8, 84.1, 84.5, 82.1, 83.5, 81.1, 79.4, 77.9),
}
# fmt: on


COLUMNS = (*XNLI_LANGUAGES, "avg")


def percent(accuracy_by_language):
    """{language: %, "avg": %} of {language: fraction}."""
    return {
        **{lang: 100 * accuracy_by_language[lang] for lang in XNLI_LANGUAGES},
        "avg": 100 * average_accuracy(accuracy_by_language),
    }


def paper_reference(num_layers, hidden_size, task_type):
    """(model name, {language: %, "avg": %}) of the paper for a model of this shape and setting, or None."""
    size = MODEL_SIZES.get((num_layers, hidden_size))
    accuracy = PAPER_ACCURACY.get((f"ernie-m-{size}", task_type))
    return (
        None
        if accuracy is None
        else (f"ernie-m-{size}", percent({lang: value / 100 for lang, value in zip(XNLI_LANGUAGES, accuracy)}))
    )


def format_results_table(rows):
    """A Markdown table, languages in the paper's order, then the average; `rows` maps a row name
    to {language: %, "avg": %} (one decimal) or {language: text}."""
    header = "| Model | " + " | ".join(XNLI_LANGUAGES) + " | Avg |"
    rule = "|" + "---|" * (len(COLUMNS) + 1)
    lines = [header, rule]
    for name, cells in rows.items():
        texts = [cells[column] if isinstance(cells[column], str) else f"{cells[column]:.1f}" for column in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def plot_results(path, title, values, reference=None, errors=None, label="this run"):
    """Accuracy per language and averaged as bars ({column: %}), with `errors` as error bars and the
    paper's as markers, saved as a 1200x500 PNG."""
    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # it logs building its font cache
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = np.arange(len(COLUMNS))
    heights = [values[column] for column in COLUMNS]
    figure, axes = plt.subplots(figsize=(12, 5), dpi=100)
    yerr = None if errors is None else [errors[column] for column in COLUMNS]
    axes.bar(positions, heights, yerr=yerr, capsize=3, color="#4c72b0", label=label)
    for position, height in zip(positions, heights):
        axes.text(position, height - 4, f"{height:.1f}", ha="center", fontsize=8, color="white")
    if reference is not None:
        reference_name, reference_values = reference
        axes.plot(
            positions,
            [reference_values[column] for column in COLUMNS],
            "D",
            color="#dd8452",
            label=f"{reference_name}, paper",
        )
    axes.set_xticks(positions, COLUMNS)
    axes.set_ylim(0, 105)
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(title)
    axes.legend(loc="lower left")
    figure.tight_layout()
    with written_then_renamed(path) as temporary:
        figure.savefig(temporary)
    plt.close(figure)


def format_evaluation(what, result):
    """One log line of an EvaluationResult: the average and every language, in percent."""
    languages = " ".join(f"{lang} {100 * result.accuracy[lang]:.1f}" for lang in XNLI_LANGUAGES)
    return f"{what}: avg {100 * result.average:.2f} | {languages}"


@dataclass
class SelectedResult:
    """A model chosen for test: the step it was selected at (None without training), its weights'
    directory, and its dev and test EvaluationResults."""

    step: int | None
    checkpoint: str
    dev: object
    test: object


def report_results(args, model_config, state, selected, timing, test_file):
    """Print the test table of the --select_on model; write results.json, results.md (beside the
    paper, with the models of both selection protocols), results.png and test_predictions.tsv (the
    --select_on model's). `selected` maps a selection protocol to its SelectedResult (only
    --select_on's without training); `timing` has the run's runtime_seconds and its training steps'
    train_examples_per_second (all processes; None without training)."""
    model_name = getattr(model_config, "fine_tuned_from", None) or os.path.basename(args.model_name_or_path)
    model_type = getattr(model_config, "model_type", "ernie_m")
    main = selected[args.select_on]
    title = f"XNLI test accuracy (%), {args.task_type}"
    if args.eval_pairs_per_language:
        title += f", first {args.eval_pairs_per_language} pairs per language"
    if main.step is not None:
        title += f", selected on dev {args.select_on} (step {main.step})"
    print(f"{title}:\n{format_results_table({model_name: percent(main.test.accuracy)})}", flush=True)

    reference = None
    if model_type == "ernie_m" and not args.eval_pairs_per_language:  # the paper's numbers: ERNIE-M's, all pairs
        reference = paper_reference(model_config.num_hidden_layers, model_config.hidden_size, args.task_type)
    write_test_predictions(os.path.join(args.output_dir, TEST_PREDICTIONS_FILE), main.test.logits, main.test.labels)
    write_results_markdown(args.output_dir, title, model_name, selected, reference)
    plot_path = os.path.join(args.output_dir, RESULTS_PLOT_FILE)
    plot_results(plot_path, f"{model_name}: {title}", percent(main.test.accuracy), reference)
    protocols = {}
    if main.step is not None:
        for protocol, result in selected.items():
            protocols[f"test_accuracy_select_{protocol}"] = percent(result.test.accuracy)
            protocols[f"dev_accuracy_select_{protocol}"] = percent(result.dev.accuracy)
        protocols["selected_steps"] = {protocol: result.step for protocol, result in selected.items()}
    history = [{**entry, "avg": 100 * entry["avg"], "en": 100 * entry["en"]} for entry in state.dev_history]
    write_json_atomically(
        os.path.join(args.output_dir, RESULTS_FILE),
        {
            "model": args.model_name_or_path,
            "model_name": model_name,
            "model_type": model_type,
            "task_type": args.task_type,
            "train_languages": args.train_languages,
            "eval_pairs_per_language": args.eval_pairs_per_language,
            "test_file": {"path": os.path.abspath(test_file), "sha256": file_digest(test_file)},
            "environment": environment(args.device),
            "select_on": args.select_on,
            "checkpoint": main.checkpoint,
            "selected_step": main.step,
            "global_step": state.global_step,
            **timing,
            "dev_accuracy": percent(main.dev.accuracy),
            "test_accuracy": percent(main.test.accuracy),
            "dev_loss": main.dev.loss,
            "test_loss": main.test.loss,
            **protocols,
            "dev_history": history,
            "train_loss_history": state.loss_history,
            "paper": reference and {"model": reference[0], "accuracy": reference[1]},
            "recipe": args.resolved_recipe,
            "args": vars(args),
        },
    )


def environment(device):
    """utils.machine_description of this run: the GPU's name where it ran on one, Paddle's and PaddleNLP's versions."""
    import paddle
    import paddlenlp

    gpu = paddle.device.cuda.get_device_name() if device == "gpu" else None
    return machine_description(gpu, paddle=paddle.__version__, paddlenlp=paddlenlp.__version__)


def write_results_markdown(output_dir, title, model_name, selected, reference):
    """results.md: the test table beside the paper's row, then the dev table of the same models."""
    if len(selected) == 1:
        rows = {model_name: next(iter(selected.values()))}
    else:
        rows = {
            f"{model_name}, selected on dev {protocol} (step {result.step})": result
            for protocol, result in selected.items()
        }
    reference_rows = {f"{reference[0]} (paper)": reference[1]} if reference else {}
    test_table = format_results_table(
        {**{name: percent(result.test.accuracy) for name, result in rows.items()}, **reference_rows}
    )
    dev_table = format_results_table({name: percent(result.dev.accuracy) for name, result in rows.items()})
    markdown_path = os.path.join(output_dir, RESULTS_MARKDOWN_FILE)
    with written_then_renamed(markdown_path) as temporary, open(temporary, "w", encoding="utf-8") as file:
        file.write(f"# {title}\n\n{test_table}\n\nDev accuracy (%) of the same models:\n\n{dev_table}\n")
