"""The CPU's float32 products: Linear layers with matrix-product bias gradients and oneDNN's products
(--cpu_matmul onednn) give Paddle's gradients up to float rounding; --cpu_matmul auto measures the two
libraries once and keeps the answer."""

import contextlib
import json
import sys
import time
from types import SimpleNamespace

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddlenlp.transformers import ErnieMConfig, ErnieMForSequenceClassification

from ernie_m_xnli.models import matmul_path, onednn
from ernie_m_xnli.models.cpu_matmuls import ONEDNN_FLOAT32, bias_gradients_by_matmul, onednn_matmuls
from ernie_m_xnli.models.matmul_path import AUTO, CACHE_FILE, MEASUREMENT, MKL, ONEDNN, float32_matmul_path
from utils import describe_cpu

from conftest import as_multiplied, product_operands

TENSOR_MODULE = sys.modules["paddle.tensor"]


def gradients(model, input_ids, labels, context):
    model.clear_gradients()
    with context:
        logits = model(paddle.to_tensor(input_ids), attention_mask=paddle.ones(input_ids.shape, dtype="int64"))
    F.cross_entropy(logits, paddle.to_tensor(labels)).backward()
    return {name: parameter.grad.numpy().copy() for name, parameter in model.named_parameters()}


def tiny_model_and_batch():
    paddle.seed(0)
    shape = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_labels=3)
    config = ErnieMConfig(**shape, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    rng = np.random.RandomState(0)
    return ErnieMForSequenceClassification(config), rng.randint(5, 300, size=(6, 17)), rng.randint(0, 3, size=6)


def test_every_gradient_equals_paddles_linear_and_the_layers_are_restored():
    model, input_ids, labels = tiny_model_and_batch()
    paddles = gradients(model, input_ids, labels, contextlib.nullcontext())
    matmuls = gradients(model, input_ids, labels, bias_gradients_by_matmul(model))
    assert paddles.keys() == matmuls.keys() and any(name.endswith("linear1.bias") for name in matmuls)
    for name in paddles:
        np.testing.assert_allclose(matmuls[name], paddles[name], rtol=1e-5, atol=1e-7, err_msg=name)
    linears = [layer for layer in model.sublayers() if isinstance(layer, paddle.nn.Linear)]
    assert linears and all("forward" not in vars(layer) for layer in linears)


def test_onednns_float32_products_give_paddles_gradients_within_float_rounding():
    model, input_ids, labels = tiny_model_and_batch()
    paddles_own = (paddle.matmul, TENSOR_MODULE.matmul, paddle.bmm)
    paddles = gradients(model, input_ids, labels, contextlib.nullcontext())
    onednns = gradients(model, input_ids, labels, onednn_matmuls(model, ONEDNN_FLOAT32))
    for name in paddles:
        np.testing.assert_allclose(onednns[name], paddles[name], rtol=1e-4, atol=1e-7, err_msg=name)
    assert any(not np.array_equal(onednns[name], paddles[name]) for name in paddles)  # computed apart
    assert (paddle.matmul, TENSOR_MODULE.matmul, paddle.bmm) == paddles_own  # put back
    with onednn_matmuls(model, ONEDNN_FLOAT32):  # the attention products' too
        assert paddle.matmul is not paddles_own[0] and paddle.bmm is not paddles_own[2]


@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_a_float32_product_by_onednn_is_float32s(transpose_a, transpose_b):
    a, b = product_operands(transpose_a, transpose_b)
    product = onednn.float32_matmul(paddle.to_tensor(a), paddle.to_tensor(b), transpose_a, transpose_b).numpy()
    exact = as_multiplied(a, transpose_a).astype(np.float64) @ as_multiplied(b, transpose_b)
    assert product.dtype == np.float32 and product.shape == (2, 3, 24, 16)
    assert np.abs(product - exact).max() / np.abs(exact).max() < 1e-6


def test_attentions_heads_are_read_in_place_and_their_gradients_come_back_in_the_same_layout():
    """Attention's queries, keys and values are [batch, heads, tokens, width] views of [batch, tokens,
    heads x width] Linear outputs: oneDNN reads them by their strides, hands their gradients back in that
    layout and writes the context (weights x values) in the values' layout, so the transposes and
    reshapes around attention copy nothing. The numbers are Paddle's."""
    rng = np.random.default_rng(0)
    features = [rng.standard_normal((2, 7, 3 * 4)).astype(np.float32) for _ in range(3)]
    output_gradient = paddle.to_tensor(rng.standard_normal((2, 3, 7, 4)).astype(np.float32))

    def attention_backward():
        inputs = [paddle.to_tensor(array, stop_gradient=False) for array in features]
        queries, keys, values = (tensor.reshape([2, 7, 3, 4]).transpose([0, 2, 1, 3]) for tensor in inputs)
        layouts = []
        for view in (queries, keys, values):
            view.register_hook(lambda gradient, view=view: layouts.append(gradient.strides == view.strides))
        context = paddle.matmul(paddle.matmul(queries, keys, transpose_y=True), values)
        layouts.append(context.strides == values.strides)
        context.backward(output_gradient)
        return [tensor.grad.numpy() for tensor in inputs], layouts

    paddles, _ = attention_backward()
    with onednn_matmuls(paddle.nn.Layer(), ONEDNN_FLOAT32):
        onednns, same_layouts = attention_backward()
    assert same_layouts == [True] * 4
    for onednn_gradient, paddles_gradient in zip(onednns, paddles):
        np.testing.assert_allclose(onednn_gradient, paddles_gradient, rtol=1e-5, atol=1e-5)


def test_auto_measures_both_libraries_on_the_models_shapes_once_and_keeps_the_faster(tmp_path, caplog):
    caplog.set_level("INFO", logger="ernie_m_xnli")
    model = tiny_model_and_batch()[0]  # hidden 32, 2 layers
    paddle.seed(5)
    chosen = float32_matmul_path(AUTO, model, 2, str(tmp_path))
    drawn_after = paddle.rand([4]).numpy()
    ((key, measured),) = json.loads((tmp_path / CACHE_FILE).read_text()).items()
    layers = "1 x 32x3, 9 x 32x32, 2 x 32x128, 2 x 128x32"  # head; q, k, v, out of 2 layers and the pooler; FFN
    assert key == f"{describe_cpu()}, 2 thread(s), paddle {paddle.__version__}, Linear layers {layers}, {MEASUREMENT}"
    rates = measured["gflops"]
    assert chosen == measured["path"] == (ONEDNN if rates[ONEDNN] >= 1.05 * rates[MKL] else MKL)
    assert "measured now: mkl " in caplog.text
    paddle.seed(5)
    assert np.array_equal(paddle.rand([4]).numpy(), drawn_after)  # the run's seeded draws stay as they were

    caplog.clear()
    assert float32_matmul_path(AUTO, model, 2, str(tmp_path)) == chosen
    assert f"measured on this CPU before: mkl {rates[MKL]} GFLOP/s" in caplog.text


def test_a_moment_the_machine_is_busy_does_not_decide_for_the_slower_library(tmp_path, monkeypatch):
    # Two stand-in libraries whose products take 2 ms (MKL) and 1 ms (oneDNN); another process takes
    # the CPU for 150 ms from oneDNN's first product, making every product in that time 10 ms longer.
    # Measured one library after the other, that moment fell on all of oneDNN's products and MKL won.
    busy_until = []

    def library(milliseconds, starts_the_busy_moment=False):
        def matmul(*operands):
            if starts_the_busy_moment and not busy_until:
                busy_until.append(time.perf_counter() + 0.15)
            busy = busy_until and time.perf_counter() < busy_until[0]
            time.sleep((milliseconds + 10 * bool(busy)) / 1000)

        return SimpleNamespace(matmul=matmul)

    monkeypatch.setattr(matmul_path, "FLOAT32", library(2))
    monkeypatch.setattr(matmul_path, "ONEDNN_FLOAT32", library(1, starts_the_busy_moment=True))
    model = paddle.nn.Sequential(*(paddle.nn.Linear(8, 8 + layer) for layer in range(3)))
    assert float32_matmul_path(AUTO, model, 2, str(tmp_path)) == ONEDNN
    ((_, measured),) = json.loads((tmp_path / CACHE_FILE).read_text()).items()
    assert measured["gflops"][ONEDNN] > 1.3 * measured["gflops"][MKL]


def test_a_kept_answer_is_followed_and_an_argument_overrides_it(tmp_path, monkeypatch):
    def measured_as(path):
        return {"path": path, "gflops": {MKL: 1.0, ONEDNN: 1.0}}

    monkeypatch.setattr(matmul_path, "product_rates", lambda *arguments: pytest.fail("measured although kept"))
    model = paddle.nn.Sequential(paddle.nn.Linear(4, 6), paddle.nn.Linear(6, 4), paddle.nn.Linear(4, 6))
    key = f"{describe_cpu()}, 3 thread(s), paddle {paddle.__version__}, Linear layers 2 x 4x6, 1 x 6x4, {MEASUREMENT}"
    for kept in (MKL, ONEDNN):
        (tmp_path / CACHE_FILE).write_text(json.dumps({key: measured_as(kept)}))
        assert float32_matmul_path(AUTO, model, 3, str(tmp_path)) == kept
        overridden = ONEDNN if kept == MKL else MKL
        assert float32_matmul_path(overridden, model, 3, str(tmp_path)) == overridden


def test_an_answer_kept_by_an_earlier_way_of_measuring_is_measured_again(tmp_path):
    # The libraries measured one after the other kept answers of a busy moment; this one no measurement
    # gives, so that following it would show.
    model = paddle.nn.Sequential(paddle.nn.Linear(4, 6))
    earlier_key = f"{describe_cpu()}, 2 thread(s), paddle {paddle.__version__}, Linear layers 1 x 4x6"
    (tmp_path / CACHE_FILE).write_text(json.dumps({earlier_key: {"path": "neither", "gflops": {MKL: 1.0}}}))
    assert float32_matmul_path(AUTO, model, 2, str(tmp_path)) in (MKL, ONEDNN)
    assert list(json.loads((tmp_path / CACHE_FILE).read_text())) == [earlier_key, f"{earlier_key}, {MEASUREMENT}"]


def test_a_damaged_answer_is_measured_again(tmp_path):
    (tmp_path / CACHE_FILE).write_text("{not json")
    chosen = float32_matmul_path(AUTO, paddle.nn.Sequential(paddle.nn.Linear(4, 6)), 2, str(tmp_path))
    assert chosen in (MKL, ONEDNN)
    assert [entry["path"] for entry in json.loads((tmp_path / CACHE_FILE).read_text()).values()] == [chosen]


def test_a_model_without_linear_layers_keeps_mkl_without_measuring(tmp_path):
    assert float32_matmul_path(AUTO, paddle.nn.Sequential(paddle.nn.ReLU()), 2, str(tmp_path)) == MKL
    assert not (tmp_path / CACHE_FILE).exists()
