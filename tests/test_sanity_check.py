"""README's first command: an offline sanity run on synthetic data."""

import json

from conftest import run_script


def test_the_sanity_run_learns_the_synthetic_task_in_every_language(tmp_path):
    result = run_script("--output_dir", tmp_path, script="sanity_check.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SYNTHETIC data" in result.stdout
    assert "| tiny-random-ernie-m |" in result.stdout
    with open(tmp_path / "run" / "results.json", encoding="utf-8") as file:
        accuracy = json.load(file)["test_accuracy"]
    assert accuracy["avg"] >= 80 and min(accuracy.values()) >= 60
