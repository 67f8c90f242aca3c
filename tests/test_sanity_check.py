"""README's first command: an offline sanity run on synthetic data, the same table every time."""

import contextlib
import io

import pytest

import sanity_check

from conftest import last_line, read_results, run_script


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


def test_an_output_dir_that_cannot_be_created_is_one_line(tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SystemExit) as exit:
        sanity_check.main(["--output_dir", str(tmp_path / "a-file")])
    assert exit.value.code == 2
    assert last_line(capsys.readouterr().err) == (
        f"sanity_check.py: error: --output_dir {tmp_path / 'a-file'}: cannot create it (File exists)"
    )
