"""bfloat16 mixed precision on a CPU: what it computes, how close it stays to float32, and what it refuses.

bfloat16 keeps 8 significant bits: one rounding of an input is off by at most 2^-9 relative. A
product of two rounded inputs accumulated in float32 is off by about 2^-8 at worst, and a whole
training step (twelve products deep) by a few times that: the tolerances below are stated in
those units and measured well inside them.
"""

import contextlib
import os
import sys

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddlenlp.transformers import ErnieMConfig, ErnieMForSequenceClassification

from ernie_m_xnli.data.batching import padded_inputs
from ernie_m_xnli.data.encoding import encode_pairs
from ernie_m_xnli.data.xnli_files import Pair
from ernie_m_xnli.models import onednn
from ernie_m_xnli.models.cpu_matmuls import BFLOAT16 as BFLOAT16_PRODUCTS
from ernie_m_xnli.models.cpu_matmuls import onednn_matmuls
from ernie_m_xnli.models.inference import create_predictor, predictor_logits, save_static_graph
from ernie_m_xnli.models.loading import load_classifier
from ernie_m_xnli.models.precision import BFLOAT16, Precision, cpu_mixed_precision, run_precision
from ernie_m_xnli.models.tokenizer_files import load_tokenizer, num_token_ids, pair_has_token_types
from utils import InputError, describe_cpu, has_bfloat16_instructions

from conftest import as_multiplied, fixture_dir, last_line, product_operands, run_main

HAS_BFLOAT16 = has_bfloat16_instructions()
needs_bfloat16 = pytest.mark.skipif(not HAS_BFLOAT16, reason="this CPU lacks avx512_bf16")
BFLOAT16_UNIT = 2.0**-8  # the spacing of bfloat16 numbers in [1, 2)
TENSOR_MODULE = sys.modules["paddle.tensor"]  # nn.MultiHeadAttention's `tensor` (paddle.tensor is a function)


def rounded_to_bfloat16(array):
    """float64 copies of float32 values rounded to bfloat16, to nearest even, as oneDNN and Paddle round."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.view(np.float32).astype(np.float64)


@needs_bfloat16
@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_a_bfloat16_product_multiplies_bfloat16_inputs_in_float32(transpose_a, transpose_b):
    a, b = product_operands(transpose_a, transpose_b)
    product = onednn.bfloat16_matmul(paddle.to_tensor(a), paddle.to_tensor(b), transpose_a, transpose_b).numpy()
    exact = as_multiplied(rounded_to_bfloat16(a), transpose_a) @ as_multiplied(rounded_to_bfloat16(b), transpose_b)
    in_float32 = as_multiplied(a.astype(np.float64), transpose_a) @ as_multiplied(b.astype(np.float64), transpose_b)
    assert product.dtype == np.float32 and product.shape == (2, 3, 24, 16)
    scale = np.abs(exact).max()
    assert np.abs(product - exact).max() / scale < 1e-6  # float32 accumulation of the rounded inputs
    assert np.abs(product - in_float32).max() / scale > 1e-4  # ... which are not float32's


@needs_bfloat16
def test_the_conversion_to_bfloat16_rounds_as_paddles_cast_does():
    """oneDNN's conversion runs on every thread (Paddle's cast on one); the bits are the same."""
    values = np.random.default_rng(3).standard_normal((3, 1000)).astype(np.float32) * 1e3
    values[0, :4] = [1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 0.0]  # ties, rounded to even
    tensor = paddle.to_tensor(values)
    converted, cast = onednn.to_bfloat16(tensor), tensor.astype(paddle.bfloat16)
    assert converted.dtype == paddle.bfloat16 and converted.shape == [3, 1000]
    np.testing.assert_array_equal(converted.astype(paddle.float32).numpy(), cast.astype(paddle.float32).numpy())
    np.testing.assert_array_equal(converted.astype(paddle.float32).numpy(), rounded_to_bfloat16(values))
    transposed = tensor.transpose([1, 0])  # a strided view, converted in its own layout
    converted = onednn.to_bfloat16(transposed)
    assert converted.strides == transposed.strides == [1, 1000]
    np.testing.assert_array_equal(converted.astype(paddle.float32).numpy(), rounded_to_bfloat16(values.T))


@needs_bfloat16
def test_a_linear_layers_input_of_any_rank_meets_a_weight_matrix():
    x, weight = paddle.randn([3, 5, 16]), paddle.randn([16, 8])
    product = onednn.bfloat16_matmul(x, weight).numpy()
    expected = rounded_to_bfloat16(x.numpy()) @ rounded_to_bfloat16(weight.numpy())
    assert product.shape == (3, 5, 8)
    np.testing.assert_allclose(product, expected, rtol=1e-5, atol=1e-5)


def tiny_ernie_m(hidden_size=64):
    paddle.seed(0)
    config = ErnieMConfig(
        vocab_size=300,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return ErnieMForSequenceClassification(config)


def loss_and_gradients(model, input_ids, labels, context):
    model.clear_gradients()
    with context:
        logits = model(paddle.to_tensor(input_ids), attention_mask=paddle.ones(input_ids.shape, dtype="int64"))
    loss = F.cross_entropy(logits, paddle.to_tensor(labels))
    loss.backward()
    return float(loss), {name: parameter.grad.numpy().copy() for name, parameter in model.named_parameters()}


@needs_bfloat16
def test_a_bfloat16_training_step_stays_within_bfloat16_rounding_of_float32():
    model, paddles_own = tiny_ernie_m(), (paddle.matmul, TENSOR_MODULE.matmul, paddle.bmm)
    rng = np.random.RandomState(0)
    input_ids, labels = rng.randint(5, 300, size=(6, 17)), rng.randint(0, 3, size=6)
    loss32, gradients32 = loss_and_gradients(model, input_ids, labels, contextlib.nullcontext())
    loss16, gradients16 = loss_and_gradients(model, input_ids, labels, onednn_matmuls(model, BFLOAT16_PRODUCTS))

    assert abs(loss16 - loss32) / loss32 < BFLOAT16_UNIT
    errors = {}
    for name, exact in gradients32.items():
        # The key bias shifts every score of a query alike, which softmax ignores: its gradient is
        # zero but for rounding, in float32 (1e-12) as in bfloat16, and has no relative error to speak of.
        if not name.endswith("k_proj.bias"):
            errors[name] = np.linalg.norm(gradients16[name] - exact) / np.linalg.norm(exact)
    assert max(errors.values()) < 4 * BFLOAT16_UNIT, max(errors.items(), key=lambda item: item[1])
    assert min(errors.values()) > 1e-5  # every product was bfloat16's, backward too
    assert (paddle.matmul, TENSOR_MODULE.matmul, paddle.bmm) == paddles_own  # put back


@needs_bfloat16
def test_the_attention_products_compute_in_bfloat16_inside_the_context_and_in_float32_outside():
    """paddle.matmul, TENSOR_MODULE.matmul (nn.MultiHeadAttention's) and paddle.bmm (DeBERTa's) on
    float32 inputs of the same leading dimensions, forward and backward."""
    rng = np.random.default_rng(2)
    q, k = (paddle.to_tensor(rng.standard_normal((2, 3, 7, 8)).astype(np.float32)) for _ in range(2))
    q.stop_gradient = k.stop_gradient = False
    exact = rounded_to_bfloat16(q.numpy()) @ rounded_to_bfloat16(k.numpy()).swapaxes(-1, -2)
    with onednn_matmuls(tiny_ernie_m(), BFLOAT16_PRODUCTS):
        products = [paddle.matmul(q, k, transpose_y=True), TENSOR_MODULE.matmul(q, k, False, True)]
        products.append(
            paddle.bmm(q.reshape([6, 7, 8]), k.reshape([6, 7, 8]).transpose([0, 2, 1])).reshape([2, 3, 7, 7])
        )
        broadcast = paddle.matmul(q, k[0], transpose_y=True)  # other leading dimensions: Paddle's own
    for product in products:
        np.testing.assert_allclose(product.numpy(), exact, rtol=1e-5, atol=1e-5)
    float32 = paddle.matmul(q, k, transpose_y=True)
    assert not np.allclose(float32.numpy(), exact, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(broadcast.numpy()[0], paddle.matmul(q[0], k[0], transpose_y=True).numpy())

    products[0].sum().backward()  # d(q k^T)/dq = ones @ k, in bfloat16
    expected = np.ones((2, 3, 7, 7)) @ rounded_to_bfloat16(k.numpy())
    np.testing.assert_allclose(q.grad.numpy(), expected, rtol=1e-5, atol=1e-5)


@needs_bfloat16
@pytest.mark.parametrize("model_type", ["ernie_m", "bert"])
def test_paddle_inference_in_bfloat16_stays_within_rounding_of_float32(tmp_path, model_type):
    """Through oneDNN's bfloat16 passes; BERT's graph once failed there on an empty key-value cache."""
    directory = fixture_dir(model_type)
    tokenizer = load_tokenizer(directory)
    classifier = load_classifier(
        directory, 0.1, num_token_ids(tokenizer), 48, "", False, pair_has_token_types(tokenizer)
    )
    classifier.eval()
    pairs = [Pair("the cat sat on the mat", "a cat sat", 0), Pair("el perro corre", "the dog sleeps", 0)]
    features = encode_pairs(tokenizer, pairs, 48, 0)
    inputs = padded_inputs(features.input_ids, tokenizer.pad_token_id, tokenizer.sep_token_id)
    save_static_graph(classifier, str(tmp_path / "model"))
    float32 = predictor_logits(create_predictor(str(tmp_path / "model"), 1), inputs)
    bfloat16 = predictor_logits(create_predictor(str(tmp_path / "model"), 1, bfloat16=True), inputs)
    assert not np.array_equal(bfloat16, float32)
    np.testing.assert_allclose(bfloat16, float32, atol=4 * BFLOAT16_UNIT * np.abs(float32).max())


def test_mixed_precision_on_a_cpu_is_bfloat16_and_needs_its_instructions():
    with pytest.raises(InputError, match=r"^--use_amp on cpu: mixed precision on a CPU is bfloat16 .*\(AVX-512, "):
        cpu_mixed_precision(None, flags=["avx512f", "avx512_bf16"])
    with pytest.raises(InputError, match=r"^--use_amp --amp_dtype float16 on cpu: .*: pass --amp_dtype bfloat16$"):
        cpu_mixed_precision("float16", flags=["avx512_bf16"])
    # The user asked for bfloat16: the answer names what this CPU has and that float32 is all there is.
    with pytest.raises(
        InputError,
        match=r"^--use_amp --amp_dtype bfloat16 on cpu: .* \(AVX2\) has neither AVX512-BF16 nor AMX, .* so float32 "
        r"is the only precision a CPU run computes in here: run without --use_amp$",
    ):
        cpu_mixed_precision(BFLOAT16, flags=["avx2", "fma"])
    assert run_precision("cpu", False, None) == Precision("cpu")


def test_a_limit_that_keeps_onednn_from_bfloat16_is_named_before_any_product(monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    bfloat16_cpu = ["avx2", "avx512f", "avx512_bf16"]
    assert not has_bfloat16_instructions(bfloat16_cpu)
    with pytest.raises(
        InputError,
        match=r"^--use_amp --amp_dtype bfloat16 on cpu: .* \(AVX2, AVX-512, AVX512-BF16; oneDNN limited to "
        r"ONEDNN_MAX_CPU_ISA=AVX2\) keeps oneDNN from its bfloat16 products: unset ONEDNN_MAX_CPU_ISA ",
    ):
        cpu_mixed_precision(BFLOAT16, flags=bfloat16_cpu)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # no AMX, bfloat16 still
    assert has_bfloat16_instructions([*bfloat16_cpu, "amx_bf16"])
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "all")
    assert has_bfloat16_instructions(bfloat16_cpu) and "limited" not in describe_cpu(bfloat16_cpu)


@needs_bfloat16
def test_bfloat16_on_this_cpu_runs_on_onednns_bfloat16_kernels():
    precision = cpu_mixed_precision(BFLOAT16)
    assert precision == Precision("cpu", BFLOAT16) and precision.cpu_bfloat16 and not precision.scales_loss
    assert "bf16" in onednn.implementation_name() or "amx" in onednn.implementation_name()


def test_the_command_line_refuses_what_a_cpu_cannot_compute(tmp_path, tiny_model_dir, xnli_dir):
    common = dict(
        task_type="cross-lingual-transfer", model_name_or_path=tiny_model_dir, data_dir=xnli_dir, device="cpu"
    )
    alone = run_main("--use_amp", output_dir=tmp_path / "alone", **common)
    expected = "--use_amp on cpu: mixed precision on a CPU is bfloat16" if HAS_BFLOAT16 else "has neither AVX512-BF16"
    assert alone.returncode == 2 and expected in last_line(alone.stderr)
    dtype_only = run_main(output_dir=tmp_path / "dtype", amp_dtype="bfloat16", **common)
    assert dtype_only.returncode == 2
    assert "--amp_dtype bfloat16 is the type of --use_amp: add --use_amp" in dtype_only.stderr
    assert not os.path.exists(tmp_path / "alone") and not os.path.exists(tmp_path / "dtype")
