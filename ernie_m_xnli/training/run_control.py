"""Watching and steering a run: progress bars, logs and VisualDL scalars, guards against
non-finite losses, stopping cleanly on SIGTERM or Ctrl-C, and the exit codes of failures."""

import logging
import math
import signal
import sys
import time
import traceback
from contextlib import contextmanager

from ernie_m_xnli.evaluation.reporting import format_evaluation
from ernie_m_xnli.setup import distributed
from ernie_m_xnli.setup.arguments import PROGRAM
from ernie_m_xnli.training.checkpoints import DiskFull, no_space_left
from utils import XNLI_LANGUAGES, InputError

logger = logging.getLogger(__name__)


class TrainingStopped(Exception):
    def __init__(self, signum, step, checkpoint):
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after step {step}; saved {checkpoint}. "
            "Continue with the same command and --resume_from_checkpoint latest"
        )
        self.exit_code = 128 + signum


class TrainingFailed(Exception):
    def __init__(self, what, last_good_checkpoint):
        super().__init__(
            f"{what}; last good checkpoint: {last_good_checkpoint or 'none yet'}. Lower "
            "--learning_rate, or resume from that checkpoint"
        )


class NonFiniteGuard:
    """Stops a run whose loss is not finite, or whose loss scaler keeps skipping steps, naming
    `last_good_checkpoint` (the trainer keeps it up to date)."""

    def __init__(self, max_skipped_in_a_row=100, last_good_checkpoint=None):
        self.max_skipped_in_a_row, self.last_good_checkpoint = max_skipped_in_a_row, last_good_checkpoint
        self.skipped, self.skipped_in_a_row = 0, 0

    @contextmanager
    def naming_the_last_checkpoint(self):
        """A rank that timed out waiting for the others says where to continue from."""
        try:
            yield
        except distributed.RankTimeout as error:
            raise distributed.RankTimeout(
                f"{error}; last checkpoint: {self.last_good_checkpoint or 'none yet'}, from which the same command "
                "with --resume_from_checkpoint latest continues"
            ) from None

    def check(self, step, loss, skipped):
        self.skipped += skipped
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if skipped else 0
        if self.skipped_in_a_row >= self.max_skipped_in_a_row:
            raise TrainingFailed(
                f"the loss scaler skipped {self.skipped_in_a_row} steps in a row (non-finite "
                f"gradients) up to step {step}",
                self.last_good_checkpoint,
            )
        if not skipped and not math.isfinite(loss):
            raise TrainingFailed(f"the loss is {loss} at step {step}", self.last_good_checkpoint)


@contextmanager
def errors_as_exit_codes(debug):
    """README's exit codes: 2 for bad input, 128 + signal when stopped by a signal, 1 when training
    fails; the message is one line on stderr, with the traceback only with --debug."""
    try:
        yield
    except OSError as error:  # a full disk where no writer says more (predictions, results)
        if not no_space_left(error):
            raise
        where = f" while writing {error.filename}" if error.filename else ""
        _exit(
            debug,
            DiskFull(
                f"no space left on device{where}: free some space and run again; what was saved "
                "before is intact (--resume_from_checkpoint latest continues a training run)"
            ),
        )
    except (InputError, TrainingStopped, TrainingFailed, DiskFull, distributed.RankTimeout) as error:
        _exit(debug, error)


def _exit(debug, error):
    if debug:
        traceback.print_exc()
    # A stop is what was asked for, not a failure.
    kind = "" if isinstance(error, TrainingStopped) else "error: "
    print(f"{PROGRAM}: {kind}{error}", file=sys.stderr)
    sys.exit(2 if isinstance(error, InputError) else getattr(error, "exit_code", 1))


class NoWriter:
    def add_scalar(self, tag, value, step):
        pass

    def close(self):
        pass


def open_visualdl(wanted, logdir):
    """A VisualDL writer: `wanted` True requires VisualDL, None uses it when installed, False never."""
    if wanted is False:
        return NoWriter()
    try:
        from visualdl import LogWriter
    except ImportError:
        if wanted:
            raise InputError("--visualdl true: VisualDL is not installed (pip install visualdl)") from None
        return NoWriter()
    return LogWriter(logdir=logdir)


class TrainingProgress:
    """The progress bar, a log line every `logging_steps` steps (upstream's fields), the same
    numbers as VisualDL scalars, and each line's mean loss in `loss_history` (TrainingState's)."""

    def __init__(self, progress_bar, writer, logging_steps, num_training_steps, examples_per_step, loss_history):
        self.progress_bar, self.writer, self.loss_history = progress_bar, writer, loss_history
        self.logging_steps, self.num_training_steps = logging_steps, num_training_steps
        self.examples_per_step = examples_per_step
        self.loss_sum, self.steps_since_log, self.started = 0.0, 0, time.time()

    def step(self, step, epoch, loss, learning_rate, loss_scale, skipped_so_far):
        self.loss_sum += loss if math.isfinite(loss) else 0.0
        self.steps_since_log += 1
        self.progress_bar.update(1)
        steps_per_second = self.progress_bar.format_dict.get("rate") or 0.0
        self.progress_bar.set_postfix(
            loss=f"{loss:.4f}",
            lr=f"{learning_rate:.2e}",
            examples_per_s=f"{steps_per_second * self.examples_per_step:.1f}",
            refresh=False,
        )
        if step % self.logging_steps:
            return
        # Over the steps this process ran: after a resume, fewer than logging_steps come before the first line.
        elapsed, mean_loss = time.time() - self.started, self.loss_sum / self.steps_since_log
        logger.info(
            "step %d/%d, epoch %d, loss %.4f, lr %.3e, %.1f examples/s%s",
            step,
            self.num_training_steps,
            epoch + 1,
            mean_loss,
            learning_rate,
            self.steps_since_log * self.examples_per_step / elapsed,
            f", {skipped_so_far} steps skipped so far (non-finite gradients)" if skipped_so_far else "",
        )
        self.loss_history.append({"step": step, "loss": mean_loss})
        self.writer.add_scalar("train/loss", mean_loss, step)
        self.writer.add_scalar("train/lr", learning_rate, step)
        if loss_scale is not None:
            self.writer.add_scalar("train/loss_scale", loss_scale, step)
        self.loss_sum, self.steps_since_log, self.started = 0.0, 0, time.time()

    def evaluation(self, split, step, result):
        logger.info(format_evaluation(f"{split} accuracy at step {step}", result))
        for lang in XNLI_LANGUAGES:
            self.writer.add_scalar(f"{split}/accuracy/{lang}", result.accuracy[lang], step)
        self.writer.add_scalar(f"{split}/accuracy/avg", result.average, step)

    def close(self):
        self.progress_bar.close()
        self.writer.close()


class StopRequest:
    """Turns SIGTERM (preemption) and SIGINT (Ctrl-C) into a request to stop after the current
    step, so that a checkpoint can be saved; a second Ctrl-C interrupts at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self):
        self.signum = 0
        self.previous_handlers = {signum: signal.signal(signum, self._handle) for signum in self.SIGNALS}
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self.previous_handlers.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def agreed(self):
        """The signal any rank received, so that all ranks stop at the same step."""
        return distributed.max_over_ranks(self.signum)
