"""Checks on the real XNLI files, when XNLI_DIR points at them (CI sets it to ../shared/xnli)."""

import json
import os
from collections import Counter

import pytest
from conftest import XNLI_DIR, run_script

from data import read_eval_split, read_train_split, xnli_file_paths
from synthetic import build_tiny_ernie_m
from utils import XNLI_LANGUAGES, available_cpu_cores

pytestmark = pytest.mark.skipif(
    not (XNLI_DIR and os.path.isdir(XNLI_DIR)), reason="set XNLI_DIR to a folder with the real XNLI release files"
)


@pytest.mark.parametrize("split, pairs_per_language", [("dev", 2490), ("test", 5010)])
def test_every_language_has_all_pairs_with_balanced_labels(split, pairs_per_language):
    eval_file = read_eval_split(xnli_file_paths(XNLI_DIR, [])[split])
    assert list(eval_file.pairs_by_language) == list(XNLI_LANGUAGES)
    for lang, pairs in eval_file.pairs_by_language.items():
        assert len(pairs) == pairs_per_language, lang
        assert Counter(pair.label for pair in pairs) == {label: pairs_per_language // 3 for label in range(3)}, lang


def test_english_training_file_reads_with_contradictory_mapped():
    train_file = read_train_split(xnli_file_paths(XNLI_DIR, ["en"])["train"])
    pairs = train_file.pairs_by_language["en"]
    assert len(pairs) + train_file.num_skipped == 15001
    assert set(Counter(pair.label for pair in pairs)) == {0, 1, 2}


@pytest.fixture(scope="module")
def real_text_model_dir(tmp_path_factory):
    """A tiny ErnieM whose tokenizer was trained on XNLI text of all 15 languages."""
    text_file = tmp_path_factory.mktemp("real-text") / "text.txt"
    dev = read_eval_split(xnli_file_paths(XNLI_DIR, [])["dev"]).pairs_by_language
    lines = [text for lang in XNLI_LANGUAGES for pair in dev[lang][:400] for text in pair[:2]]
    text_file.write_text("\n".join(lines), encoding="utf-8")
    return build_tiny_ernie_m(str(tmp_path_factory.mktemp("real-tiny")), str(text_file), vocab_size=3000)


def test_a_short_training_run_on_real_data_completes(tmp_path, real_text_model_dir):
    result = run_script("--task_type", "cross-lingual-transfer", "--model_name_or_path", real_text_model_dir,
                        "--output_dir", tmp_path, "--data_dir", XNLI_DIR, "--device", "cpu", "--max_steps", 40,
                        "--save_steps", 40, "--batch_size", 32, "--eval_batch_size", 256, "--max_seq_length", 128,
                        "--learning_rate", "1e-3", "--logging_steps", 20, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "dev: 37350 pairs in 15 language(s)" in result.stderr
    assert "test: 75150 pairs in 15 language(s)" in result.stderr
    with open(tmp_path / "results.json", encoding="utf-8") as file:
        results = json.load(file)
    assert set(results["test_accuracy"]) == {*XNLI_LANGUAGES, "avg"}
    assert all(0 <= accuracy <= 1 for accuracy in results["test_accuracy"].values())
    print(result.stdout)


def test_the_benchmark_compares_both_settings_on_real_lengths(real_text_model_dir):
    result = run_script("--xnli_dir", XNLI_DIR, "--model", real_text_model_dir, "--device", "cpu",
                        "--train_steps", 2, "--eval_batches", 2, script="benchmark.py", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("command: python benchmark.py --xnli_dir")
    header, *rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
    table = {row[0]: dict(zip(header, row)) for row in rows}
    assert list(table) == ["upstream-style", "project", "project / upstream"]
    upstream, project = table["upstream-style"], table["project"]
    for padding in ("training computed/real tokens", "evaluation computed/real tokens"):
        assert 1 <= float(project[padding]) < float(upstream[padding])
    assert (upstream["CPU threads"], project["CPU threads"]) == ("1", str(available_cpu_cores()))
    assert table["project / upstream"]["test evaluation s"].endswith("x faster")
    assert "matmul peak:" in result.stdout
