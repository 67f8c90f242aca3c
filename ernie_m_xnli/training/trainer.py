"""The training loop: one place where a training step reads top to bottom."""

import contextlib
import logging
import os
import time
from functools import partial
from itertools import islice

import numpy as np
import paddle
import paddle.nn.functional as F

from ernie_m_xnli.data.batching import ShardedBatchSampler, collate_micro_batches, padded_inputs
from ernie_m_xnli.data.packing import packed_inputs
from ernie_m_xnli.models.training_forward import TrainingForward
from ernie_m_xnli.setup import distributed
from ernie_m_xnli.setup.runtime import progress_bar
from ernie_m_xnli.training.checkpoints import (
    FLOAT32_MATMUL_KEY,
    TrainingState,
    atomic_directory,
    best_model_path,
    checkpoint_path,
    load_training_checkpoint,
    load_weights,
    prune_best_models,
    prune_checkpoints,
    save_model,
    write_model,
    write_training_state,
)
from ernie_m_xnli.training.optimization import clip_grad_norm_, create_optimizer, linear_schedule
from ernie_m_xnli.training.plain_state import capture_rng_state
from ernie_m_xnli.training.run_control import (
    NonFiniteGuard,
    NoWriter,
    StopRequest,
    TrainingProgress,
    TrainingStopped,
    open_visualdl,
)

logger = logging.getLogger(__name__)


class Trainer:
    """Fine-tunes a models.loading.RunModel on `features.train`, selecting on `features.dev` with
    `evaluator`; `self.model` is the family's model inside its classifier, which is optimized, saved
    and restored.

    It owns the optimizer, the learning-rate schedule, the loss scaler and the TrainingState, and
    continues a run exactly from `resume_dir`. `args` are run_classifier's parsed arguments: the
    run's settings, as a Hugging Face Trainer takes its TrainingArguments.

    A step is one optimizer update over `batch_size` x processes x `gradient_accumulation_steps`
    examples; steps, warmup, logging, evaluation and saving all count these updates.
    """

    def __init__(self, args, run_model, features, evaluator, resume_dir=None):
        classifier, tokenizer = run_model.classifier, run_model.tokenizer
        model = classifier.model
        self.args, self.model, self.tokenizer, self.precision = args, model, tokenizer, run_model.precision
        self.features, self.evaluator = features, evaluator
        # Each rank draws its whole share of a step at once and cuts it into consecutive
        # micro-batches: the step sees the examples one big batch would, in the same order.
        lengths = features.train.lengths() if args.group_by_length else None
        self.sampler = ShardedBatchSampler(
            len(features.train),
            args.batch_size * args.gradient_accumulation_steps,
            distributed.rank(),
            distributed.world_size(),
            args.seed,
            lengths,
        )
        model_inputs = partial(packed_inputs, max_length=args.max_seq_length) if args.packing else padded_inputs
        self.collate = partial(
            collate_micro_batches,
            num_micro_batches=args.gradient_accumulation_steps,
            model_inputs=partial(
                model_inputs, pad_token_id=tokenizer.pad_token_id, sep_token_id=tokenizer.sep_token_id
            ),
        )
        self.tokens = TokenTally()
        steps_of_epochs = int(np.ceil(len(self.sampler) * args.num_train_epochs))
        self.num_training_steps = args.max_steps if args.max_steps > 0 else steps_of_epochs
        warmup = args.warmup_steps if args.warmup_steps > 0 else args.warmup_proportion
        self.lr_scheduler = linear_schedule(args.learning_rate, self.num_training_steps, warmup)
        self.optimizer = create_optimizer(
            model, classifier.family, self.lr_scheduler, args.layerwise_decay, args.weight_decay, args.adam_epsilon
        )
        word_embeddings = classifier.family.word_embeddings(model)
        self.padding_row = word_embeddings.weight, getattr(model.config, "pad_token_id", None)
        self.training_forward = TrainingForward(self.precision, model, word_embeddings)
        self.scaler = paddle.amp.GradScaler(enable=self.precision.scales_loss, init_loss_scaling=args.scale_loss)
        self.state = (
            load_training_checkpoint(resume_dir, model, self.optimizer, self.scaler) if resume_dir else TrainingState()
        )
        self.guard = NonFiniteGuard(last_good_checkpoint=resume_dir)
        self.weights_step = self.state.global_step  # the step whose weights the model holds
        # DataParallel broadcasts the weights now and all-reduces gradients in backward; `model` stays the
        # plain layer that is saved and evaluated.
        distributed.all_ranks_reach("the start of training")
        self.parallel_model = paddle.DataParallel(classifier) if distributed.world_size() > 1 else classifier

    @property
    def examples_per_step(self):
        return self.args.batch_size * distributed.world_size() * self.args.gradient_accumulation_steps

    def train(self):
        """Train, evaluating dev every `eval_steps` and saving a checkpoint every `save_steps` (both
        at the end too); a stop signal saves a checkpoint and raises TrainingStopped. Returns the
        TrainingState, which holds the models selected on dev."""
        logger.info(
            "training %d steps: %d inputs, %d per card x %d card(s) x %d accumulated = %d per step, %d steps per epoch",
            self.num_training_steps,
            len(self.features.train),
            self.args.batch_size,
            distributed.world_size(),
            self.args.gradient_accumulation_steps,
            self.examples_per_step,
            len(self.sampler),
        )
        progress = self.open_progress()
        self.model.train()
        state = self.state
        with StopRequest() as stop_request, self.guard.naming_the_last_checkpoint():
            for epoch, batch_index, micro_batches in self.remaining_batches():
                started = time.perf_counter()
                loss = self.training_step(micro_batches)
                self.tokens.add_seconds(time.perf_counter() - started)
                state.global_step, state.epoch, state.next_batch = state.global_step + 1, epoch, batch_index + 1
                loss_scale, skipped = scaler_status(self.scaler)
                self.guard.check(state.global_step, loss, skipped)
                progress.step(
                    state.global_step, epoch, loss, self.lr_scheduler.get_lr(), loss_scale, self.guard.skipped
                )

                last_step = state.global_step == self.num_training_steps
                if state.global_step % self.args.eval_steps == 0 or last_step:
                    self.evaluate_dev(progress)
                checkpoint = None
                if state.global_step % self.args.save_steps == 0 or last_step:
                    checkpoint = self.save()
                signum = stop_request.agreed()
                if signum:
                    raise TrainingStopped(signum, state.global_step, checkpoint or self.save())
        progress.close()
        self.tokens.log("packed" if self.args.packing else "padded")
        self.weights_step = state.global_step
        return state

    def training_step(self, micro_batches):
        """One optimizer step over a batch's micro-batches, the same code for every precision;
        returns the batch's mean loss."""
        num_examples = sum(len(micro_batch.labels) for micro_batch in micro_batches)
        batch_loss = 0.0
        for index, micro_batch in enumerate(micro_batches):
            inputs = {name: paddle.to_tensor(value) for name, value in micro_batch.inputs.items()}
            with self.gradient_sync(index == len(micro_batches) - 1):
                with self.training_forward():
                    logits = self.parallel_model(**inputs)
                    # The micro-batch's share of the batch's mean: gradients add up to the batch's.
                    labels = paddle.to_tensor(micro_batch.labels)
                    loss = F.cross_entropy(logits.astype("float32"), labels, reduction="sum") / num_examples
                self.scaler.scale(loss).backward()
            batch_loss += loss.detach()
            self.tokens.add(micro_batch)
        self.keep_padding_row()
        self.clip_gradients()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.release_gradients()
        self.lr_scheduler.step()
        return float(batch_loss)

    def release_gradients(self):
        """Drop the step's gradients, so that the next backward pass hands its own to the parameters.
        Paddle's default zero-fills them instead (1.1 GB a step for ernie-m-base), and the next pass then
        adds its gradients to those zeros: the same numbers, 1.3 GB more peak memory and ~5% of a
        bfloat16 step on a 2-core AMD EPYC (benchmarks/paddle_settings.py measures the same step)."""
        self.optimizer.clear_grad(set_to_zero=False)

    def gradient_sync(self, last_micro_batch):
        """DataParallel all-reduces the gradients once per step, after the last micro-batch."""
        if last_micro_batch or distributed.world_size() == 1:
            return contextlib.nullcontext()
        return self.parallel_model.no_sync()

    @paddle.no_grad()
    def keep_padding_row(self):
        """Leave the token embedding of the config's pad_token_id as it is, as transformers does (its
        nn.Embedding's padding_idx) and PaddleNLP's embeddings do not: the same training for a config
        whose padding id is its padding (which no loss reaches), and transformers' training for one that
        names a real token (multilingual-e5's says 0, its <s>, whose embedding transformers never moves)."""
        weight, row = self.padding_row
        if row is not None and weight.grad is not None:
            weight.grad[row] = 0

    def clip_gradients(self):
        """Clip the global norm of the (unscaled) gradients to --max_grad_norm. Paddle's `grad_clip`
        optimizer argument would clip each parameter group (each learning-rate ratio) on its own."""
        if self.args.max_grad_norm > 0:
            self.scaler.unscale_(self.optimizer)
            clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)

    def remaining_batches(self):
        """(epoch, index in the epoch, micro-batches) from where the state stands to the last step."""
        batches = batches_from(self.sampler, self.micro_batches, self.state.epoch, self.state.next_batch)
        return islice(batches, self.num_training_steps - self.state.global_step)

    def micro_batches(self, indices):
        """The MicroBatches of one step's training samples."""
        return self.collate([self.features.train[i] for i in indices])

    def evaluate_dev(self, progress):
        """Evaluate dev; keep the weights if they are the best so far under a selection protocol."""
        result = self.evaluator.evaluate(self.features.dev)
        progress.evaluation("dev", self.state.global_step, result)
        improved = self.state.record_dev(result, self.args.output_dir)
        if improved:
            self.save_best_model()
            scores = ", ".join(f"{protocol} {100 * self.state.best[protocol].score:.2f}" for protocol in improved)
            logger.info("new best dev score at step %d: %s", self.state.global_step, scores)

    def save_best_model(self):
        """Save the weights as `best-<step>` (not a whole checkpoint), dropping superseded ones."""
        if distributed.is_main():
            write_model(best_model_path(self.args.output_dir, self.state.global_step), self.model, self.tokenizer)
            prune_best_models(self.args.output_dir, self.state)
        distributed.barrier(what=f"saving best-{self.state.global_step}")

    def save(self):
        """Save `checkpoint-<step>` from rank 0, with every rank's random state; returns its path."""
        directory = checkpoint_path(self.args.output_dir, self.state.global_step)
        rng_states = distributed.gather(capture_rng_state(), what=f"saving checkpoint-{self.state.global_step}")
        if distributed.is_main():
            with atomic_directory(directory) as partial_dir:
                save_model(partial_dir, self.model, self.tokenizer)
                run_state = {
                    **self.state.to_dict(),
                    "args": vars(self.args),
                    FLOAT32_MATMUL_KEY: self.precision.float32_matmul,
                }
                write_training_state(partial_dir, self.model, self.optimizer, self.scaler, rng_states, run_state)
            if self.args.save_total_limit:
                prune_checkpoints(self.args.output_dir, self.args.save_total_limit)
                prune_best_models(self.args.output_dir, self.state)
            logger.info("saved %s", directory)
        distributed.barrier(what=f"saving checkpoint-{self.state.global_step}")
        self.guard.last_good_checkpoint = directory
        return directory

    def restore(self, selection):
        """Give the model the weights of a Selection (unless it has them already)."""
        if selection.step != self.weights_step:
            load_weights(self.model, selection.directory)
            self.weights_step = selection.step

    def open_progress(self):
        bar = progress_bar(
            self.args.disable_tqdm,
            total=self.num_training_steps,
            initial=self.state.global_step,
            desc="training",
            unit="step",
        )
        visualdl_dir = os.path.join(self.args.output_dir, "visualdl")
        writer = open_visualdl(self.args.visualdl, visualdl_dir) if distributed.is_main() else NoWriter()
        return TrainingProgress(
            bar,
            writer,
            self.args.logging_steps,
            self.num_training_steps,
            self.examples_per_step,
            self.state.loss_history,
        )


def batches_from(sampler, collate, epoch, start_batch):
    """(epoch, index in the epoch, collated batch), epoch after epoch, from a position in the data order."""
    while True:
        sampler.set_epoch(epoch, start_batch)
        for index, indices in enumerate(sampler, start=start_batch):
            yield epoch, index, collate(indices)
        epoch, start_batch = epoch + 1, 0


class TokenTally:
    """Tokens the model computed (padding included), real tokens and examples of the batches trained
    on, and the seconds their training steps took (evaluation and saving not counted)."""

    def __init__(self):
        self.computed, self.real, self.examples, self.seconds = 0, 0, 0, 0.0

    def add(self, micro_batch):
        self.computed += micro_batch.computed_tokens
        self.real += micro_batch.real_tokens
        self.examples += len(micro_batch.labels)

    def add_seconds(self, seconds):
        self.seconds += seconds

    @property
    def examples_per_second(self):
        return self.examples / max(self.seconds, 1e-9)

    def log(self, batches):
        if self.real:
            logger.info(
                "%s batches: %.2f computed tokens per real token; training steps ran %.1f examples/s on this process",
                batches,
                self.computed / self.real,
                self.examples_per_second,
            )


def scaler_status(scaler):
    """(loss scale, whether the last step was skipped for non-finite gradients); (None, False)
    without AMP. Paddle 3.3's GradScaler has no public accessor for either: `_scale` and
    `_found_inf` are the attributes its own `update()` reads."""
    if not scaler.is_enable():
        return None, False
    return float(scaler._scale), bool(scaler._found_inf)
