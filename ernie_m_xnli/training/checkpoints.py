"""Checkpoints that never tear, everything a resumed run needs to continue exactly, and the
weights selected on dev.

A checkpoint is a `save_pretrained` directory (model + tokenizer) plus the optimizer (with its
learning-rate schedule), the loss scaler, the random-number states of every rank and
`trainer_state.json`. The weights with the best dev score so far (under each selection protocol)
are a `save_pretrained` directory `best-<step>`, written when the score improves. Both are written
under a temporary name, given a manifest of their files' sizes and SHA-256 last, and renamed when
complete, so a directory under its final name is always complete; every file is data (safetensors,
npz, JSON: see plain_state.py), so loading a checkpoint runs no code.
"""

import errno
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

from ernie_m_xnli.evaluation.evaluator import EvaluationResult
from ernie_m_xnli.setup import distributed
from ernie_m_xnli.training.plain_state import (
    load_state_dict,
    load_weights_file,
    manifest_problem,
    restore_rng_state,
    save_state_dict,
    write_manifest,
)
from utils import InputError, give_new_file_mode, write_json_atomically

CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
BEST_MODEL_NAME = re.compile(r"^best-(\d+)$")
# Model selection on the dev average, or on English dev only (strict zero-shot transfer).
SELECTION_PROTOCOLS = ("avg", "en")
STATE_FILE = "trainer_state.json"
# trainer_state.json's record of --cpu_matmul's answer: a resumed run computes as the run did.
FLOAT32_MATMUL_KEY = "float32_matmul"
OPTIMIZER_STEM = "optimizer"  # optimizer.npz + optimizer.json
SCALER_STEM = "scaler"
RNG_FILE = "rng_state.json"

# Arguments that change what a run computes; a resumed run must keep every one of them.
RESULT_ARGUMENTS = (
    "task_type",
    "train_languages",
    "model_name_or_path",
    "tokenizer_name_or_path",
    "max_seq_length",
    "memory_length",
    "learning_rate",
    "dropout",
    "num_train_epochs",
    "max_steps",
    "batch_size",
    "gradient_accumulation_steps",
    "max_grad_norm",
    "group_by_length",
    "weight_decay",
    "layerwise_decay",
    "adam_epsilon",
    "warmup_proportion",
    "warmup_steps",
    "save_steps",
    "eval_steps",
    "eval_pairs_per_language",
    "recipe",
    "seed",
    "use_amp",
    "amp_dtype",
    "scale_loss",
    "flush_denormals",
    "mkl_fast_path_on_amd",
)

logger = logging.getLogger(__name__)


@dataclass
class Selection:
    """The best dev evaluation so far under one protocol, and the directory of its weights."""

    step: int = 0
    score: float = -1.0
    directory: str = ""
    dev: EvaluationResult = None

    @classmethod
    def from_dict(cls, saved):
        return cls(**{**saved, "dev": saved["dev"] and EvaluationResult.from_dict(saved["dev"])})


@dataclass
class TrainingState:
    """Where the run stands: its position in the data, its training loss and dev histories and what
    it selected."""

    global_step: int = 0
    epoch: int = 0
    next_batch: int = 0
    best: dict = field(default_factory=lambda: {protocol: Selection() for protocol in SELECTION_PROTOCOLS})
    dev_history: list = field(default_factory=list)
    loss_history: list = field(default_factory=list)  # {"step", "loss"}: the mean loss of each log line

    def record_dev(self, dev_result, output_dir):
        """Add a dev evaluation of the current step; returns the protocols under which it is the best
        so far (its weights then belong in `best_model_path(output_dir, step)`)."""
        self.dev_history.append({"step": self.global_step, "avg": dev_result.average, "en": dev_result.accuracy["en"]})
        improved = [
            protocol for protocol in SELECTION_PROTOCOLS if dev_result.score(protocol) > self.best[protocol].score
        ]
        for protocol in improved:
            directory = best_model_path(output_dir, self.global_step)
            self.best[protocol] = Selection(
                self.global_step, dev_result.score(protocol), directory, dev_result.summary()
            )
        return improved

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, saved):
        best = {protocol: Selection.from_dict(selection) for protocol, selection in saved["best"].items()}
        return cls(**{**saved, "best": best})


def best_model_path(output_dir, step):
    return os.path.join(output_dir, f"best-{step}")


def prune_best_models(output_dir, state):
    """Delete the best-<step> directories that neither `state` nor a checkpoint on disk refers to
    (a checkpoint's may be needed again if the run is resumed from it)."""
    referenced = {os.path.basename(selection.directory) for selection in state.best.values()}
    for _, checkpoint in list_checkpoints(output_dir):
        referenced |= {
            os.path.basename(selection.directory) for selection in read_checkpoint_state(checkpoint)[0].best.values()
        }
    for name in os.listdir(output_dir):
        if BEST_MODEL_NAME.match(name) and name not in referenced:
            shutil.rmtree(os.path.join(output_dir, name))


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


def latest_intact_checkpoint(output_dir):
    """The newest checkpoint whose files match its manifest; a damaged one is skipped with a warning."""
    for _, path in reversed(list_checkpoints(output_dir)):
        problem = manifest_problem(path)
        if problem is None:
            return path
        logger.warning("skipping %s: %s", path, problem)
    return None


class DiskFull(Exception):
    """No space left while saving: the run stops (exit code 1); earlier checkpoints stay intact."""

    exit_code = 1


def no_space_left(error):
    """Whether `error` says the device is full, whichever library raised it: an OSError with ENOSPC, or
    safetensors' own error type, which says it in words."""
    return (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(error)


@contextmanager
def atomic_directory(directory):
    """Yields a temporary directory to fill, which replaces `directory` once the block completes:
    a reader never sees half of it (see the module docstring)."""
    partial_dir = directory + ".partial"
    shutil.rmtree(partial_dir, ignore_errors=True)
    os.makedirs(partial_dir)
    try:
        yield partial_dir
        for folder, _, names in os.walk(partial_dir):  # some writers (safetensors) make private files
            for name in names:
                give_new_file_mode(os.path.join(folder, name))
        write_manifest(partial_dir)
    except Exception as error:
        written = directory_size(partial_dir)
        shutil.rmtree(partial_dir, ignore_errors=True)
        if not no_space_left(error):
            raise
        parent = os.path.dirname(os.path.abspath(directory))
        needed = max([written, *(directory_size(path) for _, path in list_checkpoints(parent))])
        raise DiskFull(
            f"no space left on the device of {parent} while saving {os.path.basename(directory)}: free at least "
            f"{needed / 2**20:.0f} MB there, then continue with --resume_from_checkpoint latest (the checkpoints "
            "saved before are intact)"
        ) from None
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(partial_dir, directory)


def directory_size(directory):
    return (
        sum(entry.stat().st_size for entry in os.scandir(directory) if entry.is_file())
        if os.path.isdir(directory)
        else 0
    )


def write_training_state(directory, model, optimizer, scaler, rng_states, run_state):
    """What a resumed run needs beside the model: optimizer, scaler, every rank's random state and
    `run_state` (the TrainingState and arguments) as trainer_state.json."""
    save_state_dict(os.path.join(directory, OPTIMIZER_STEM), renamed(optimizer.state_dict(), model, portable=True))
    if scaler.is_enable():
        save_state_dict(os.path.join(directory, SCALER_STEM), scaler.state_dict())
    write_json_atomically(os.path.join(directory, RNG_FILE), rng_states)
    write_json_atomically(os.path.join(directory, STATE_FILE), {**run_state, "world_size": len(rng_states)})


def prune_checkpoints(output_dir, keep):
    """Delete all but the newest `keep` checkpoints."""
    checkpoints = [path for _, path in list_checkpoints(output_dir)]
    for path in checkpoints[: max(len(checkpoints) - keep, 0)]:
        shutil.rmtree(path)


def read_checkpoint_state(directory):
    """(TrainingState, saved arguments, world size) of a checkpoint."""
    with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as file:
        saved = json.load(file)
    if "best" not in saved:
        raise InputError(
            f"{directory}: a checkpoint of an earlier version of this suite, which cannot be resumed; "
            "evaluate it with --eval_only, or start the run anew"
        )
    saved_args, world_size = saved.pop("args"), saved.pop("world_size")
    saved.pop(FLOAT32_MATMUL_KEY, None)
    return TrainingState.from_dict(saved), saved_args, world_size


def checkpoint_float32_matmul(directory):
    """The library of the float32 CPU products the run of a checkpoint computed with (models/matmul_path.py);
    None where the checkpoint does not say (an earlier version's)."""
    with open(os.path.join(directory, STATE_FILE), encoding="utf-8") as file:
        return json.load(file).get(FLOAT32_MATMUL_KEY)


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


def renamed(optimizer_state, model, portable):
    """The optimizer state keyed by the parameters' structured names (`portable`: the same in every
    process), or back by Paddle's unique names, which count the layers a process has made."""
    unique_to_structured = {parameter.name: name for name, parameter in model.named_parameters()}
    renames = unique_to_structured if portable else {new: old for old, new in unique_to_structured.items()}

    def rename(key):
        prefix = max((old for old in renames if key.startswith(old + "_")), key=len, default=None)
        return key if prefix is None else renames[prefix] + key[len(prefix) :]

    return {rename(key): value for key, value in optimizer_state.items()}


def load_training_checkpoint(directory, model, optimizer, scaler):
    """Restore the optimizer, the scaler and this rank's random state; returns the TrainingState."""
    if not os.path.isfile(os.path.join(directory, OPTIMIZER_STEM + ".npz")):
        raise InputError(
            f"--resume_from_checkpoint {directory}: written by an earlier version of this suite (pickled optimizer "
            "state, which this version does not unpickle); evaluate it with --eval_only, or start the run anew"
        )
    optimizer.set_state_dict(renamed(load_state_dict(os.path.join(directory, OPTIMIZER_STEM)), model, portable=False))
    if scaler.is_enable():
        scaler.load_state_dict(load_state_dict(os.path.join(directory, SCALER_STEM)))
    with open(os.path.join(directory, RNG_FILE), encoding="utf-8") as file:
        restore_rng_state(json.load(file)[distributed.rank()])
    return read_checkpoint_state(directory)[0]


def write_model(directory, model, tokenizer):
    """A `save_pretrained` directory of the model and tokenizer, written atomically."""
    with atomic_directory(directory) as partial_dir:
        save_model(partial_dir, model, tokenizer)


def save_model(directory, model, tokenizer):
    """The model's weights as safetensors, its config and the tokenizer."""
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def load_weights(model, checkpoint_dir):
    """Load a checkpoint's weights on rank 0 (the only one that wrote it) and broadcast them, so
    that no shared file system is needed across machines."""
    if distributed.is_main():
        model.set_state_dict(load_weights_file(checkpoint_dir))
    distributed.broadcast_parameters(model, what=f"loading {checkpoint_dir}")


def check_intact(directory, argument):
    """Refuse a directory whose files do not match its manifest, naming the file; returns it."""
    problem = os.path.isdir(directory) and manifest_problem(directory)
    if problem:
        raise InputError(f"{argument} {directory}: {problem}")
    return directory


def find_resume_checkpoint(args):
    """The checkpoint that --resume_from_checkpoint names, checked to continue this run, or None."""
    resume_dir = args.resume_from_checkpoint
    if resume_dir == "latest":
        resume_dir = latest_intact_checkpoint(args.output_dir)  # checked against its manifest on the way
        if resume_dir is None:
            raise InputError(f"--resume_from_checkpoint latest: no complete checkpoint in {args.output_dir}")
    elif resume_dir:
        check_intact(resume_dir, "--resume_from_checkpoint")
    if resume_dir:
        if not os.path.isfile(os.path.join(resume_dir, STATE_FILE)):
            raise InputError(f"--resume_from_checkpoint {resume_dir}: not a complete checkpoint (no {STATE_FILE})")
        check_resumable(resume_dir, vars(args), distributed.world_size())
        logger.info("resuming from %s", resume_dir)
    return resume_dir
