"""Training's dropout on a CPU: Paddle's upscale_in_train dropout (each element kept with probability
1 - p and scaled by 1 / (1 - p), the gradient through the same mask), its masks drawn by numpy in chunks
on the run's threads from a seed that Paddle's generator gives: the same masks for the same --seed
whatever the threads; every other dropout is Paddle's own."""

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddlenlp.transformers import ErnieMConfig, ErnieMForSequenceClassification

from ernie_m_xnli.data.batching import padded_inputs
from ernie_m_xnli.models.dropout import CHUNK, cpu_dropout, no_dropout_outside_training
from ernie_m_xnli.models.families import ERNIE_M, Classifier
from ernie_m_xnli.models.inference import create_predictor, predictor_logits, save_static_graph

PADDLES_DROPOUT = F.dropout


def dropped(x, p, seed, output_gradient=None):
    """Dropout's output and input gradient of `x` (a numpy array) under cpu_dropout, after paddle.seed(seed)."""
    paddle.seed(seed)
    x = paddle.to_tensor(x, stop_gradient=False)
    with cpu_dropout("cpu"):
        y = F.dropout(x, p)
    y.backward(paddle.to_tensor(output_gradient if output_gradient is not None else np.ones(x.shape, "float32")))
    return y.numpy(), x.grad.numpy()


def test_each_element_is_kept_with_probability_1_minus_p_and_scaled():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, CHUNK)).astype(np.float32) + 5  # no zeros of its own; 3 chunks
    output_gradient = rng.standard_normal(x.shape).astype(np.float32)
    y, x_gradient = dropped(x, 0.1, seed=1, output_gradient=output_gradient)
    kept, scale = y != 0, np.float32(1 / 0.9)
    expected_dropped, sigma = 0.1 * x.size, np.sqrt(0.1 * 0.9 * x.size)
    assert abs((~kept).sum() - expected_dropped) < 5 * sigma
    for chunk in range(3):  # every chunk draws its own mask
        assert abs((~kept[chunk]).mean() - 0.1) < 0.005
    np.testing.assert_array_equal(y[kept], x[kept] * scale)
    np.testing.assert_array_equal(x_gradient, np.where(kept, output_gradient * scale, 0))


def test_the_masks_follow_paddles_seed_and_not_the_number_of_threads(monkeypatch):
    x = np.ones((2, CHUNK + 1000), np.float32)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    one_thread = dropped(x, 0.1, seed=7)[0]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert np.array_equal(dropped(x, 0.1, seed=7)[0], one_thread)
    assert not np.array_equal(dropped(x, 0.1, seed=8)[0], one_thread)
    y = dropped(x, 0.1, seed=7)[0]
    paddle.seed(7)
    with cpu_dropout("cpu"):
        first, second = (F.dropout(paddle.to_tensor(x), 0.1).numpy() for _ in range(2))
    assert np.array_equal(first, y) and not np.array_equal(second, y)  # each call draws a new seed


@pytest.mark.parametrize(
    "options",
    [{"training": False}, {"axis": 1}, {"mode": "downscale_in_infer"}, {"p": 0.0}, {"p": 1.0}],
    ids=["evaluation", "axis", "downscale", "p=0", "p=1"],
)
def test_every_other_dropout_is_paddles(options):
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32))
    options = {"p": 0.3, **options}
    paddle.seed(3)
    paddles = PADDLES_DROPOUT(x, **options).numpy()
    paddle.seed(3)
    with cpu_dropout("cpu"):
        np.testing.assert_array_equal(F.dropout(x, **options).numpy(), paddles)


def test_only_a_cpus_training_forward_draws_its_own_masks():
    x = paddle.ones([4, 64])
    with cpu_dropout("gpu"):
        assert F.dropout is PADDLES_DROPOUT
    paddle.seed(5)
    with cpu_dropout("cpu"):
        assert F.dropout is not PADDLES_DROPOUT
        by_layer = paddle.nn.Dropout(0.5)(x).numpy()  # nn.Dropout calls F.dropout
    assert F.dropout is PADDLES_DROPOUT
    assert np.array_equal(dropped(x.numpy(), 0.5, seed=5)[0], by_layer)
    paddle.seed(5)
    assert not np.array_equal(PADDLES_DROPOUT(x, 0.5).numpy(), by_layer)  # Paddle's own masks are others


def test_outside_training_dropout_is_the_input_itself_and_an_exported_graph_has_none(tmp_path):
    """Paddle's eval-mode dropout copies its input, and a traced graph keeps the op (Paddle Inference's
    bfloat16 passes then convert around each one); the suite's exports trace none, same logits."""
    x = paddle.randn([4, 8])
    with no_dropout_outside_training():
        assert F.dropout(x, 0.1, training=False) is x
        assert paddle.nn.Dropout(0.1, mode="downscale_in_infer").eval()(x) is not x  # scales: Paddle's
    assert F.dropout is PADDLES_DROPOUT and F.dropout(x, 0.1, training=False) is not x
    paddle.seed(0)
    config = ErnieMConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_labels=3)
    classifier = Classifier(ErnieMForSequenceClassification(config), ERNIE_M)
    classifier.eval()
    ids = np.random.RandomState(0).randint(3, 50, size=(2, 9))
    inputs = padded_inputs(list(ids), pad_token_id=1, sep_token_id=2)
    with paddle.no_grad():
        dynamic = classifier(**{name: paddle.to_tensor(value) for name, value in inputs.items()}).numpy()
    save_static_graph(classifier, str(tmp_path / "model"))
    assert "dropout" not in (tmp_path / "model.json").read_text()
    np.testing.assert_allclose(
        predictor_logits(create_predictor(str(tmp_path / "model"), 1), inputs), dynamic, atol=1e-5
    )
