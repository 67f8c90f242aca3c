"""Packed training batches compute what padded ones do, in every family: the same logits and the same
gradients."""

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from ernie_m_xnli.data.batching import padded_inputs, token_type_ids
from ernie_m_xnli.data.encoding import encode_pairs
from ernie_m_xnli.data.packing import first_fit_decreasing, pack_batch, packed_inputs, packed_rows
from ernie_m_xnli.data.xnli_files import Pair, read_train_split, xnli_file_paths
from ernie_m_xnli.models.loading import load_classifier
from ernie_m_xnli.models.tokenizer_files import load_tokenizer

from conftest import FAMILY_FIXTURES, fixture_dir

SEP = 2


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


def test_a_packed_batch_restarts_positions_and_types_and_masks_every_other_input():
    inputs = ids(6, 2, 4, 3)
    inputs[2][2] = SEP  # the third input: [CLS] x [SEP] y
    batch = pack_batch(inputs, pad_token_id=1, sep_token_id=SEP, max_length=64)
    assert batch.input_ids.shape == (2, 8)
    np.testing.assert_array_equal(batch.input_ids[0], np.concatenate([inputs[0], inputs[1]]))
    np.testing.assert_array_equal(batch.input_ids[1], np.concatenate([inputs[2], inputs[3], [1]]))
    np.testing.assert_array_equal(batch.position_ids[1], [0, 1, 2, 3, 0, 1, 2, 0])
    np.testing.assert_array_equal(batch.token_type_ids[1], [0, 0, 0, 1, 0, 0, 0, 0])
    assert batch.cls_index.tolist() == [0, 6, 8, 12]  # batch order; row x 8 + start
    mask = batch.attention_mask[1]
    assert (mask[:4, :4] == 1).all() and (mask[4:7, 4:7] == 1).all()
    assert (mask[:4, 4:] == 0).all() and (mask[4:7, :4] == 0).all() and (mask[4:7, 7] == 0).all()
    assert mask[7].tolist() == [0] * 7 + [1]  # padding sees only itself, and no input sees it


def test_token_types_are_0_through_the_first_separator_then_1():
    ids_ = np.array([[0, 5, 6, SEP, SEP, 7, SEP, 1]])
    assert token_type_ids(ids_, SEP).tolist() == [[0, 0, 0, 0, 1, 1, 1, 1]]
    inputs = padded_inputs([ids_[0, :7], ids_[0, :4]], pad_token_id=1, sep_token_id=SEP)
    assert inputs["token_type_ids"].tolist() == [[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0]]
    assert inputs["position_ids"].tolist() == [list(range(7))] * 2


@pytest.fixture(params=FAMILY_FIXTURES)
def family_dir(request):
    return fixture_dir(request.param)


@pytest.fixture()
def classifier(family_dir):
    paddle.seed(1)
    classifier = load_classifier(family_dir, 0.1, 0, 48)
    classifier.eval()  # dropout off: the two forms must compute the same thing
    return classifier


@pytest.fixture()
def train_inputs(xnli_dir, family_dir):
    """16 training inputs of varied lengths (up to 48 tokens: the fixtures' tokenizers cut words into
    letters), as varied as real XNLI's, in the family's tokens."""
    pairs = read_train_split(xnli_file_paths(xnli_dir, ["en"])["train"]).pairs_by_language["en"][:16]
    pairs = [
        Pair(" ".join(premise.split()[: 1 + i]), " ".join(hypothesis.split()[:2]), label)
        for i, (premise, hypothesis, label) in enumerate(pairs)
    ]
    tokenizer = load_tokenizer(family_dir)
    features = encode_pairs(tokenizer, pairs, 48, 0)
    return tokenizer, features.input_ids, paddle.to_tensor(features.labels)


def packed_logits(classifier, tokenizer, input_ids):
    batch = packed_inputs(input_ids, tokenizer.pad_token_id, tokenizer.sep_token_id, max_length=48)
    assert len(batch["input_ids"]) < len(input_ids), "the test needs rows holding several inputs"
    return classifier(**{name: paddle.to_tensor(value) for name, value in batch.items()})


def own_padded_logits(classifier, tokenizer, input_ids):
    """The family's own forward pass over a padded batch (its own positions and mask handling);
    token types as its tokenizer gives them."""
    inputs = padded_inputs(input_ids, tokenizer.pad_token_id, tokenizer.sep_token_id)
    if not classifier.uses_token_types:
        del inputs["token_type_ids"]
    del inputs["position_ids"]
    logits = classifier.model(**{name: paddle.to_tensor(value) for name, value in inputs.items()})
    return logits[0] if isinstance(logits, tuple) else logits


def test_packed_logits_equal_each_input_alone(classifier, train_inputs):
    tokenizer, input_ids, _ = train_inputs
    with paddle.no_grad():
        logits = packed_logits(classifier, tokenizer, input_ids).numpy()
        for index, ids_ in enumerate(input_ids):
            alone = own_padded_logits(classifier, tokenizer, [ids_]).numpy()
            np.testing.assert_allclose(logits[index], alone[0], atol=1e-5)


def gradients(model, logits, labels):
    model.clear_gradients()
    F.cross_entropy(logits.astype("float32"), labels).backward()
    return {name: parameter.grad.numpy().copy() for name, parameter in model.named_parameters()}


def test_every_gradient_of_a_packed_batch_equals_the_padded_batchs(classifier, train_inputs):
    # (Under --use_amp the two forms differ no more: both add the same float32 mask. Paddle 3.3.1's
    # auto_cast does nothing on a CPU, so only a GPU machine can show it.)
    tokenizer, input_ids, labels = train_inputs
    model = classifier.model
    packed = gradients(model, packed_logits(classifier, tokenizer, input_ids), labels)
    inputs = padded_inputs(input_ids, tokenizer.pad_token_id, tokenizer.sep_token_id)
    padded = gradients(model, classifier(**{name: paddle.to_tensor(value) for name, value in inputs.items()}), labels)
    assert packed.keys() == padded.keys()
    for name in padded:
        # atol for the gradients that are zero but for rounding (rows of tokens the batch lacks).
        np.testing.assert_allclose(packed[name], padded[name], rtol=1e-4, atol=1e-7, err_msg=name)
