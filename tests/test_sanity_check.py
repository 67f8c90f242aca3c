"""README's first command: an offline sanity run on synthetic data, the same table every time."""

import contextlib
import io

import sanity_check

from conftest import read_results, run_script


def table_row(stdout):
    return next(line for line in stdout.splitlines() if line.startswith("| tiny-random-ernie-m |"))


def test_the_sanity_run_learns_the_synthetic_task_in_every_language_and_repeats_exactly(tmp_path):
    result = run_script("--output_dir", tmp_path / "first", script="sanity_check.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SYNTHETIC data" in result.stdout
    accuracy = read_results(tmp_path / "first" / "run")["test_accuracy"]
    assert accuracy["avg"] >= 80 and min(accuracy.values()) >= 60

    # The same seed on the same machine and thread count: the same table, to the last digit.
    again = io.StringIO()
    with contextlib.redirect_stdout(again), contextlib.redirect_stderr(io.StringIO()):
        sanity_check.main(["--output_dir", str(tmp_path / "second")])
    assert table_row(again.getvalue()) == table_row(result.stdout)
    assert read_results(tmp_path / "second" / "run")["test_accuracy"] == accuracy
