"""Packed training batches compute what padded ones do: the same logits and the same gradients."""

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest
from paddlenlp.transformers import ErnieMForSequenceClassification

from ernie_m_xnli.data.batching import pad_batch
from ernie_m_xnli.data.encoding import encode_pairs
from ernie_m_xnli.data.packing import MASKED, first_fit_decreasing, pack_batch, packed_rows
from ernie_m_xnli.data.xnli_files import Pair, read_train_split, xnli_file_paths
from ernie_m_xnli.models.packed import PackedClassifier


def ids(*lengths):
    """Token-id arrays of the given lengths, each [CLS] (0) then distinct ids."""
    return [np.array([0, *range(10 * n, 10 * n + length - 1)], dtype=np.int64) for n, length in enumerate(lengths)]


def test_first_fit_decreasing_places_longest_inputs_first_in_the_first_row_with_room():
    assert first_fit_decreasing([5, 9, 4, 3, 6, 2], capacity=9) == [[1], [4, 3], [0, 2], [5]]
    assert first_fit_decreasing([3, 3, 3], capacity=3) == [[0], [1], [2]]


def test_rows_have_the_length_that_computes_the_fewest_tokens():
    # 15 real tokens: rows of 8 hold them in 2 x 8 = 16; rows of the longest input's 6 need 3 x 6.
    assert packed_rows([6, 2, 4, 3], max_length=64) == ([[0, 1], [2, 3]], 8)
    assert packed_rows([6, 2, 4, 3], max_length=6) == ([[0], [2, 1], [3]], 6)
    # At most twice the longest input: one row of 15 would compute the fewest tokens.
    assert packed_rows([6, 2, 4, 3], max_length=64)[1] <= 12


def test_a_packed_batch_restarts_positions_and_masks_every_other_input():
    inputs = ids(6, 2, 4, 3)
    batch = pack_batch(inputs, pad_token_id=1, max_length=64)
    assert batch.input_ids.shape == (2, 8)
    np.testing.assert_array_equal(batch.input_ids[0], np.concatenate([inputs[0], inputs[1]]))
    np.testing.assert_array_equal(batch.input_ids[1], np.concatenate([inputs[2], inputs[3], [1]]))
    np.testing.assert_array_equal(batch.position_ids[1], [0, 1, 2, 3, 0, 1, 2, 0])
    assert batch.cls_index.tolist() == [0, 6, 8, 12]  # batch order; row x 8 + start
    mask = batch.attention_mask[1, 0]
    assert (mask[:4, :4] == 0).all() and (mask[4:7, 4:7] == 0).all()
    assert (mask[:4, 4:] == MASKED).all() and (mask[4:, :4] == MASKED).all()
    assert (mask[:, 7] == MASKED).all()  # padding: no query sees it


@pytest.fixture()
def model(tiny_model_dir):
    paddle.seed(1)
    model = ErnieMForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3)
    model.eval()  # dropout off: the two forms must compute the same thing
    return model


@pytest.fixture()
def train_inputs(xnli_dir, tokenizer):
    """16 training inputs of 20 to 64 tokens, as varied as real XNLI's."""
    pairs = read_train_split(xnli_file_paths(xnli_dir, ["en"])["train"]).pairs_by_language["en"][:16]
    pairs = [
        Pair(" ".join([premise] * (1 + i % 4)), hypothesis, label)
        for i, (premise, hypothesis, label) in enumerate(pairs)
    ]
    features = encode_pairs(tokenizer, pairs, 64, 0)
    return features.input_ids, paddle.to_tensor(features.labels)


def packed_logits(model, batch):
    return PackedClassifier(model)(**{name: paddle.to_tensor(value) for name, value in batch._asdict().items()})


def padded_logits(model, input_ids, pad_token_id):
    padded, attention_mask = pad_batch(input_ids, pad_token_id)
    return model(paddle.to_tensor(padded), attention_mask=paddle.to_tensor(attention_mask))


def test_packed_logits_equal_each_input_alone(model, train_inputs, tokenizer):
    input_ids, _ = train_inputs
    batch = pack_batch(input_ids, tokenizer.pad_token_id, max_length=64)
    assert len(batch.input_ids) < len(input_ids), "the test needs rows holding several inputs"
    with paddle.no_grad():
        logits = packed_logits(model, batch).numpy()
        for index, ids_ in enumerate(input_ids):
            alone = padded_logits(model, [ids_], tokenizer.pad_token_id).numpy()
            np.testing.assert_allclose(logits[index], alone[0], atol=1e-5)


def gradients(model, logits, labels):
    model.clear_gradients()
    F.cross_entropy(logits.astype("float32"), labels).backward()
    return {name: parameter.grad.numpy().copy() for name, parameter in model.named_parameters()}


def test_every_gradient_of_a_packed_batch_equals_the_padded_batchs(model, train_inputs, tokenizer):
    # (Under --use_amp the two forms differ no more: both add the same float32 mask. Paddle 3.3.1's
    # auto_cast does nothing on a CPU, so only a GPU machine can show it.)
    input_ids, labels = train_inputs
    packed = gradients(
        model, packed_logits(model, pack_batch(input_ids, tokenizer.pad_token_id, max_length=64)), labels
    )
    padded = gradients(model, padded_logits(model, input_ids, tokenizer.pad_token_id), labels)
    assert packed.keys() == padded.keys()
    for name in padded:
        # atol for the gradients that are zero but for rounding (rows of tokens the batch lacks).
        np.testing.assert_allclose(packed[name], padded[name], rtol=1e-4, atol=1e-7, err_msg=name)
