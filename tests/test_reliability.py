"""Exact resume after kill -9 or SIGTERM, checkpoints that never tear, and one-line errors."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest
from conftest import REPO_ROOT, build_tiny_ernie_m, run_script

from checkpoints import STATE_FILE, latest_checkpoint, list_checkpoints, prune_checkpoints

LAUNCH_TWO = ["-m", "paddle.distributed.launch", "--nproc_per_node", "2"]


def training_args(model_dir, data_dir, output_dir, *extra):
    return ["--task_type", "cross-lingual-transfer", "--model_name_or_path", model_dir, "--data_dir", data_dir,
            "--output_dir", output_dir, "--device", "cpu", "--learning_rate", "1e-2", "--layerwise_decay", "1.0",
            "--batch_size", "8", "--max_steps", "240", "--save_steps", "80", "--logging_steps", "1", *extra]


def start(arguments, log_path, launcher=()):
    command = [sys.executable, *launcher, os.path.join(REPO_ROOT, "run_classifier.py"), *map(str, arguments)]
    with open(log_path, "w") as log:
        return subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(text, log_path, process, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(log_path) and text in open(log_path, encoding="utf-8", errors="replace").read():
            return
        assert process.poll() is None, f"finished before {text!r}:\n" + open(log_path).read()[-3000:]
        time.sleep(0.005)
    raise AssertionError(f"no {text!r} in {log_path} within {timeout} s")


def final_weights(output_dir, step=240):
    return paddle.load(os.path.join(output_dir, f"checkpoint-{step}", "model_state.pdparams"))


def results(output_dir):
    with open(os.path.join(output_dir, "results.json"), encoding="utf-8") as file:
        return json.load(file)


def assert_same_run(resumed_dir, reference_dir):
    resumed, reference = final_weights(resumed_dir), final_weights(reference_dir)
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert np.array_equal(resumed[name].numpy(), reference[name].numpy()), name
    assert results(resumed_dir)["test_accuracy"] == results(reference_dir)["test_accuracy"]
    assert results(resumed_dir)["test_loss"] == results(reference_dir)["test_loss"]
    assert results(resumed_dir)["dev_history"] == results(reference_dir)["dev_history"]


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "two-processes"])
@pytest.mark.parametrize("use_amp", ["false", "true"], ids=["fp32", "amp"])
def test_a_run_killed_with_sigkill_resumes_to_identical_weights_and_results(
    tmp_path, tiny_model_dir, xnli_dir, processes, use_amp
):
    def launcher(name):
        return LAUNCH_TWO + ["--log_dir", str(tmp_path / name)] if processes == 2 else []

    reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
    done = run_script(*training_args(tiny_model_dir, xnli_dir, reference_dir, "--use_amp", use_amp),
                      launcher=launcher("reference-logs"))
    assert done.returncode == 0, done.stderr[-3000:]

    output_path = tmp_path / "killed.out"
    process = start(training_args(tiny_model_dir, xnli_dir, killed_dir, "--use_amp", use_amp), output_path,
                    launcher("logs"))
    wait_for("step 100/240", tmp_path / "logs" / "workerlog.0" if processes == 2 else output_path, process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    checkpoint_steps = [step for step, _ in list_checkpoints(killed_dir)]
    assert 80 in checkpoint_steps and 240 not in checkpoint_steps

    resumed = run_script(*training_args(tiny_model_dir, xnli_dir, killed_dir, "--use_amp", use_amp,
                                        "--resume_from_checkpoint", "latest"), launcher=launcher("resumed-logs"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(killed_dir, reference_dir)
