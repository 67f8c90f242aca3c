"""The output directory of a run: one run at a time in it (a lock the operating system releases
however the process ends), never mixed with an earlier run, and left behind only by a run that
got as far as saving something."""

import fcntl
import os
import shutil
import socket
from contextlib import contextmanager

from ernie_m_xnli.evaluation.reporting import RESULTS_FILE
from ernie_m_xnli.setup import distributed
from ernie_m_xnli.training.checkpoints import list_checkpoints
from utils import InputError


@contextmanager
def removed_on_bad_input(output_dir):
    """If the run stops on bad input before saving anything, remove `output_dir` when this run
    created it: a failed start leaves nothing behind, and never removes what was there."""
    existed = os.path.exists(output_dir)
    try:
        yield
    except InputError:
        if not existed and distributed.is_main() and not list_checkpoints(output_dir):
            shutil.rmtree(output_dir, ignore_errors=True)
        raise


@contextmanager
def one_run_in(output_dir):
    """Hold an exclusive lock on `output_dir` (made if missing) for the block, on the main rank: a second
    run into the same directory stops at once. The lock is on the directory itself (flock), so nothing is
    left inside it and the operating system releases it however the process ends, kill -9 included."""
    if not distributed.is_main():
        yield
        return
    make_output_dir(output_dir)
    descriptor = os.open(output_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"--output_dir {output_dir} is in use by {lock_holder(descriptor)}: one run per output directory "
                "at a time; wait for that one to end, or pass another --output_dir"
            ) from None
        yield
    finally:
        os.close(descriptor)


def lock_holder(descriptor):
    """Who holds the flock on an open directory, from Linux's /proc/locks: "process <pid> on <host>"."""
    status = os.fstat(descriptor)
    where = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii") as file:
            lines = [line.split() for line in file]
    except OSError:
        lines = []
    # "1: FLOCK  ADVISORY  WRITE 12345 fd:01:2345 0 EOF"
    pids = [fields[4] for fields in lines if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == where]
    return f"process {pids[0]} on {socket.gethostname()}" if pids else "another process"


def make_output_dir(output_dir):
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise InputError(f"--output_dir {output_dir}: cannot create it ({error.strerror})") from None


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
    make_output_dir(args.output_dir)
    if not os.access(args.output_dir, os.W_OK):
        raise InputError(f"--output_dir {args.output_dir}: not writable")
    if training and args.overwrite_output_dir and not args.resume_from_checkpoint and distributed.is_main():
        for _, path in list_checkpoints(args.output_dir):
            shutil.rmtree(path)
    distributed.barrier(what="preparing --output_dir")
