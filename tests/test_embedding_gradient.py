"""The token embeddings' gradient kept in one table on a CPU: Paddle's gradient bit for bit, step after
step, in the same memory; added to a gradient still held (accumulation) as Paddle's is."""

import contextlib

import numpy as np
import paddle
import pytest

from ernie_m_xnli.models.embedding_gradient import KeptEmbeddingGradient

ROWS, WIDTH = 40, 8


def lookups(step):
    """Ids with many repeats (6 distinct rows in 60 lookups), other rows at each step, and row 1."""
    ids = np.random.RandomState(step).randint(0, 6, size=(2, 30)) * (step + 1) % ROWS
    ids[0, 0] = 1
    return ids


def backward(layer, step, recording):
    """One lookup and backward pass of a loss whose output gradient is random."""
    output_gradient = paddle.to_tensor(np.random.RandomState(100 + step).randn(2, 30, WIDTH).astype("float32"))
    with recording:
        output = layer(paddle.to_tensor(lookups(step)))
    (output * output_gradient).sum().backward()
    return output.numpy()


def twin_layers(padding_idx):
    paddle.seed(0)
    paddles = paddle.nn.Embedding(ROWS, WIDTH, padding_idx=padding_idx)
    kept = paddle.nn.Embedding(ROWS, WIDTH, padding_idx=padding_idx)
    kept.weight.set_value(paddles.weight)
    return paddles, kept


@pytest.mark.parametrize("padding_idx", [None, 1, -39])
def test_each_steps_gradient_is_paddles_bit_for_bit_in_the_same_table(padding_idx):
    paddles, layer = twin_layers(padding_idx)
    kept = KeptEmbeddingGradient(layer, "cpu")
    optimizers = [paddle.optimizer.SGD(parameters=[weight]) for weight in (paddles.weight, layer.weight)]
    addresses = []
    for step in range(3):
        expected = backward(paddles, step, contextlib.nullcontext())
        assert np.array_equal(backward(layer, step, kept.recording()), expected)
        assert np.array_equal(layer.weight.grad.numpy(), paddles.weight.grad.numpy())
        assert layer.weight.grad.numpy()[1].any() == (padding_idx is None)  # row 1: the padding row of 1 and -39
        addresses.append(layer.weight.grad.data_ptr())
        for optimizer in optimizers:
            optimizer.clear_grad(set_to_zero=False)  # as the Trainer releases them
    assert addresses == [kept.table.data_ptr()] * 3
    assert "forward" not in vars(layer)  # the layer's own lookup back after each recording


def test_a_second_micro_batch_adds_to_the_held_gradient_as_paddles_does():
    paddles, layer = twin_layers(None)
    kept = KeptEmbeddingGradient(layer, "cpu")
    for step in range(2):
        backward(paddles, step, contextlib.nullcontext())
        backward(layer, step, kept.recording())
    np.testing.assert_array_equal(layer.weight.grad.numpy(), paddles.weight.grad.numpy())


@pytest.mark.parametrize("device, options", [("gpu", {}), ("cpu", {"sparse": True})])
def test_paddles_own_lookup_where_unmeasured_or_not_a_plain_table(device, options):
    layer = paddle.nn.Embedding(ROWS, WIDTH, **options)
    with KeptEmbeddingGradient(layer, device).recording():
        assert "forward" not in vars(layer)
