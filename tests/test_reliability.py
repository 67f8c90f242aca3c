"""Exact resume after kill -9 or SIGTERM, checkpoints that never tear, and one-line errors."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

from ernie_m_xnli.data.synthetic import build_tiny_ernie_m
from ernie_m_xnli.training.checkpoints import (
    STATE_FILE,
    Selection,
    TrainingState,
    best_model_path,
    latest_checkpoint,
    list_checkpoints,
    prune_best_models,
    prune_checkpoints,
)
from ernie_m_xnli.training.plain_state import load_weights_file

from conftest import REPO_ROOT, cpu_run, flags, last_line, rank_pids, read_results, run_main, run_script

LAUNCH_TWO = ["-m", "paddle.distributed.launch", "--nproc_per_node", "2"]


# A run of 80 steps, dev every 20 and a checkpoint every 40, slow enough to interrupt on cue.
INTERRUPTIBLE_RUN = dict(
    learning_rate="1e-2", layerwise_decay="1.0", batch_size=8, max_steps=80, eval_steps=20, save_steps=40
)


def training_args(model_dir, data_dir, output_dir, **options):
    """The command-line arguments of that run; `options` override or add flags."""
    return flags(**cpu_run(model_dir, data_dir, output_dir, **{**INTERRUPTIBLE_RUN, "logging_steps": 1, **options}))


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


def final_weights(output_dir, step=80):
    return load_weights_file(os.path.join(output_dir, f"checkpoint-{step}"))


def assert_same_run(resumed_dir, reference_dir):
    resumed, reference = final_weights(resumed_dir), final_weights(reference_dir)
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert np.array_equal(resumed[name], reference[name]), name
    resumed_results, reference_results = read_results(resumed_dir), read_results(reference_dir)
    for key in (
        "test_accuracy",
        "test_loss",
        "dev_history",
        "selected_steps",
        "test_accuracy_select_en",
    ):
        assert resumed_results[key] == reference_results[key], key


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, tiny_model_dir, varied_xnli_dir):
    """Uninterrupted runs on inputs that packing merges, made once per setting:
    {(processes, use_amp, accumulation): output_dir}."""
    made = {}

    def make(processes, use_amp="false", accumulation=1):
        if (processes, use_amp, accumulation) not in made:
            output_dir = tmp_path_factory.mktemp("reference")
            launcher = LAUNCH_TWO + ["--log_dir", str(output_dir / "logs")] if processes == 2 else []
            setting = dict(use_amp=use_amp, gradient_accumulation_steps=accumulation)
            done = run_script(
                *training_args(tiny_model_dir, varied_xnli_dir, output_dir / "run", **setting), launcher=launcher
            )
            assert done.returncode == 0, done.stderr[-3000:]
            (output_dir / "run.log").write_text(done.stderr)  # a line per step: logging_steps 1
            made[processes, use_amp, accumulation] = output_dir / "run"
        return made[processes, use_amp, accumulation]

    return make


@pytest.mark.parametrize(
    "processes, accumulation", [(1, 1), (2, 2)], ids=["one-process", "two-processes-accumulating-2"]
)
@pytest.mark.parametrize(
    "use_amp",
    [
        pytest.param("false", id="fp32"),
        # On a CPU build Paddle computes in float32 and the loss scaler is off: the fp32 run again.
        pytest.param(
            "true",
            id="amp",
            marks=pytest.mark.skipif(not paddle.is_compiled_with_cuda(), reason="AMP runs only on a CUDA build"),
        ),
    ],
)
def test_a_run_killed_with_sigkill_resumes_to_identical_weights_and_results(
    tmp_path, tiny_model_dir, varied_xnli_dir, reference_run, processes, accumulation, use_amp
):
    def launcher(name):
        return LAUNCH_TWO + ["--log_dir", str(tmp_path / name)] if processes == 2 else []

    setting = dict(use_amp=use_amp, gradient_accumulation_steps=accumulation)
    killed_dir, output_path = tmp_path / "killed", tmp_path / "killed.out"
    process = start(
        training_args(tiny_model_dir, varied_xnli_dir, killed_dir, **setting), output_path, launcher("logs")
    )
    wait_for("step 50/80", tmp_path / "logs" / "workerlog.0" if processes == 2 else output_path, process)
    # The launcher starts each worker in a session of its own: kill -9 every process of the run.
    for worker in rank_pids(process.pid).values():
        os.kill(worker, signal.SIGKILL)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    checkpoint_steps = [step for step, _ in list_checkpoints(killed_dir)]
    assert 40 in checkpoint_steps and 80 not in checkpoint_steps

    arguments = training_args(tiny_model_dir, varied_xnli_dir, killed_dir, **setting, resume_from_checkpoint="latest")
    resumed = run_script(*arguments, launcher=launcher("resumed-logs"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(killed_dir, reference_run(processes, use_amp, accumulation))
    # Logged every step in both: the history kept in the checkpoint, then the resumed steps' losses.
    reference = read_results(reference_run(processes, use_amp, accumulation))["train_loss_history"]
    assert read_results(killed_dir)["train_loss_history"] == reference and len(reference) == 80


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_saves_a_checkpoint_and_says_how_to_resume(
    tmp_path, tiny_model_dir, varied_xnli_dir, reference_run, signum
):
    output_dir, output_path = tmp_path / "run", tmp_path / "run.out"
    process = start(training_args(tiny_model_dir, varied_xnli_dir, output_dir), output_path)
    wait_for("step 45/80", output_path, process)
    process.send_signal(signum)
    assert process.wait(timeout=60) == 128 + signum
    message = last_line(open(output_path).read())
    step = int(message.split("after step ")[1].split(";")[0])
    assert 45 <= step < 80 and step % 40
    assert message == (
        f"run_classifier.py: stopped by {signal.Signals(signum).name} after step {step}; "
        f"saved {output_dir}/checkpoint-{step}. Continue with the same command and "
        "--resume_from_checkpoint latest"
    )
    assert latest_checkpoint(str(output_dir)) == f"{output_dir}/checkpoint-{step}"

    if signum == signal.SIGTERM:  # the same checkpoint either way: resume one of them
        resumed = run_script(
            *training_args(
                tiny_model_dir, varied_xnli_dir, output_dir, resume_from_checkpoint="latest", logging_steps=40
            )
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert_same_run(output_dir, reference_run(1))
        # The first line after the resume averages the steps run since it, as the reference's lines show them.
        reference_losses = logged_losses((reference_run(1).parent / "run.log").read_text())
        expected = np.mean([reference_losses[later] for later in range(step + 1, 81)])
        assert logged_losses(resumed.stderr)[80] == pytest.approx(expected, abs=2e-4)


def logged_losses(log):
    """{step: loss} of a run's `step N/M, epoch E, loss X, ...` lines."""
    lines = re.findall(r"step (\d+)/\d+, epoch \d+, loss ([0-9.]+)", log)
    return {int(step): float(loss) for step, loss in lines}


def make_checkpoint(output_dir, step, complete=True):
    directory = output_dir / f"checkpoint-{step}"
    directory.mkdir(parents=True)
    if complete:
        (directory / STATE_FILE).write_text("{}")
    return str(directory)


def test_latest_checkpoint_skips_partial_and_incomplete_ones(tmp_path):
    make_checkpoint(tmp_path, 20)
    make_checkpoint(tmp_path, 100)
    make_checkpoint(tmp_path, 300, complete=False)
    (tmp_path / "checkpoint-400.partial").mkdir()
    (tmp_path / "checkpoint-400.partial" / STATE_FILE).write_text("{}")
    assert latest_checkpoint(str(tmp_path)) == f"{tmp_path}/checkpoint-100"
    assert [step for step, _ in list_checkpoints(str(tmp_path))] == [20, 100]


def test_pruning_keeps_the_newest_checkpoints(tmp_path):
    for step in (10, 20, 30, 40):
        make_checkpoint(tmp_path, step)
    prune_checkpoints(str(tmp_path), keep=2)
    assert [step for step, _ in list_checkpoints(str(tmp_path))] == [30, 40]


def test_best_models_stay_while_the_state_or_a_checkpoint_refers_to_them(tmp_path):
    def state(avg_step, en_step):
        selections = {
            "avg": Selection(avg_step, directory=best_model_path(tmp_path, avg_step)),
            "en": Selection(en_step, directory=best_model_path(tmp_path, en_step)),
        }
        return TrainingState(best=selections)

    for step in (10, 20, 30, 40):
        os.makedirs(best_model_path(tmp_path, step))
    checkpoint = make_checkpoint(tmp_path, 25, complete=False)
    with open(os.path.join(checkpoint, STATE_FILE), "w") as file:
        json.dump({**state(10, 20).to_dict(), "args": {}, "world_size": 1}, file)
    prune_best_models(str(tmp_path), state(30, 30))
    assert sorted(name for name in os.listdir(tmp_path) if name.startswith("best-")) == [
        "best-10",
        "best-20",
        "best-30",
    ]


def test_save_total_limit_in_a_run(tmp_path, tiny_model_dir, xnli_dir):
    pruned = dict(max_steps=40, save_steps=10, save_total_limit=1, learning_rate="1e-9")
    result = run_main(*training_args(tiny_model_dir, xnli_dir, tmp_path, **pruned))
    assert result.returncode == 0, result.stderr
    assert {path for _, path in list_checkpoints(str(tmp_path))} == {f"{tmp_path}/checkpoint-40"}
    selected = read_results(tmp_path)["selected_steps"]
    assert {name for name in os.listdir(tmp_path) if name.startswith("best-")} == {
        f"best-{step}" for step in selected.values()
    }


def test_an_output_dir_holding_a_run_is_refused_unless_asked(tmp_path, tiny_model_dir, xnli_dir):
    arguments = training_args(tiny_model_dir, xnli_dir, tmp_path, max_steps=4, save_steps=2)
    assert run_main(*arguments).returncode == 0
    again = run_main(*arguments)
    assert again.returncode == 2
    assert last_line(again.stderr) == (
        f"run_classifier.py: error: --output_dir {tmp_path} already holds a run: pass --resume_from_checkpoint "
        "latest to continue it, --overwrite_output_dir to replace it, or another --output_dir"
    )
    replaced = run_main(*arguments, overwrite_output_dir=True, save_steps=4)
    assert replaced.returncode == 0, replaced.stderr
    assert [step for step, _ in list_checkpoints(str(tmp_path))] == [4]


def test_resuming_with_other_settings_is_refused_naming_them(tmp_path, tiny_model_dir, xnli_dir):
    assert run_main(*training_args(tiny_model_dir, xnli_dir, tmp_path, max_steps=4)).returncode == 0
    changed = dict(max_steps=4, batch_size=4, seed=1, resume_from_checkpoint="latest")
    code, _, stderr = run_main(*training_args(tiny_model_dir, xnli_dir, tmp_path, **changed))
    assert code == 2
    assert last_line(stderr).endswith(
        f"error: --resume_from_checkpoint {tmp_path}/checkpoint-4: the run was started with "
        "other settings: --batch_size (8 -> 4), --seed (42 -> 1)"
    )


def test_a_non_finite_loss_stops_naming_the_step_and_last_good_checkpoint(tmp_path, tiny_model_dir, xnli_dir):
    diverging = dict(learning_rate="1e30", warmup_steps=1, save_steps=2)
    result = run_main(*training_args(tiny_model_dir, xnli_dir, tmp_path, **diverging))
    assert result.returncode == 1
    assert last_line(result.stderr) == (
        f"run_classifier.py: error: the loss is nan at step 3; last good checkpoint: {tmp_path}/checkpoint-2. "
        "Lower --learning_rate, or resume from that checkpoint"
    )


@pytest.fixture(scope="module")
def broken_models(tmp_path_factory, tiny_model_dir):
    """Model directories that are wrong in one way each."""
    root = tmp_path_factory.mktemp("broken")
    text_file = root / "text.txt"
    text_file.write_text("fkaka fsuta flomi yes maybe no\n" * 20)

    def variant(name, edit_config=None, drop_weights=False):
        directory = root / name
        directory.mkdir()
        for file in os.listdir(tiny_model_dir):
            if not (drop_weights and file == "model_state.pdparams"):
                shutil.copy(os.path.join(tiny_model_dir, file), directory / file)
        if edit_config:
            config = json.loads((directory / "config.json").read_text())
            edit_config(config)
            (directory / "config.json").write_text(json.dumps(config))
        return directory

    return {
        "no weights": variant("no-weights", drop_weights=True),
        "mismatched weights": variant("mismatched", edit_config=lambda config: config.update(hidden_size=64)),
        "few positions": build_tiny_ernie_m(str(root / "few-positions"), str(text_file), max_position_embeddings=34),
        "small vocabulary": build_tiny_ernie_m(str(root / "small-vocab"), str(text_file), embedding_rows=10),
    }


@pytest.mark.parametrize(
    "problem, message",
    [
        ("no weights", "no weights (model_state.pdparams or model.safetensors)"),
        (
            "mismatched weights",
            "weights do not fit config.json (Skip loading for embeddings.word_embeddings.weight. "
            "embeddings.word_embeddings.weight receives a shape [124, 32], but the expected shape "
            "is [124, 64].)",
        ),
        ("few positions", "--max_seq_length 64: this model has position embeddings for at most 32 tokens"),
        ("small vocabulary", "the tokenizer has"),
    ],
)
def test_a_model_directory_that_does_not_fit_is_named(tmp_path, xnli_dir, broken_models, problem, message):
    code, _, stderr = run_main(*training_args(broken_models[problem], xnli_dir, tmp_path, max_seq_length=64))
    assert code == 2
    assert "Traceback" not in stderr
    assert message in last_line(stderr)


def test_an_output_dir_that_cannot_be_created_and_debug_tracebacks(tmp_path, tiny_model_dir, xnli_dir):
    (tmp_path / "file").write_text("")
    arguments = training_args(tiny_model_dir, xnli_dir, tmp_path / "file" / "run")
    code, _, stderr = run_main(*arguments)
    assert code == 2 and "Traceback" not in stderr
    assert last_line(stderr).endswith(f"error: --output_dir {tmp_path}/file/run: cannot create it (Not a directory)")
    code, _, stderr = run_main(*arguments, debug=True)
    assert code == 2 and "Traceback (most recent call last)" in stderr


def test_a_loss_scaler_that_keeps_skipping_stops_the_run():
    from ernie_m_xnli.training.run_control import NonFiniteGuard, TrainingFailed

    guard = NonFiniteGuard(max_skipped_in_a_row=5)
    for step in range(1, 5):
        guard.check(step, float("inf"), skipped=True)
    guard.check(5, 1.0, skipped=False)  # a good step resets the count
    for step in range(6, 10):
        guard.check(step, float("nan"), skipped=True)
    with pytest.raises(
        TrainingFailed, match="skipped 5 steps in a row .* up to step 10; last good checkpoint: none yet"
    ):
        guard.check(10, float("nan"), skipped=True)
    assert guard.skipped == 9


def damage(path):
    """Flip one byte in the middle of a file."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_refused_by_name_and_latest_falls_back(tmp_path, tiny_model_dir, xnli_dir):
    arguments = training_args(tiny_model_dir, xnli_dir, tmp_path, max_steps=4, save_steps=2, eval_steps=2)
    assert run_main(*arguments).returncode == 0
    damaged = tmp_path / "checkpoint-4" / "optimizer.npz"
    damage(damaged)

    explicit = run_main(*arguments, resume_from_checkpoint=tmp_path / "checkpoint-4")
    assert explicit.returncode == 2
    assert last_line(explicit.stderr) == (
        f"run_classifier.py: error: --resume_from_checkpoint {tmp_path}/checkpoint-4: {damaged}: its SHA-256 "
        "differs from the manifest's (altered or damaged)"
    )
    # Written in this process, which made other models before (Paddle's parameter names count them),
    # resumed in a new one: the optimizer state is keyed by structured parameter names.
    latest = run_script(*arguments, resume_from_checkpoint="latest")
    assert latest.returncode == 0, latest.stderr
    assert f"WARNING skipping {tmp_path}/checkpoint-4: {damaged}: its SHA-256 differs" in latest.stderr
    assert f"INFO resuming from {tmp_path}/checkpoint-2" in latest.stderr

    best = tmp_path / f"best-{read_results(tmp_path)['selected_step']}"
    damage(best / "model.safetensors")
    evaluated = run_main("--eval_only", *flags(**cpu_run(best, xnli_dir, tmp_path / "eval")))
    assert evaluated.returncode == 2
    assert last_line(evaluated.stderr).endswith(
        f"--model_name_or_path {best}: {best}/model.safetensors: its SHA-256 "
        "differs from the manifest's (altered or damaged)"
    )


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_every_file_a_run_writes_has_the_mode_of_a_new_file(tmp_path, tiny_model_dir, xnli_dir, umask, mode):
    """Training, evaluation, prediction and aggregate.py, in this process under `umask`: no file is
    left private by the temporary file it was written through."""
    import aggregate

    pairs_file = tmp_path / "pairs.tsv"
    pairs_file.write_text("a premise\ta hypothesis\n")
    previous = os.umask(umask)
    try:
        trained = run_main(**cpu_run(tiny_model_dir, xnli_dir, tmp_path / "run", max_steps=4, save_steps=2))
        assert trained.returncode == 0, trained.stderr
        checkpoint = tmp_path / "run" / "checkpoint-4"
        evaluated = run_main("--eval_only", **cpu_run(checkpoint, xnli_dir, tmp_path / "eval"))
        predicted = run_main(**cpu_run(checkpoint, xnli_dir, tmp_path / "predict", predict_file=pairs_file))
        assert evaluated.returncode == 0 and predicted.returncode == 0, evaluated.stderr + predicted.stderr
        aggregate.main([str(tmp_path / "run"), "--output_dir", str(tmp_path / "summary")])
    finally:
        os.umask(previous)
    written = [
        os.path.join(folder, name)
        for top in ("run", "eval", "predict", "summary")
        for folder, _, names in os.walk(tmp_path / top)
        for name in names
    ]
    names = {os.path.basename(path) for path in written}
    assert {"results.json", "model.safetensors", "manifest.json", "trainer_state.json", "rng_state.json"} <= names
    assert {"predictions.tsv", "summary.json", "optimizer.npz"} <= names
    assert {path: oct(os.stat(path).st_mode & 0o777) for path in written} == {path: oct(mode) for path in written}


def test_a_second_run_into_the_same_output_dir_stops_at_once_naming_the_first(
    tmp_path, tiny_model_dir, varied_xnli_dir
):
    output_dir, output_path = tmp_path / "run", tmp_path / "run.out"
    arguments = training_args(tiny_model_dir, varied_xnli_dir, output_dir, max_steps=100000)  # still running later
    first = start(arguments, output_path)
    try:
        wait_for("step 1/100000", output_path, first)
        # What a requeued job or a second terminal does while the first still runs.
        second = run_script(*arguments, "--resume_from_checkpoint", "latest")
        assert second.returncode == 2
        assert second.stderr.strip().splitlines()[-1] == (
            f"run_classifier.py: error: --output_dir {output_dir} is in use by process {first.pid} on "
            f"{socket.gethostname()}: one run per output directory at a time; wait for that one to end, or pass "
            "another --output_dir"
        )
        assert "resuming" not in second.stderr and first.poll() is None
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # The operating system released the lock with the killed process.
    again = run_main(
        *training_args(tiny_model_dir, varied_xnli_dir, output_dir, max_steps=2, overwrite_output_dir=True)
    )
    assert again.returncode == 0, again.stderr[-3000:]


def test_a_resumed_run_computes_with_the_library_its_checkpoint_recorded(tmp_path, tiny_model_dir, varied_xnli_dir):
    """--cpu_matmul auto measures the libraries anew only for a new run: a resumed one computes as its
    checkpoint says the run did (an emptied cache or a busy machine could measure otherwise), and ends
    with the uninterrupted run's weights."""
    output_dir = tmp_path / "run"
    done = run_main(*training_args(tiny_model_dir, varied_xnli_dir, output_dir, cpu_matmul="onednn"))
    assert done.returncode == 0, done.stderr[-3000:]
    uninterrupted = final_weights(output_dir)
    shutil.rmtree(output_dir / "checkpoint-80")

    options = dict(cpu_matmul="auto", cache_dir=tmp_path / "empty-cache", resume_from_checkpoint="latest")
    resumed = run_main(*training_args(tiny_model_dir, varied_xnli_dir, output_dir, **options))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert re.search(
        r"float32 products by oneDNN \S+ \(\S+\) \(as the run being resumed computed them\)", resumed.stderr
    )
    assert not (tmp_path / "empty-cache" / "cpu_matmul_paths.json").exists()
    for name, weight in final_weights(output_dir).items():
        assert np.array_equal(weight, uninterrupted[name]), name
