"""aggregate.py: several seeds summarized as mean, std, min and max, beside the paper."""

import json
import shutil

import numpy as np
import pytest
from test_real_faults import output_dir_on_a_full_disk

import aggregate
from ernie_m_xnli.evaluation.reporting import COLUMNS

from conftest import cpu_run, flags, last_line, png_size, read_results, run_main, run_script

SHORT_RUN = dict(
    max_steps=30,
    eval_steps=10,
    save_steps=30,
    learning_rate="1e-3",
    layerwise_decay="1.0",
    flush_denormals="false",
    logging_steps=30,
)


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory, tiny_model_dir, xnli_dir):
    """Three finished runs that differ only in their seed, under one parent folder."""
    parent = tmp_path_factory.mktemp("seeds")
    for seed in (1, 2, 3):
        code, _, stderr = run_main(
            *flags(**cpu_run(tiny_model_dir, xnli_dir, parent / f"seed{seed}", seed=seed, **SHORT_RUN))
        )
        assert code == 0, stderr
    return parent


def test_the_summary_holds_the_statistics_of_the_runs_results(seed_runs):
    runs = [seed_runs / f"seed{seed}" for seed in (1, 2, 3)]
    result = run_script(*runs, script="aggregate.py")
    assert result.returncode == 0, result.stderr
    summary = json.loads((seed_runs / "summary.json").read_text())
    assert summary["runs"] == [str(run) for run in runs] and summary["seeds"] == [1, 2, 3] and summary["n"] == 3
    results = [read_results(run) for run in runs]
    for summary_key, results_key in [
        ("test_accuracy", "test_accuracy_select_avg"),
        ("test_accuracy_select_en", "test_accuracy_select_en"),
        ("dev_accuracy", "dev_accuracy_select_avg"),
    ]:
        for column in COLUMNS:
            values = [run_results[results_key][column] for run_results in results]
            assert summary[summary_key]["mean"][column] == pytest.approx(np.mean(values))
            assert summary[summary_key]["std"][column] == pytest.approx(np.std(values, ddof=1))
            assert summary[summary_key]["min"][column] == min(values)
            assert summary[summary_key]["max"][column] == max(values)
    mean, std = summary["test_accuracy"]["mean"]["avg"], summary["test_accuracy"]["std"]["avg"]
    assert f"{mean:.1f} ± {std:.1f}" in (seed_runs / "summary.md").read_text()
    assert png_size(seed_runs / "summary.png") == (1200, 500)
    assert summary["machines"] == [] and "Note:" not in result.stdout  # one machine, one version


def test_runs_with_other_settings_are_refused_naming_the_arguments(seed_runs, tiny_model_dir, xnli_dir, tmp_path):
    other = tmp_path / "other"
    code, _, stderr = run_main(*flags(**cpu_run(tiny_model_dir, xnli_dir, other, **{**SHORT_RUN, "max_steps": 20})))
    assert code == 0, stderr
    result = run_script(seed_runs / "seed1", other, "--output_dir", tmp_path, script="aggregate.py")
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        f"aggregate.py: error: {other} differs from {seed_runs / 'seed1'} in more than the seed: --max_steps (30 vs 20)"
    )


def test_an_unfinished_run_is_an_error_unless_skipped(seed_runs, tmp_path):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    result = run_script(seed_runs / "seed1", unfinished, "--output_dir", tmp_path, script="aggregate.py")
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        f"aggregate.py: error: {unfinished}: no results.json, the run has not finished (or pass --skip_unfinished)"
    )
    skipped = run_script(
        seed_runs / "seed1", unfinished, "--output_dir", tmp_path, "--skip_unfinished", script="aggregate.py"
    )
    assert skipped.returncode == 0, skipped.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["n"] == 1 and summary["test_accuracy"]["std"]["avg"] is None


def test_a_run_of_the_transformers_peer_is_refused_pointing_to_compare_py(seed_runs, tmp_path):
    # benchmarks/hf_finetune_peer.py tests its last model only: no selection on dev to summarize.
    peer = tmp_path / "peer"
    peer.mkdir()
    results = read_results(seed_runs / "seed1")
    (peer / "results.json").write_text(json.dumps({key: results[key] for key in ("args", "test_accuracy")}))
    result = run_script(seed_runs / "seed1", peer, "--output_dir", tmp_path, script="aggregate.py")
    assert result.returncode == 2
    assert last_line(result.stderr).startswith(
        f"aggregate.py: error: {peer / 'results.json'}: no test_accuracy_select_avg"
    )
    assert "compare.py NAME=RUN,RUN,... tabulates runs of benchmarks/hf_finetune_peer.py" in last_line(result.stderr)


def test_runs_that_differ_only_in_flags_that_change_no_result_are_summarized(seed_runs, tmp_path):
    # Another evaluation batch size, exports, cache: the same training, so seeds of one setting.
    relabelled = tmp_path / "seed3-elsewhere"
    shutil.copytree(seed_runs / "seed3", relabelled)
    results = read_results(relabelled)
    results["args"].update(eval_batch_size=7, export_hf_dir="hf", export_model_dir="inference", cache_dir="")
    (relabelled / "results.json").write_text(json.dumps(results))
    result = run_script(seed_runs / "seed1", relabelled, "--output_dir", tmp_path, script="aggregate.py")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "summary.json").read_text())["n"] == 2


def test_seeds_run_on_another_machine_or_other_versions_are_summarized_and_named(seed_runs, tmp_path, capsys):
    elsewhere = tmp_path / "seed3-elsewhere"
    shutil.copytree(seed_runs / "seed3", elsewhere)
    results = read_results(elsewhere)
    here = results["environment"].copy()
    results["environment"].update(cpu="Intel(R) Xeon(R) Platinum 8480+", amx=True, avx512_bf16=True)
    results["environment"]["versions"] = {**here["versions"], "paddle": "3.0.0"}
    (elsewhere / "results.json").write_text(json.dumps(results))
    aggregate.main([str(seed_runs / "seed1"), str(seed_runs / "seed2"), str(elsewhere), "--output_dir", str(tmp_path)])
    stdout = capsys.readouterr().out
    machine, versions = json.loads((tmp_path / "summary.json").read_text())["machines"]
    xeon = "Intel(R) Xeon(R) Platinum 8480+ (amx, avx512_bf16)"
    assert machine.startswith(f"seeds ({elsewhere}) ran on another machine: {xeon} vs {here['cpu']} (")
    assert versions == f"seeds ({elsewhere}) ran other versions: paddle {here['versions']['paddle']} -> 3.0.0"
    for note in (machine, versions):
        assert f"Note: {note}." in stdout and f"Note: {note}." in (tmp_path / "summary.md").read_text()


def test_a_run_given_twice_and_runs_that_cannot_be_read_are_refused(seed_runs, tmp_path, capsys):
    unreadable = tmp_path / "unreadable"
    shutil.copytree(seed_runs / "seed2", unreadable)
    (unreadable / "results.json").write_text('{"test_accuracy": ')  # cut off as a full disk cuts it
    first, missing = seed_runs / "seed1", tmp_path / "missing"
    expected = {
        (first, seed_runs / "seed2", first): f"{first}: given twice (a run counts once)",
        (first, missing): f"{missing}: no such directory",
        (first, unreadable): f"{unreadable / 'results.json'}: not JSON (Expecting value: ",
    }
    for runs, error in expected.items():
        with pytest.raises(SystemExit) as exit:
            aggregate.main([*map(str, runs), "--output_dir", str(tmp_path / "out")])
        assert exit.value.code == 2
        assert last_line(capsys.readouterr().err).startswith(f"aggregate.py: error: {error}")
    assert not (tmp_path / "out").exists()


def test_a_full_disk_stops_aggregate_in_one_line_and_leaves_no_partial_file(seed_runs, tmp_path, capsys):
    runs = [str(seed_runs / "seed1"), str(seed_runs / "seed2")]
    code, message, left, out = output_dir_on_a_full_disk(tmp_path, capsys, aggregate.main, runs)
    assert (code, left) == (2, [])
    assert message == f"aggregate.py: error: --output_dir {out}: cannot write its files (No space left on device)"
