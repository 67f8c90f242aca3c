"""Two real processes, one of them stopped by the operating system (SIGSTOP) as an overloaded CPU
stops it: gloo alone gives up on a peer after 30 s; the suite waits for it up to
--collective_timeout, and past that every rank stops with one line naming the slow rank and the
last checkpoint. Rank 1 is the one stopped: rank 0's process holds the launcher's key-value store,
which a stopped process could not answer (a busy one does: its server threads need no Python)."""

import os
import signal
import time

from test_reliability import LAUNCH_TWO, start, training_args, wait_for

from conftest import last_line, rank_pids


def two_processes(tmp_path, tiny_model_dir, xnli_dir, **options):
    run = dict(max_steps=40, save_steps=10, eval_steps=20)
    arguments = training_args(tiny_model_dir, xnli_dir, tmp_path / "run", **run, **options)
    return start(arguments, tmp_path / "run.out", LAUNCH_TWO + ["--log_dir", str(tmp_path / "logs")])


def stop_rank_1_after_step_20(process, log, seconds):
    """Stop rank 1 for `seconds` once rank 0 logs step 20: rank 0 then waits for it at the dev
    evaluation that follows."""
    wait_for("step 20/", log, process)
    rank_1 = rank_pids(process.pid)[1]
    os.kill(rank_1, signal.SIGSTOP)
    time.sleep(seconds)
    os.kill(rank_1, signal.SIGCONT)


def test_a_rank_stopped_longer_than_gloos_30_seconds_is_waited_for(tmp_path, tiny_model_dir, varied_xnli_dir):
    process = two_processes(tmp_path, tiny_model_dir, varied_xnli_dir)
    stop_rank_1_after_step_20(process, tmp_path / "logs" / "workerlog.0", 35)
    assert process.wait(timeout=300) == 0, (tmp_path / "logs" / "workerlog.0").read_text()[-3000:]
    assert "test accuracy" in (tmp_path / "logs" / "workerlog.0").read_text()


def test_a_rank_slower_than_the_collective_timeout_stops_every_rank_in_one_line(
    tmp_path, tiny_model_dir, varied_xnli_dir
):
    output_dir, logs = tmp_path / "run", tmp_path / "logs"
    process = two_processes(tmp_path, tiny_model_dir, varied_xnli_dir, collective_timeout=3)
    stop_rank_1_after_step_20(process, logs / "workerlog.0", 8)
    assert process.wait(timeout=120) != 0
    waited = last_line((logs / "workerlog.0").read_text())
    assert waited.startswith("run_classifier.py: error: rank 0 waited 3 s for rank 1 at ")
    reason = waited.removeprefix("run_classifier.py: error: ").split("; last checkpoint")[0]
    assert reason.endswith(
        "(--collective_timeout 3): a rank that slow is busy or stuck; free the CPU or raise --collective_timeout"
    )
    where = f"last checkpoint: {output_dir}/checkpoint-10, from which the same command with --resume_from_checkpoint"
    assert waited.endswith(f"; {where} latest continues")
    stopped = last_line((logs / "workerlog.1").read_text())
    assert stopped.startswith("run_classifier.py: error: rank 1 stopped at ")
    assert stopped.endswith(f": {reason}; {where} latest continues")
