"""Inference over tokenized pairs: batched by length, split across ranks, windows averaged."""

import logging
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import paddle
import paddle.nn.functional as F

from ernie_m_xnli.data.batching import eval_batches, padded_inputs
from ernie_m_xnli.data.encoding import average_window_logits
from ernie_m_xnli.models.dropout import no_dropout_outside_training
from ernie_m_xnli.models.inference import create_predictor, predictor_logits, save_static_graph, static_forward
from ernie_m_xnli.models.precision import Precision
from ernie_m_xnli.setup import distributed
from utils import LABELS, XNLI_LANGUAGES, average_accuracy, set_cpu_threads, threads_per_process

logger = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """Accuracy (a fraction) and mean loss of each XNLI language; `logits` ({language: [pairs, 3]})
    and `labels` ({language: [pairs]}) of each pair, in the file's order, are kept in memory only."""

    accuracy: dict[str, float]
    loss: dict[str, float]
    logits: dict = field(default=None, repr=False, compare=False)
    labels: dict = field(default=None, repr=False, compare=False)

    @property
    def average(self):
        return average_accuracy(self.accuracy)

    def score(self, select_on):
        """What model selection compares: the average, or English ("en")."""
        return self.average if select_on == "avg" else self.accuracy[select_on]

    def summary(self):
        """The accuracies and losses without the per-pair arrays (what checkpoints keep)."""
        return EvaluationResult(self.accuracy, self.loss)

    def to_dict(self):
        return {"accuracy": self.accuracy, "loss": self.loss}

    @classmethod
    def from_dict(cls, saved):
        if "accuracy" not in saved:  # checkpoints of earlier versions: {lang: {"accuracy", "loss"}}
            saved = {key: {lang: result[key] for lang, result in saved.items()} for key in ("accuracy", "loss")}
        return cls(saved["accuracy"], saved["loss"])


@dataclass
class Evaluator:
    """Runs a models.families.Classifier over features in eval mode; `progress_bar` wraps the loop
    over languages.

    With `backend` "inference", each evaluation first saves the model's current weights as a static
    graph and runs it through Paddle Inference with oneDNN (on a CPU several times faster than the
    dynamic graph, the same logits to float rounding); where that cannot run, it warns once and
    uses the dynamic graph.
    """

    classifier: paddle.nn.Layer
    batch_size: int
    pad_token_id: int
    sep_token_id: int
    precision: Precision = Precision()
    progress_bar: Callable = iter
    backend: str = "dynamic"
    cpu_threads: int = 0  # of the process and of Paddle Inference; 0: the process's share of the cores
    traced_forward: Callable = field(default=None, init=False, repr=False)  # traced once, saved at each evaluation

    def predict_logits(self, features):
        """The logits of every pair (the mean over its windows), returned on every rank.

        Each rank computes its own share of the pairs and the shares are summed across ranks,
        rather than every rank repeating the whole computation.
        """
        with self.batch_runner() as run_batch:
            return self._predict(features, run_batch)

    @contextmanager
    def batch_runner(self):
        """A function from a padded batch's inputs (name: array) to logits, for one evaluation."""
        was_training = self.classifier.training
        self.classifier.eval()
        predictor = None
        try:
            predictor = self.backend == "inference" and self._static_predictor()
            yield (lambda inputs: predictor_logits(predictor, inputs)) if predictor else self._dynamic_logits
        finally:
            self.classifier.train(was_training)
            if predictor:
                # A predictor's run leaves its own thread setting on the process: the training steps
                # after it would use other threads, and round differently than after a resume.
                set_cpu_threads(threads_per_process(self.cpu_threads))

    @paddle.no_grad()
    def _dynamic_logits(self, inputs):
        with self.precision.evaluation_forward(self.classifier), no_dropout_outside_training():
            logits = self.classifier(**{name: paddle.to_tensor(value) for name, value in inputs.items()})
        return logits.astype("float32").numpy()

    def _static_predictor(self):
        if self.classifier.family.static_graph_problem:
            logger.warning("--eval_backend inference: %s", self.classifier.family.static_graph_problem)
            self.backend = "dynamic"
            return None
        try:
            with tempfile.TemporaryDirectory(prefix="ernie-m-eval-") as directory:
                self.traced_forward = self.traced_forward or static_forward(self.classifier)
                save_static_graph(self.classifier, os.path.join(directory, "model"), self.traced_forward)
                path, threads = os.path.join(directory, "model"), threads_per_process(self.cpu_threads)
                return create_predictor(path, threads, self.precision.cpu_bfloat16)
        except Exception as error:  # any failure of Paddle Inference: the dynamic graph still works
            logger.warning("--eval_backend inference cannot run here (%s); evaluating with the dynamic graph", error)
            self.backend = "dynamic"
            return None

    def _predict(self, features, run_batch):
        rank, world_size = distributed.rank(), distributed.world_size()
        window_logits = np.zeros((len(features), len(LABELS)), dtype=np.float32)
        for indices in eval_batches(features, self.batch_size, rank, world_size):
            batch = [features.input_ids[i] for i in indices]
            window_logits[indices] = run_batch(padded_inputs(batch, self.pad_token_id, self.sep_token_id))

        logits = average_window_logits(window_logits, features.example_ids, features.num_examples)
        logits[np.arange(features.num_examples) % world_size != rank] = 0
        return distributed.sum_over_ranks(logits, what="an evaluation (summing the ranks' logits)")

    def evaluate(self, features_by_language):
        """The EvaluationResult of the 15 XNLI languages."""
        accuracy, loss = {}, {}
        with self.batch_runner() as run_batch:
            logits_by_language = {
                lang: self._predict(features_by_language[lang], run_batch) for lang in self.progress_bar(XNLI_LANGUAGES)
            }
        labels_by_language = {lang: features_by_language[lang].example_labels() for lang in XNLI_LANGUAGES}
        for lang, logits in logits_by_language.items():
            labels = labels_by_language[lang]
            accuracy[lang] = float((logits.argmax(1) == labels).mean())
            losses = F.cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(labels), reduction="none")
            loss[lang] = float(losses.numpy().mean())
        return EvaluationResult(accuracy, loss, logits_by_language, labels_by_language)
