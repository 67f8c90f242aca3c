"""Per-pair prediction files: predictions.tsv of --predict_file, and test_predictions.tsv, which a
run writes for its selected model and compare.py reads. No Paddle here: transformers' peer
(benchmarks/hf_finetune_peer.py) writes test_predictions.tsv with the same function."""

import numpy as np

from ernie_m_xnli.data.xnli_files import NO_LABEL
from utils import LABELS, XNLI_LANGUAGES, written_then_renamed

TEST_PREDICTIONS_FILE = "test_predictions.tsv"
TEST_PREDICTION_COLUMNS = ("language", "index", "gold", "predicted", *(f"p_{label}" for label in LABELS))


def probabilities_of(logits):
    """The softmax of each row of `logits`."""
    logits = np.asarray(logits, dtype=np.float64)
    exponentials = np.exp(logits - logits.max(1, keepdims=True))
    return exponentials / exponentials.sum(1, keepdims=True)


def write_predictions(path, pairs, languages, logits):
    """One TSV row per pair: its language (`languages`, where the input has a language column), the
    text, the predicted label, the three probabilities, and the gold label where the input had one."""
    with_language = any(lang is not None for lang in languages)
    columns = ["premise", "hypothesis", "prediction", *(f"p_{label}" for label in LABELS), "label"]
    with written_then_renamed(path) as temporary, open(temporary, "w", encoding="utf-8") as file:
        file.write("\t".join(["language", *columns] if with_language else columns) + "\n")
        for pair, lang, row in zip(pairs, languages, probabilities_of(logits)):
            gold = "" if pair.label == NO_LABEL else LABELS[pair.label]
            cells = [pair.premise, pair.hypothesis, LABELS[int(row.argmax())], *(f"{p:.6f}" for p in row), gold]
            file.write("\t".join([lang or "", *cells] if with_language else cells) + "\n")


def write_test_predictions(path, logits_by_language, labels_by_language):
    """One row per test pair, languages in XNLI's order: its language, its index among that language's
    pairs in the test file, the gold and predicted labels, and the three probabilities."""
    with written_then_renamed(path) as temporary, open(temporary, "w", encoding="utf-8") as file:
        file.write("\t".join(TEST_PREDICTION_COLUMNS) + "\n")
        for lang in XNLI_LANGUAGES:
            probabilities = probabilities_of(logits_by_language[lang])
            for index, (gold, row) in enumerate(zip(labels_by_language[lang], probabilities)):
                cells = [lang, str(index), LABELS[int(gold)], LABELS[int(row.argmax())], *(f"{p:.6f}" for p in row)]
                file.write("\t".join(cells) + "\n")


def read_test_predictions(path):
    """{language: (gold label ids, predicted label ids)} of a test_predictions.tsv, each in index order."""
    label_ids = {label: index for index, label in enumerate(LABELS)}
    rows_by_language = {}
    with open(path, encoding="utf-8") as file:
        header = file.readline().rstrip("\n").split("\t")
        if tuple(header) != TEST_PREDICTION_COLUMNS:
            raise ValueError(f"{path}:1: expected the columns {' '.join(TEST_PREDICTION_COLUMNS)}")
        for line_number, line in enumerate(file, start=2):
            fields = line.rstrip("\n").split("\t")
            try:
                lang, index, gold, predicted = fields[0], int(fields[1]), label_ids[fields[2]], label_ids[fields[3]]
            except (IndexError, ValueError, KeyError):
                raise ValueError(f"{path}:{line_number}: not a row of {' '.join(TEST_PREDICTION_COLUMNS)}") from None
            rows_by_language.setdefault(lang, []).append((index, gold, predicted))
    result = {}
    for lang, rows in rows_by_language.items():
        rows.sort()
        result[lang] = (np.array([gold for _, gold, _ in rows]), np.array([predicted for _, _, predicted in rows]))
    return result
