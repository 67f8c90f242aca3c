"""Checks on the real XNLI files, when XNLI_DIR points at them (CI sets it to ../shared/xnli)."""

import os
from collections import Counter

import pytest

from ernie_m_xnli.data.synthetic import build_tiny_ernie_m
from ernie_m_xnli.data.xnli_files import read_eval_split, read_train_split, xnli_file_paths
from utils import XNLI_LANGUAGES, available_cpu_cores

from conftest import XNLI_DIR, cpu_run, read_results, run_script

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


def first_rows(source, target, rows_per_language):
    """Copy the header and the first rows of each language of an XNLI file (read by path, written to a
    temporary folder: the data never enters the repository)."""
    lines = open(source, encoding="utf-8", newline="").read().rstrip("\n").split("\n")  # not splitlines(): U+2028
    language_column = lines[0].split("\t").index("language") if "language" in lines[0].split("\t") else None
    kept, counts = [lines[0]], Counter()
    for line in lines[1:]:
        language = line.split("\t")[language_column] if language_column is not None else None
        if counts[language] < rows_per_language:
            kept.append(line)
            counts[language] += 1
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "w", encoding="utf-8") as file:
        file.write("\n".join(kept) + "\n")


def test_real_text_of_every_language_trains_and_evaluates(tmp_path, real_text_model_dir):
    """The whole pipeline on real rows: English XNLI-MT training, dev and test in all 15 scripts
    (the full files' counts are checked above, by the reader)."""
    paths = xnli_file_paths(XNLI_DIR, ["en"])
    data_dir = tmp_path / "xnli"
    for split in ("dev", "test"):
        first_rows(paths[split], data_dir / "XNLI-1.0" / f"xnli.{split}.tsv", rows_per_language=40)
    first_rows(paths["train"]["en"], data_dir / "XNLI-MT-1.0" / "multinli" / "multinli.train.en.tsv", 640)
    training = dict(max_steps=20, save_steps=10, batch_size=32, max_seq_length=128, learning_rate="1e-3")
    result = run_script(**cpu_run(real_text_model_dir, data_dir, tmp_path / "run", **training))
    assert result.returncode == 0, result.stderr
    assert "train: 640 pairs in 1 language(s)" in result.stderr
    assert "dev: 600 pairs in 15 language(s)" in result.stderr
    results = read_results(tmp_path / "run")
    assert set(results["test_accuracy"]) == {*XNLI_LANGUAGES, "avg"}
    assert [entry["step"] for entry in results["dev_history"]] == [10, 20]
    assert set(results["selected_steps"].values()) <= {10, 20}
    assert all(0 <= accuracy <= 100 for accuracy in results["test_accuracy"].values())


def test_the_benchmark_compares_the_settings_on_real_lengths(real_text_model_dir):
    sample = dict(
        xnli_dir=XNLI_DIR,
        model=real_text_model_dir,
        device="cpu",
        train_steps=2,
        eval_batches=2,
        train_pairs=500,
        test_pairs=500,
    )
    result = run_script(**sample, script="benchmark.py", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("command: python benchmark.py --xnli_dir")
    header, *rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("| ")]
    table = {row[0]: dict(zip(header, row)) for row in rows}
    assert list(table) == [
        "upstream-style",
        "project",
        "upstream-cpu-defaults",
        "project / upstream-style (equal settings)",
        "upstream-style / upstream-cpu-defaults",
    ]
    upstream, project, cpu_defaults = table["upstream-style"], table["project"], table["upstream-cpu-defaults"]
    for padding in ("training computed/real tokens", "evaluation computed/real tokens"):
        assert 1 <= float(project[padding]) < float(upstream[padding])
    cores = str(available_cpu_cores())
    assert [row["CPU threads"] for row in (upstream, project, cpu_defaults)] == [cores, cores, "1"]
    assert [row["denormals"] for row in (upstream, project, cpu_defaults)] == ["flushed", "flushed", "kept"]
    assert float(project["of which export + predictor s"]) > 0 == float(upstream["of which export + predictor s"])
    assert table["project / upstream-style (equal settings)"]["test evaluation s"].endswith("x faster")
    assert "matmul peak:" in result.stdout
