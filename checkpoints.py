"""Checkpoints that never tear, and everything a resumed run needs to continue exactly.

A checkpoint is a `save_pretrained` directory (model + tokenizer) plus the optimizer (with its
learning-rate schedule), the loss scaler, the random-number states of every rank and
`trainer_state.json`. It is written under a temporary name and renamed when complete, so a
directory named `checkpoint-<step>` is always complete.
"""

import json
import logging
import os
import pickle
import random
import re
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import paddle

import distributed
from evaluation import EvaluationResult
from reporting import RESULTS_FILE
from utils import InputError, write_json_atomically

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
WEIGHTS_FILE = "model_state.pdparams"
OPTIMIZER_FILE = "optimizer.pdopt"
SCALER_FILE = "scaler.pdparams"
RNG_FILE = "rng_state.pkl"

# Arguments that change what a run computes; a resumed run must keep every one of them.
RESULT_ARGUMENTS = (
    "task_type",
    "model_name_or_path",
    "max_seq_length",
    "memory_length",
    "learning_rate",
    "dropout",
    "num_train_epochs",
    "max_steps",
    "batch_size",
    "group_by_length",
    "weight_decay",
    "layerwise_decay",
    "adam_epsilon",
    "warmup_proportion",
    "warmup_steps",
    "save_steps",
    "select_on",
    "seed",
    "use_amp",
    "scale_loss",
    "flush_denormals",
)

logger = logging.getLogger(__name__)


@dataclass
class TrainingState:
    """Where the run stands: its position in the data, and the best checkpoint so far."""

    global_step: int = 0
    epoch: int = 0
    next_batch: int = 0
    best_score: float = -1.0
    best_step: int = 0
    best_checkpoint: str = ""
    best_dev: EvaluationResult = None
    dev_history: list = field(default_factory=list)

    def record_dev(self, dev_result, select_on, output_dir):
        """Add a dev evaluation of the current step; returns whether it is the best so far."""
        self.dev_history.append({"step": self.global_step, "avg": dev_result.average, "en": dev_result.accuracy["en"]})
        if dev_result.score(select_on) <= self.best_score:
            return False
        self.best_score, self.best_step, self.best_dev = dev_result.score(select_on), self.global_step, dev_result
        self.best_checkpoint = checkpoint_path(output_dir, self.global_step)
        return True

    def to_dict(self):
        return {**asdict(self), "best_dev": self.best_dev and self.best_dev.to_dict()}

    @classmethod
    def from_dict(cls, saved):
        best_dev = saved.get("best_dev")
        return cls(**{**saved, "best_dev": EvaluationResult.from_dict(best_dev) if best_dev else None})


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


@contextmanager
def atomic_directory(directory):
    """Yields a temporary directory to fill, which replaces `directory` once the block completes:
    a reader never sees half of it (see the module docstring)."""
    partial_dir = directory + ".partial"
    shutil.rmtree(partial_dir, ignore_errors=True)
    os.makedirs(partial_dir)
    yield partial_dir
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(partial_dir, directory)


def write_training_state(directory, optimizer, scaler, rng_states, run_state):
    """What a resumed run needs beside the model: optimizer, scaler, every rank's random state and
    `run_state` (the TrainingState and arguments) as trainer_state.json."""
    paddle.save(optimizer.state_dict(), os.path.join(directory, OPTIMIZER_FILE))
    if scaler.is_enable():
        paddle.save(scaler.state_dict(), os.path.join(directory, SCALER_FILE))
    with open(os.path.join(directory, RNG_FILE), "wb") as file:
        pickle.dump(rng_states, file)
    write_json_atomically(os.path.join(directory, STATE_FILE), {**run_state, "world_size": len(rng_states)})


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
    return TrainingState.from_dict(saved), saved_args, world_size


def check_resumable(directory, arguments, world_size):
    """Refuse to resume with arguments (or a number of processes) that would change the result."""
    _, saved_args, saved_world_size = read_checkpoint_state(directory)
    changes = [
        f"--{name} ({saved_args.get(name)!r} -> {arguments[name]!r})"
        for name in RESULT_ARGUMENTS
        if name in saved_args and saved_args[name] != arguments[name]  # absent: older than the argument
    ]
    if saved_world_size != world_size:
        changes.append(f"number of processes ({saved_world_size} -> {world_size})")
    if changes:
        raise InputError(
            f"--resume_from_checkpoint {directory}: the run was started with other settings: {', '.join(changes)}"
        )


def load_training_checkpoint(directory, optimizer, scaler):
    """Restore the optimizer, the scaler and this rank's random state; returns the TrainingState."""
    optimizer.set_state_dict(paddle.load(os.path.join(directory, OPTIMIZER_FILE)))
    if scaler.is_enable():
        scaler.load_state_dict(paddle.load(os.path.join(directory, SCALER_FILE)))
    with open(os.path.join(directory, RNG_FILE), "rb") as file:
        restore_rng_state(pickle.load(file)[distributed.rank()])
    return read_checkpoint_state(directory)[0]


def load_weights(model, checkpoint_dir):
    """Load a checkpoint's weights on rank 0 (the only one that wrote it) and broadcast them, so
    that no shared file system is needed across machines."""
    if distributed.is_main():
        model.set_state_dict(paddle.load(os.path.join(checkpoint_dir, WEIGHTS_FILE)))
    distributed.broadcast_parameters(model)


def find_resume_checkpoint(args):
    """The checkpoint that --resume_from_checkpoint names, checked to continue this run, or None."""
    resume_dir = args.resume_from_checkpoint
    if resume_dir == "latest":
        resume_dir = latest_checkpoint(args.output_dir)
        if resume_dir is None:
            raise InputError(f"--resume_from_checkpoint latest: no complete checkpoint in {args.output_dir}")
    if resume_dir:
        if not os.path.isfile(os.path.join(resume_dir, STATE_FILE)):
            raise InputError(f"--resume_from_checkpoint {resume_dir}: not a complete checkpoint (no {STATE_FILE})")
        check_resumable(resume_dir, vars(args), distributed.world_size())
        logger.info("resuming from %s", resume_dir)
    return resume_dir


def prepare_output_dir(args):
    """Create `output_dir`, refusing to mix a new run with one already there."""
    training = not (args.eval_only or args.predict_file)
    previous_run = (training and list_checkpoints(args.output_dir)) or (
        not args.predict_file and os.path.isfile(os.path.join(args.output_dir, RESULTS_FILE))
    )
    if previous_run and not (args.resume_from_checkpoint or args.overwrite_output_dir):
        raise InputError(
            f"--output_dir {args.output_dir} already holds a run: pass --resume_from_checkpoint latest "
            "to continue it, --overwrite_output_dir to replace it, or another --output_dir"
        )
    try:
        os.makedirs(args.output_dir, exist_ok=True)
    except OSError as error:
        raise InputError(f"--output_dir {args.output_dir}: cannot create it ({error.strerror})") from None
    if not os.access(args.output_dir, os.W_OK):
        raise InputError(f"--output_dir {args.output_dir}: not writable")
    if training and args.overwrite_output_dir and not args.resume_from_checkpoint and distributed.is_main():
        for _, path in list_checkpoints(args.output_dir):
            shutil.rmtree(path)
    distributed.barrier()
