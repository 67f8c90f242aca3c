"""compare.py: rows of seeds from different models, intervals, paired tests, and its refusals;
test_predictions.tsv, which it reads."""

import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from test_real_faults import output_dir_on_a_full_disk

import compare as compare_script
from ernie_m_xnli.evaluation.predictions import read_test_predictions
from utils import LABELS, XNLI_LANGUAGES

from conftest import REPO_ROOT, cpu_run, fixture_dir, flags, last_line, png_size, read_results, run_main, run_script

COLUMNS = (*XNLI_LANGUAGES, "avg")
SHORT_RUN = dict(
    max_steps=12,
    save_steps=12,
    learning_rate="1e-3",
    layerwise_decay="1.0",
    max_seq_length=48,
    logging_steps=12,
    disable_tqdm=True,
)


@pytest.fixture(scope="module")
def model_runs(tmp_path_factory, tiny_model_dir, xnli_dir):
    """{name: [run directory per seed]} of two tiny models (ERNIE-M, BERT) with seeds 1 and 2."""
    parent = tmp_path_factory.mktemp("compare")
    models = {"ernie": tiny_model_dir, "bert": fixture_dir("bert")}
    runs = {}
    for name, model_dir in models.items():
        for seed in (1, 2):
            output_dir = parent / f"{name}-seed{seed}"
            code, _, stderr = run_main(*flags(**cpu_run(model_dir, xnli_dir, output_dir, seed=seed, **SHORT_RUN)))
            assert code == 0, stderr
            runs.setdefault(name, []).append(output_dir)
    return runs


def row(name, run_dirs):
    return f"{name}={','.join(map(str, run_dirs))}"


def compare(*rows, output_dir):
    result = run_script(*rows, "--output_dir", output_dir, script="compare.py")
    return result, (output_dir / "comparison.json").exists() and json.loads(
        (output_dir / "comparison.json").read_text()
    )


def test_test_predictions_give_the_accuracies_of_results_json(model_runs):
    for run_dir in [run for runs in model_runs.values() for run in runs]:
        predictions = read_test_predictions(run_dir / "test_predictions.tsv")
        results = read_results(run_dir)
        assert list(predictions) == list(XNLI_LANGUAGES)
        for lang, (gold, predicted) in predictions.items():
            assert 100 * np.mean(gold == predicted) == pytest.approx(results["test_accuracy"][lang])
        header, first = (run_dir / "test_predictions.tsv").read_text().splitlines()[:2]
        assert header.split("\t") == ["language", "index", "gold", "predicted", *(f"p_{x}" for x in LABELS)]
        assert first.split("\t")[:2] == ["en", "0"]
        assert sum(float(p) for p in first.split("\t")[4:]) == pytest.approx(1, abs=1e-5)


def test_results_json_names_the_model_and_where_it_ran(model_runs, tiny_model_dir):
    ernie, bert = read_results(model_runs["ernie"][0]), read_results(model_runs["bert"][0])
    assert (ernie["model_name"], ernie["model_type"]) == (os.path.basename(tiny_model_dir), "ernie_m")
    assert (bert["model_name"], bert["model_type"]) == ("bert", "bert")
    # A checkpoint of the run keeps the pretrained model's name.
    assert json.loads(open(os.path.join(bert["checkpoint"], "config.json")).read())["fine_tuned_from"] == "bert"
    environment = ernie["environment"]
    assert set(environment) == {"cpu", "amx", "avx512_bf16", "onednn_max_cpu_isa", "gpu", "versions"}
    assert environment["gpu"] is None and environment["onednn_max_cpu_isa"] is None
    # Family and model numbers: a virtual machine's bare "AMD EPYC" names several kinds of CPU.
    first_cpu = open("/proc/cpuinfo", encoding="utf-8").read().split("\n\n")[0].splitlines()
    cpuinfo = {name.strip(): value.strip() for name, _, value in (line.partition(":") for line in first_cpu)}
    assert environment["cpu"] == f"{cpuinfo['model name']} family {cpuinfo['cpu family']} model {cpuinfo['model']}"
    assert set(environment["versions"]) == {"python", "paddle", "paddlenlp", "suite"}
    assert environment["versions"]["python"] == platform.python_version()
    assert ernie["test_file"]["sha256"] == bert["test_file"]["sha256"] and len(ernie["test_file"]["sha256"]) == 64
    assert ernie["train_examples_per_second"] > 0


def test_the_suite_names_its_commit_in_a_checkout_and_in_files_git_archive_wrote(tmp_path):
    def suite_commit(directory):
        program = "import utils; print(utils.suite_commit())"
        return subprocess.run([sys.executable, "-c", program], cwd=directory, capture_output=True, text=True).stdout

    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("the suite is not a git checkout here")
    assert suite_commit(REPO_ROOT).startswith(head.stdout.strip())
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as files:
        files.extractall(tmp_path, filter="data")
    assert suite_commit(tmp_path) == f"{head.stdout.strip()}+archive\n"


def test_rows_hold_the_runs_means_and_stds_with_intervals_around_them(model_runs, tmp_path):
    result, comparison = compare(
        row("ernie", model_runs["ernie"]), row("bert", model_runs["bert"]), output_dir=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert [r["name"] for r in comparison["rows"]] == ["ernie", "bert"]
    assert comparison["rows"][0]["model_type"] == "ernie_m" and comparison["rows"][1]["model_type"] == "bert"
    for summary in comparison["rows"]:
        results = [read_results(run) for run in model_runs[summary["name"]]]
        assert summary["seeds"] == [1, 2]
        for column in COLUMNS:
            values = [run["test_accuracy"][column] for run in results]
            cell = summary["test"][column]
            assert cell["mean"] == pytest.approx(np.mean(values))
            assert cell["std"] == pytest.approx(np.std(values, ddof=1))
            assert cell["ci95"][0] <= cell["mean"] <= cell["ci95"][1]
            assert cell["ci95"][0] < cell["ci95"][1]
    paired = {p["language"]: p for p in comparison["paired"]}
    assert set(paired) == set(COLUMNS) and all(p["a"] == "ernie" and p["b"] == "bert" for p in paired.values())
    bert, ernie = comparison["rows"][1]["test"], comparison["rows"][0]["test"]
    for column in COLUMNS:
        assert paired[column]["difference"] == pytest.approx(bert[column]["mean"] - ernie[column]["mean"])
        assert paired[column]["seeds"] == [1, 2]
    markdown = (tmp_path / "comparison.md").read_text()
    avg = comparison["rows"][0]["test"]["avg"]
    assert f"{avg['mean']:.1f} ±{avg['std']:.1f}" in markdown
    assert png_size(tmp_path / "comparison.png") == (1200, 500)


def test_a_row_compared_with_itself_differs_by_0_with_p_value_1(model_runs, tmp_path):
    result, comparison = compare(
        row("a", model_runs["ernie"]), row("b", reversed(model_runs["ernie"])), output_dir=tmp_path
    )
    assert result.returncode == 0, result.stderr
    for paired in comparison["paired"]:
        assert paired["difference"] == 0 and paired["p_value"] == 1


def test_a_copy_whose_predictions_differ_on_many_pairs_is_flagged_over_the_test_pairs(model_runs, tmp_path):
    original = model_runs["ernie"][0]
    better = tmp_path / "better"
    shutil.copytree(original, better)
    lines = (better / "test_predictions.tsv").read_text().splitlines()
    corrected = [lines[0]]
    for line in lines[1:]:
        fields = line.split("\t")
        corrected.append("\t".join([*fields[:3], fields[2], *fields[4:]]))  # predicted := gold
    (better / "test_predictions.tsv").write_text("\n".join(corrected) + "\n")
    result, comparison = compare(row("run", [original]), row("corrected", [better]), output_dir=tmp_path / "out")
    assert result.returncode == 0, result.stderr
    avg = next(p for p in comparison["paired"] if p["language"] == "avg")
    assert avg["difference"] == pytest.approx(100 - comparison["rows"][0]["test"]["avg"]["mean"])
    # One run a row: the pairs are all the evidence there is, and the table says so.
    assert avg["p_value"] < 0.05 and avg["unit"] == "test pairs"
    assert f"{avg['difference']:+.1f}†" in (tmp_path / "out" / "comparison.md").read_text()


def test_runs_on_other_machines_or_versions_are_named(model_runs, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(model_runs["ernie"][0], elsewhere)
    results = read_results(elsewhere)
    results["environment"].update(
        cpu="Intel(R) Xeon(R) Platinum 8480+", amx=False, avx512_bf16=False, onednn_max_cpu_isa="AVX2"
    )
    results["environment"]["versions"]["paddle"] = "3.0.0"
    paddlenlp = results["environment"]["versions"].pop("paddlenlp")
    (elsewhere / "results.json").write_text(json.dumps(results))
    result, comparison = compare(row("here", model_runs["ernie"][:1]), row("there", [elsewhere]), output_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    notes = " ".join(comparison["machines"])
    assert "there" in notes and "Intel(R) Xeon(R) Platinum 8480+" in notes and "paddle 3.3.1 -> 3.0.0" in notes
    assert f"paddlenlp {paddlenlp} -> not recorded" in notes
    assert "Intel(R) Xeon(R) Platinum 8480+ (no AMX / AVX512-BF16, oneDNN limited to AVX2) vs " in notes
    assert "Intel(R) Xeon(R) Platinum 8480+" in (tmp_path / "comparison.md").read_text()


def test_runs_without_test_predictions_or_on_other_test_pairs_are_refused(
    model_runs, tiny_model_dir, xnli_dir, tmp_path
):
    without = tmp_path / "without"
    shutil.copytree(model_runs["ernie"][0], without)
    (without / "test_predictions.tsv").unlink()
    result, _ = compare(row("a", model_runs["ernie"]), row("b", [without]), output_dir=tmp_path / "out")
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        f"compare.py: error: {without}: no test_predictions.tsv (a finished run of this suite writes it)"
    )

    fewer = tmp_path / "fewer"
    code, _, stderr = run_main(
        *flags(**cpu_run(tiny_model_dir, xnli_dir, fewer, eval_pairs_per_language=10, **SHORT_RUN))
    )
    assert code == 0, stderr
    assert read_results(fewer)["eval_pairs_per_language"] == 10
    assert "first 10 pairs per language" in (fewer / "results.md").read_text().splitlines()[0]
    result, _ = compare(row("a", model_runs["ernie"]), row("b", [fewer]), output_dir=tmp_path / "out")
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        f"compare.py: error: {fewer}: other en test pairs than {model_runs['ernie'][0]} (10 vs 24 pairs, or other "
        "gold labels): compare runs evaluated on the same test pairs"
    )

    other_file = tmp_path / "other-file"
    shutil.copytree(model_runs["ernie"][1], other_file)
    results = read_results(other_file)
    results["test_file"] = {"path": "/elsewhere/xnli.test.tsv", "sha256": "0" * 64}
    (other_file / "results.json").write_text(json.dumps(results))
    result, _ = compare(row("a", model_runs["ernie"][:1]), row("b", [other_file]), output_dir=tmp_path / "out")
    assert result.returncode == 2
    assert last_line(result.stderr).startswith(f"compare.py: error: {other_file}: evaluated on another test file than")


def test_a_row_named_twice_a_run_given_twice_and_runs_that_cannot_be_read_are_refused(model_runs, tmp_path, capsys):
    first, second = model_runs["ernie"][:2]
    unreadable = tmp_path / "unreadable"
    shutil.copytree(first, unreadable)
    (unreadable / "results.json").write_text('{"test_accuracy": ')  # cut off as a full disk cuts it
    missing = tmp_path / "missing"
    expected = {
        (row("a", [first]), row("a", [second])): "two rows are named 'a': each row needs a name of its own",
        (row("a", [first, second, first]),): f"{first}: given twice in row a (a run counts once)",
        (row("a", [first]), row("b", [missing])): f"{missing} (row b): no such directory",
        (row("a", [first]), row("b", [unreadable])): f"{unreadable / 'results.json'}: not JSON (Expecting value: ",
    }
    for rows, error in expected.items():
        with pytest.raises(SystemExit) as exit:
            compare_script.main([*rows, "--output_dir", str(tmp_path / "out")])
        assert exit.value.code == 2
        assert last_line(capsys.readouterr().err).startswith(f"compare.py: error: {error}")
    assert not (tmp_path / "out").exists()


def test_a_full_disk_stops_compare_in_one_line_and_leaves_no_partial_file(model_runs, tmp_path, capsys):
    rows = [row("a", model_runs["ernie"])]
    code, message, left, out = output_dir_on_a_full_disk(tmp_path, capsys, compare_script.main, rows)
    assert (code, left) == (2, [])
    assert message == f"compare.py: error: --output_dir {out}: cannot write its files (No space left on device)"
