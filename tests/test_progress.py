"""Progress bars at a terminal, plain logs elsewhere, and VisualDL scalars."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

from conftest import REPO_ROOT, cpu_run, flags, run_script


def run_at_a_terminal(arguments):
    """Run the script with a 40x150 pseudo-terminal as its stdin, stdout and stderr."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 150, 0, 0))
    command = [sys.executable, os.path.join(REPO_ROOT, "run_classifier.py"), *map(str, arguments)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait() == 0, output.decode(errors="replace")[-3000:]
    return output.decode(errors="replace")


def arguments(model_dir, data_dir, output_dir, **options):
    return flags(**cpu_run(model_dir, data_dir, output_dir, max_steps=40, save_steps=40, logging_steps=20, **options))


def test_progress_bars_show_at_a_terminal_beside_the_log_lines(tmp_path, tiny_model_dir, xnli_dir):
    output = run_at_a_terminal(arguments(tiny_model_dir, xnli_dir, tmp_path, cache_dir=""))
    assert "tokenizing train:" in output and "tokenizing test:" in output
    assert "training: 100%" in output and "40/40" in output and "loss=" in output and "lr=" in output
    assert "examples_per_s=" in output
    assert "evaluating:" in output
    assert "INFO step 20/40, epoch 2, loss" in output


def test_no_progress_bars_with_disable_tqdm_and_no_visualdl_when_off(tmp_path, tiny_model_dir, xnli_dir):
    output = run_at_a_terminal(
        arguments(tiny_model_dir, xnli_dir, tmp_path / "a", disable_tqdm=True, cache_dir="", visualdl="false")
    )
    assert "training:" not in output and "tokenizing train:" not in output and "evaluating:" not in output
    assert "INFO step 40/40" in output
    assert not (tmp_path / "a" / "visualdl").exists()


def test_visualdl_records_loss_learning_rate_and_dev_accuracy_and_no_bars_without_a_terminal(
    tmp_path, tiny_model_dir, xnli_dir
):
    from visualdl import LogReader

    result = run_script(*arguments(tiny_model_dir, xnli_dir, tmp_path, visualdl="true", cache_dir=""))
    assert result.returncode == 0, result.stderr
    assert "training:" not in result.stderr and "tokenizing train:" not in result.stderr
    assert "INFO step 40/40" in result.stderr
    (record,) = os.listdir(tmp_path / "visualdl")
    reader = LogReader(file_path=str(tmp_path / "visualdl" / record))
    tags = reader.get_tags()["scalar"]
    assert {"train/loss", "train/lr", "dev/accuracy/avg", "dev/accuracy/en", "dev/accuracy/ur"} <= set(tags)
    assert [point.id for point in reader.get_data("scalar", "train/loss")] == [20, 40]
    assert [point.id for point in reader.get_data("scalar", "dev/accuracy/avg")] == [40]
