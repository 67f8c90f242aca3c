"""Facts of ErnieM that the script relies on, checked on the tiny model."""

import numpy as np
import paddle
from paddlenlp.transformers import ErnieMForSequenceClassification

from ernie_m_xnli.data.batching import pad_batch
from ernie_m_xnli.data.encoding import encode_pairs
from ernie_m_xnli.data.xnli_files import Pair

PAIRS = [
    Pair("fkaka fsuta flomi fneri fvedu fgali.", "fkaka yes.", 0),
    Pair("fsuta.", "maybe.", 1),
    Pair("fneri fvedu fkaka fsuta flomi.", "fgali no fkaka.", 2),
]


def logits_of(model, input_ids, attention_mask=None):
    with paddle.no_grad():
        mask = None if attention_mask is None else paddle.to_tensor(attention_mask)
        return model(paddle.to_tensor(input_ids), attention_mask=mask).numpy()


def test_a_padded_batch_gives_each_example_its_own_logits(tiny_model_dir, tokenizer):
    paddle.seed(0)  # the new classifier head's weights: the same whichever tests ran before in this process
    model = ErnieMForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=3)
    model.eval()
    features = encode_pairs(tokenizer, PAIRS, max_seq_length=64, memory_length=0)
    input_ids, attention_mask = pad_batch(features.input_ids, tokenizer.pad_token_id)
    assert (input_ids == 1).any(), "the batch must contain [PAD] (id 1) for this test to mean anything"

    batch_logits = logits_of(model, input_ids, attention_mask)
    rounding = 0.0
    for row, ids in enumerate(features.input_ids):
        alone = logits_of(model, ids[None], np.ones((1, len(ids)), dtype=np.int64))
        np.testing.assert_allclose(batch_logits[row], alone[0], atol=1e-5)
        rounding = max(rounding, np.abs(batch_logits[row] - alone[0]).max())

    # Why the mask is always passed: ErnieM's default mask hides id 0 ([CLS]), not [PAD] (id 1). The new
    # head's logits are small (~0.01): what the unmasked padding changes is compared with float rounding.
    unmasked = logits_of(model, input_ids)
    assert np.abs(unmasked[1] - batch_logits[1]).max() > 100 * max(rounding, 1e-7)
