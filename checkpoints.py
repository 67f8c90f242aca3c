"""Checkpoints that never tear, and everything a resumed run needs to continue exactly.

A checkpoint is a `save_pretrained` directory (model + tokenizer) plus the optimizer (with its
learning-rate schedule), the loss scaler, the random-number states of every rank and
`trainer_state.json`. It is written under a temporary name and renamed when complete, so a
directory named `checkpoint-<step>` is always complete.
"""

import json
import os
import pickle
import random
import re
import shutil
from dataclasses import asdict, dataclass, field

import numpy as np
import paddle

from utils import InputError, write_json_atomically

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "model_state.pdparams"
OPTIMIZER_FILE = "optimizer.pdopt"
SCALER_FILE = "scaler.pdparams"
RNG_FILE = "rng_state.pkl"

# Arguments that change what a run computes; a resumed run must keep every one of them.
RESULT_ARGUMENTS = (
    "task_type", "model_name_or_path", "max_seq_length", "memory_length", "learning_rate", "dropout",
    "num_train_epochs", "max_steps", "batch_size", "group_by_length", "weight_decay", "layerwise_decay", "adam_epsilon",
    "warmup_proportion", "warmup_steps", "save_steps", "select_on", "seed", "use_amp", "scale_loss",
    "flush_denormals",
)


@dataclass
class TrainingState:
    """Where the run stands: its position in the data, and the best checkpoint so far."""

    global_step: int = 0
    epoch: int = 0
    next_batch: int = 0
    best_score: float = -1.0
    best_step: int = 0
    best_checkpoint: str = ""
    best_dev: dict = field(default_factory=dict)
    dev_history: list = field(default_factory=list)


def checkpoint_path(output_dir, step):
    return os.path.join(output_dir, f"checkpoint-{step}")


def list_checkpoints(output_dir):
    """Complete checkpoints in `output_dir`, oldest first, as (step, path)."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = CHECKPOINT_NAME.match(name)
        if match and os.path.isfile(os.path.join(output_dir, name, STATE_FILE)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return sorted(found)


def latest_checkpoint(output_dir):
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def capture_rng_state():
    """This process's random-number generators (dropout draws from Paddle's)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "paddle": paddle.get_rng_state()}


def restore_rng_state(rng_state):
    random.setstate(rng_state["python"])
    np.random.set_state(rng_state["numpy"])
    paddle.set_rng_state(rng_state["paddle"])


def write_checkpoint(directory, model, tokenizer, optimizer, scaler, training_state, args, rng_states):
    """Write a complete checkpoint at `directory`, atomically (see the module docstring)."""
    partial_dir = directory + ".partial"
    shutil.rmtree(partial_dir, ignore_errors=True)
    model.save_pretrained(partial_dir)
    tokenizer.save_pretrained(partial_dir)
    paddle.save(optimizer.state_dict(), os.path.join(partial_dir, OPTIMIZER_FILE))
    if scaler.is_enable():
        paddle.save(scaler.state_dict(), os.path.join(partial_dir, SCALER_FILE))
    with open(os.path.join(partial_dir, RNG_FILE), "wb") as file:
        pickle.dump(rng_states, file)
    write_json_atomically(
        os.path.join(partial_dir, STATE_FILE),
        {**asdict(training_state), "world_size": len(rng_states), "args": vars(args)},
    )
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(partial_dir, directory)


def prune_checkpoints(output_dir, keep, protected):
    """Delete all but the newest `keep` checkpoints, never the `protected` one (the best)."""
    checkpoints = [path for _, path in list_checkpoints(output_dir)]
    for path in checkpoints[: max(len(checkpoints) - keep, 0)]:
        if os.path.abspath(path) != os.path.abspath(protected):
            shutil.rmtree(path)


def read_checkpoint_state(directory):
    """(TrainingState, saved arguments, world size) of a checkpoint."""
    with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as file:
        saved = json.load(file)
    saved_args, world_size = saved.pop("args"), saved.pop("world_size")
    return TrainingState(**saved), saved_args, world_size


def check_resumable(directory, args, world_size):
    """Refuse to resume with arguments (or a number of processes) that would change the result."""
    _, saved_args, saved_world_size = read_checkpoint_state(directory)
    changes = [
        f"--{name} ({saved_args.get(name)!r} -> {getattr(args, name)!r})"
        for name in RESULT_ARGUMENTS
        if name in saved_args and saved_args[name] != getattr(args, name)  # absent: older than the argument
    ]
    if saved_world_size != world_size:
        changes.append(f"number of processes ({saved_world_size} -> {world_size})")
    if changes:
        raise InputError(
            f"--resume_from_checkpoint {directory}: the run was started with other settings: {', '.join(changes)}"
        )


def load_training_checkpoint(directory, optimizer, scaler, rank):
    """Restore the optimizer, the scaler and this rank's random state; returns the TrainingState."""
    optimizer.set_state_dict(paddle.load(os.path.join(directory, OPTIMIZER_FILE)))
    if scaler.is_enable():
        scaler.load_state_dict(paddle.load(os.path.join(directory, SCALER_FILE)))
    with open(os.path.join(directory, RNG_FILE), "rb") as file:
        restore_rng_state(pickle.load(file)[rank])
    return read_checkpoint_state(directory)[0]
