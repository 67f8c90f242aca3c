"""Linear layers with matrix-product bias gradients: Paddle's gradients up to float rounding."""

import contextlib

import numpy as np
import paddle
import paddle.nn.functional as F
from paddlenlp.transformers import ErnieMConfig, ErnieMForSequenceClassification

from ernie_m_xnli.models.cpu_matmuls import bias_gradients_by_matmul


def gradients(model, input_ids, labels, context):
    model.clear_gradients()
    with context:
        logits = model(paddle.to_tensor(input_ids), attention_mask=paddle.ones(input_ids.shape, dtype="int64"))
    F.cross_entropy(logits, paddle.to_tensor(labels)).backward()
    return {name: parameter.grad.numpy().copy() for name, parameter in model.named_parameters()}


def test_every_gradient_equals_paddles_linear_and_the_layers_are_restored():
    paddle.seed(0)
    shape = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_labels=3)
    config = ErnieMConfig(**shape, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = ErnieMForSequenceClassification(config)
    rng = np.random.RandomState(0)
    input_ids, labels = rng.randint(5, 300, size=(6, 17)), rng.randint(0, 3, size=6)
    paddles = gradients(model, input_ids, labels, contextlib.nullcontext())
    matmuls = gradients(model, input_ids, labels, bias_gradients_by_matmul(model))
    assert paddles.keys() == matmuls.keys() and any(name.endswith("linear1.bias") for name in matmuls)
    for name in paddles:
        np.testing.assert_allclose(matmuls[name], paddles[name], rtol=1e-5, atol=1e-7, err_msg=name)
    linears = [layer for layer in model.sublayers() if isinstance(layer, paddle.nn.Linear)]
    assert linears and all("forward" not in vars(layer) for layer in linears)
