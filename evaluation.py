"""Inference over tokenized pairs: batched by length, split across ranks, windows averaged."""

import numpy as np
import paddle
import paddle.nn.functional as F

from data import NO_LABEL, average_window_logits, eval_batches, pad_batch
from utils import LABELS, XNLI_LANGUAGES


@paddle.no_grad()
def predict_logits(model, features, batch_size, pad_token_id, use_amp, rank=0, world_size=1):
    """The logits of every pair (the mean over its windows), returned on every rank.

    Each rank computes its own share of the pairs and the shares are summed across ranks, rather
    than every rank repeating the whole computation.
    """
    was_training = model.training
    model.eval()
    window_logits = np.zeros((len(features), len(LABELS)), dtype=np.float32)
    for indices in eval_batches(features, batch_size, rank, world_size):
        input_ids, attention_mask = pad_batch([features.input_ids[i] for i in indices], pad_token_id)
        with paddle.amp.auto_cast(enable=use_amp):
            logits = model(paddle.to_tensor(input_ids), attention_mask=paddle.to_tensor(attention_mask))
        window_logits[indices] = logits.astype("float32").numpy()
    model.train(was_training)

    logits = average_window_logits(window_logits, features.example_ids, features.num_examples)
    if world_size > 1:
        logits[np.arange(features.num_examples) % world_size != rank] = 0
        logits_tensor = paddle.to_tensor(logits)
        paddle.distributed.all_reduce(logits_tensor)
        logits = logits_tensor.numpy()
    return logits


def accuracy_and_loss(logits, labels):
    losses = F.cross_entropy(paddle.to_tensor(logits), paddle.to_tensor(labels), reduction="none")
    return {"accuracy": float((logits.argmax(1) == labels).mean()), "loss": float(losses.numpy().mean())}


def evaluate_languages(model, features_by_language, progress=iter, **predict_options):
    """{language: {"accuracy", "loss"}} for the 15 XNLI languages; `progress` wraps their loop
    (a progress bar)."""
    results = {}
    for lang in progress(XNLI_LANGUAGES):
        features = features_by_language[lang]
        results[lang] = accuracy_and_loss(predict_logits(model, features, **predict_options), features.example_labels())
    return results


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
