"""Inference over tokenized pairs: batched by length, split across ranks, windows averaged."""

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import paddle
import paddle.nn.functional as F

import distributed
from data import NO_LABEL, average_window_logits, eval_batches, pad_batch
from utils import LABELS, XNLI_LANGUAGES, average_accuracy


@dataclass
class EvaluationResult:
    """Accuracy (a fraction) and mean loss of each XNLI language."""

    accuracy: dict[str, float]
    loss: dict[str, float]

    @property
    def average(self):
        return average_accuracy(self.accuracy)

    def score(self, select_on):
        """What model selection compares: the average, or English ("en")."""
        return self.average if select_on == "avg" else self.accuracy[select_on]

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, saved):
        if "accuracy" not in saved:  # checkpoints of earlier versions: {lang: {"accuracy", "loss"}}
            saved = {key: {lang: result[key] for lang, result in saved.items()} for key in ("accuracy", "loss")}
        return cls(saved["accuracy"], saved["loss"])


@dataclass
class Evaluator:
    """Runs `model` over features in eval mode; `progress_bar` wraps the loop over languages."""

    model: paddle.nn.Layer
    batch_size: int
    pad_token_id: int
    use_amp: bool = False
    progress_bar: Callable = iter

    @paddle.no_grad()
    def predict_logits(self, features):
        """The logits of every pair (the mean over its windows), returned on every rank.

        Each rank computes its own share of the pairs and the shares are summed across ranks,
        rather than every rank repeating the whole computation.
        """
        was_training = self.model.training
        self.model.eval()
        rank, world_size = distributed.rank(), distributed.world_size()
        window_logits = np.zeros((len(features), len(LABELS)), dtype=np.float32)
        for indices in eval_batches(features, self.batch_size, rank, world_size):
            input_ids, attention_mask = pad_batch([features.input_ids[i] for i in indices], self.pad_token_id)
            with paddle.amp.auto_cast(enable=self.use_amp):
                logits = self.model(paddle.to_tensor(input_ids), attention_mask=paddle.to_tensor(attention_mask))
            window_logits[indices] = logits.astype("float32").numpy()
        self.model.train(was_training)

        logits = average_window_logits(window_logits, features.example_ids, features.num_examples)
        logits[np.arange(features.num_examples) % world_size != rank] = 0
        return distributed.sum_over_ranks(logits)

    def evaluate(self, features_by_language):
        """The EvaluationResult of the 15 XNLI languages."""
        accuracy, loss = {}, {}
        for lang in self.progress_bar(XNLI_LANGUAGES):
            features = features_by_language[lang]
            logits, labels = self.predict_logits(features), features.example_labels()
            accuracy[lang] = float((logits.argmax(1) == labels).mean())
            losses = F.cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(labels), reduction="none")
            loss[lang] = float(losses.numpy().mean())
        return EvaluationResult(accuracy, loss)


def write_predictions(path, pairs, logits):
    """One TSV row per pair: the text, the predicted label, the three probabilities, and the gold
    label where the input had one."""
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    with open(path, "w", encoding="utf-8") as file:
        file.write("\t".join(["premise", "hypothesis", "prediction", *(f"p_{label}" for label in LABELS), "label"]))
        file.write("\n")
        for pair, row in zip(pairs, probabilities):
            gold = "" if pair.label == NO_LABEL else LABELS[pair.label]
            cells = [pair.premise, pair.hypothesis, LABELS[int(row.argmax())], *(f"{p:.6f}" for p in row), gold]
            file.write("\t".join(cells) + "\n")
