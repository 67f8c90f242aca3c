"""The training step: gradient accumulation, clipping, and selection under both protocols."""

import json
import os
import re
import shutil

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from safetensors.numpy import load_file

from ernie_m_xnli.data.encoding import encode_pairs
from ernie_m_xnli.data.splits import XnliFeatures
from ernie_m_xnli.data.xnli_files import read_train_split, xnli_file_paths
from ernie_m_xnli.evaluation.evaluator import EvaluationResult
from ernie_m_xnli.evaluation.reporting import SelectedResult
from ernie_m_xnli.models.loading import RunModel, load_classifier
from ernie_m_xnli.models.precision import Precision
from ernie_m_xnli.setup.arguments import parse_args
from ernie_m_xnli.training.checkpoints import Selection, TrainingState
from ernie_m_xnli.training.plain_state import load_weights_file
from ernie_m_xnli.training.trainer import Trainer
from run_classifier import evaluate_selected_models
from utils import XNLI_LANGUAGES

from conftest import cpu_run, fixture_dir, flags, read_results, run_main, run_script

# Dropout off, so that a step's result depends only on the examples it sees.
EXACT = dict(
    dropout=0, learning_rate="1e-3", layerwise_decay="0.8", save_steps=6, max_steps=6, logging_steps=1, cache_dir=""
)


def final_weights(output_dir, step=6):
    return load_weights_file(os.path.join(output_dir, f"checkpoint-{step}"))


def assert_close_weights(actual_dir, expected_dir):
    """Equal up to float rounding, which Adam's division by the gradient's own size magnifies in
    weights whose gradient is near zero: 1e-6 is a thousandth of what 6 steps at 1e-3 move a weight."""
    actual, expected = final_weights(actual_dir), final_weights(expected_dir)
    assert actual.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)


def logged_losses(log, as_text=False):
    """The loss of every step, from a run with --logging_steps 1."""
    losses = re.findall(r"INFO step \d+/\d+, epoch \d+, loss ([\d.]+)", log)
    return losses if as_text else [float(loss) for loss in losses]


@pytest.mark.parametrize("accumulation", [2, 4])
def test_accumulated_micro_batches_update_like_one_large_batch(tmp_path, tiny_model_dir, varied_xnli_dir, accumulation):
    large = cpu_run(tiny_model_dir, varied_xnli_dir, tmp_path / "large", batch_size=8, flush_denormals="false", **EXACT)
    code, _, large_log = run_main(*flags(**large))
    assert code == 0, large_log
    micro = cpu_run(
        tiny_model_dir,
        varied_xnli_dir,
        tmp_path / "micro",
        batch_size=8 // accumulation,
        gradient_accumulation_steps=accumulation,
        flush_denormals="false",
        **EXACT,
    )
    code, _, stderr = run_main(*flags(**micro))
    assert code == 0, stderr
    assert f"{8 // accumulation} per card x 1 card(s) x {accumulation} accumulated = 8 per step" in stderr
    assert_close_weights(tmp_path / "micro", tmp_path / "large")
    # Adam's update hardly changes if every gradient is N times too large; the loss would show it.
    assert logged_losses(stderr) == pytest.approx(logged_losses(large_log), abs=2e-4)
    assert len(logged_losses(stderr)) == 6
    # results.json keeps each log line's loss unrounded (benchmarks/fidelity.py compares them).
    history = read_results(tmp_path / "micro")["train_loss_history"]
    assert [entry["step"] for entry in history] == list(range(1, 7))
    assert [f"{entry['loss']:.4f}" for entry in history] == logged_losses(stderr, as_text=True)


def test_training_on_packed_batches_ends_where_padded_batches_do(tmp_path, tiny_model_dir, varied_xnli_dir):
    logs = {}
    for packing in ("true", "false"):
        run = cpu_run(tiny_model_dir, varied_xnli_dir, tmp_path / packing, batch_size=8, packing=packing, **EXACT)
        code, _, logs[packing] = run_main(*flags(**run))
        assert code == 0, logs[packing]
    assert_close_weights(tmp_path / "true", tmp_path / "false")
    assert logged_losses(logs["true"]) == pytest.approx(logged_losses(logs["false"]), abs=1e-5)
    ratios = {
        packing: float(re.search(r"([\d.]+) computed tokens per real token", log)[1]) for packing, log in logs.items()
    }
    assert 1.0 <= ratios["true"] < ratios["false"] - 0.2, ratios


def test_training_is_the_same_whichever_backend_evaluates_dev(tmp_path, tiny_model_dir, varied_xnli_dir):
    # Paddle Inference runs in the training process between steps: it must leave no trace on them.
    for backend in ("dynamic", "inference"):
        run = cpu_run(
            tiny_model_dir,
            varied_xnli_dir,
            tmp_path / backend,
            batch_size=8,
            eval_steps=3,
            eval_backend=backend,
            **EXACT,
        )
        code, _, log = run_main(*flags(**run))
        assert code == 0, log
    dynamic, inference = final_weights(tmp_path / "dynamic"), final_weights(tmp_path / "inference")
    assert [name for name in dynamic if not np.array_equal(dynamic[name], inference[name])] == []


def test_two_processes_accumulating_update_like_two_processes_with_double_batches(
    tmp_path, tiny_model_dir, varied_xnli_dir
):
    runs = {"double": dict(batch_size=8), "accumulated": dict(batch_size=4, gradient_accumulation_steps=2)}
    for name, batch in runs.items():
        launcher = ["-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", tmp_path / f"{name}-logs"]
        done = run_script(
            **cpu_run(tiny_model_dir, varied_xnli_dir, tmp_path / name, **batch, **EXACT), launcher=launcher
        )
        assert done.returncode == 0, (tmp_path / f"{name}-logs" / "workerlog.0").read_text()[-3000:]
    assert_close_weights(tmp_path / "accumulated", tmp_path / "double")


def test_clipping_scales_every_gradient_by_one_global_norm(tmp_path, tiny_model_dir, xnli_dir, tokenizer):
    max_norm = 0.05
    args = parse_args(flags(**cpu_run(tiny_model_dir, xnli_dir, tmp_path, max_grad_norm=max_norm, dropout=0)))
    pairs = read_train_split(xnli_file_paths(xnli_dir, ["en"])["train"]).pairs_by_language["en"][:32]
    features = XnliFeatures(encode_pairs(tokenizer, pairs, 64, 0), None, None, None)
    classifier = load_classifier(tiny_model_dir, args.dropout, len(tokenizer), args.max_seq_length)
    trainer = Trainer(args, RunModel(classifier, tokenizer, Precision("cpu")), features, evaluator=None)
    model = classifier.model
    (micro_batch,) = trainer.micro_batches(next(iter(trainer.sampler)))
    inputs = {name: paddle.to_tensor(value) for name, value in micro_batch.inputs.items()}
    F.cross_entropy(trainer.parallel_model(**inputs), paddle.to_tensor(micro_batch.labels)).backward()
    gradients = {name: parameter.grad.numpy().copy() for name, parameter in model.named_parameters()}
    norm = np.sqrt(sum(float((gradient.astype(np.float64) ** 2).sum()) for gradient in gradients.values()))
    assert norm > 2 * max_norm, "the test needs gradients that clipping changes"

    trainer.clip_gradients()
    # Across all parameter groups (the layerwise learning-rate ratios), not within each.
    for name, parameter in model.named_parameters():
        # atol: an element may be denormal, which a process that flushes denormals computes as 0.
        expected = gradients[name] * max_norm / (norm + 1e-6)
        np.testing.assert_allclose(parameter.grad.numpy(), expected, rtol=1e-5, atol=1e-30)


def evaluation(avg_language_accuracy, en_accuracy):
    accuracy = {lang: avg_language_accuracy for lang in XNLI_LANGUAGES}
    accuracy["en"] = en_accuracy
    return EvaluationResult(accuracy, {lang: 0.0 for lang in XNLI_LANGUAGES})


def test_each_protocol_keeps_the_first_of_its_best_dev_scores(tmp_path):
    state = TrainingState()
    improvements = []
    for step, (others, en) in enumerate([(0.5, 0.6), (0.6, 0.5), (0.55, 0.6), (0.6, 0.7)], start=1):
        state.global_step = step
        improvements.append(state.record_dev(evaluation(others, en), str(tmp_path)))
    assert improvements == [["avg", "en"], ["avg"], [], ["avg", "en"]] or improvements[:3] == [
        ["avg", "en"],
        ["avg"],
        [],
    ]
    assert (state.best["avg"].step, state.best["en"].step) == (4, 4)

    state = TrainingState()
    for step, (others, en) in enumerate([(0.5, 0.8), (0.7, 0.5)], start=1):
        state.global_step = step
        state.record_dev(evaluation(others, en), str(tmp_path))
    assert (state.best["avg"].step, state.best["en"].step) == (2, 1)
    assert state.best["en"].directory == str(tmp_path / "best-1")


class FakeTrainer:
    """What evaluate_selected_models uses of a Trainer: its state, its arguments and restore()."""

    def __init__(self, best, select_on):
        self.state = TrainingState(best=best)
        self.args = type("Args", (), {"select_on": select_on})
        self.restored = []

    def restore(self, selection):
        self.restored.append(selection.step)


class CountingEvaluator:
    def __init__(self):
        self.calls = 0

    def evaluate(self, features):
        self.calls += 1
        return evaluation(0.5 + self.calls / 10, 0.5)


@pytest.mark.parametrize("select_on", ["avg", "en"])
def test_test_is_evaluated_once_per_distinct_selected_model_and_select_on_last(select_on):
    different = {
        "avg": Selection(2, 0.7, "best-2", evaluation(0.7, 0.5)),
        "en": Selection(1, 0.8, "best-1", evaluation(0.5, 0.8)),
    }
    trainer, evaluator = FakeTrainer(different, select_on), CountingEvaluator()
    results = evaluate_selected_models(trainer, evaluator, test_features=None)
    assert evaluator.calls == 2 and trainer.restored[-1] == different[select_on].step
    assert results["avg"].test != results["en"].test
    assert results["avg"] == SelectedResult(2, "best-2", different["avg"].dev, results["avg"].test)

    same = Selection(3, 0.7, "best-3", evaluation(0.7, 0.8))
    trainer, evaluator = FakeTrainer({"avg": same, "en": same}, select_on), CountingEvaluator()
    results = evaluate_selected_models(trainer, evaluator, test_features=None)
    assert evaluator.calls == 1 and trainer.restored == [3]
    assert results["avg"].test is results["en"].test


def test_the_config_s_padding_token_keeps_its_embedding_as_in_transformers(tmp_path, xnli_dir):
    """transformers never moves the embedding of config.json's pad_token_id (nn.Embedding's padding_idx),
    even where a config names a real token: multilingual-e5's says 0, its <s>. Here [CLS] (id 2), in
    every input: its row stays, the rows of the other tokens train."""
    model_dir = tmp_path / "bert"
    shutil.copytree(fixture_dir("bert"), model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "pad_token_id": 2}))
    run = {**EXACT, "max_steps": 3, "max_seq_length": 64}
    result = run_main(*flags(**cpu_run(model_dir, xnli_dir, tmp_path / "run", **run)))
    assert result.returncode == 0, result.stderr[-3000:]
    name = "bert.embeddings.word_embeddings.weight"
    before, after = load_file(model_dir / "model.safetensors")[name], final_weights(tmp_path / "run", 3)[name]
    assert np.array_equal(after[2], before[2])  # [CLS]
    assert not np.array_equal(after[3], before[3])  # [SEP], in every input too
