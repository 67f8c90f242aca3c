"""Reading XNLI files, tokenizing into windows, and batching."""

import os

import numpy as np
import pytest

from ernie_m_xnli.data.batching import ShardedBatchSampler, eval_batches, pad_batch
from ernie_m_xnli.data.encoding import (
    Features,
    PairEncoder,
    average_window_logits,
    encode_pairs,
    pair_windows,
    truncate_longest_first,
)
from ernie_m_xnli.data.xnli_files import (
    Pair,
    XnliDataError,
    read_eval_split,
    read_prediction_file,
    read_xnli_tsv,
    xnli_file_paths,
)
from utils import XNLI_LANGUAGES

TRAIN_HEADER = "premise\thypo\tlabel\n"


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


def test_labels_map_to_paddlenlp_ids_and_contradictory_is_contradiction(tmp_path):
    path = write(tmp_path / "train.tsv", TRAIN_HEADER + "a\tb\tentailment\nc\td\tneutral\ne\tf\tcontradictory\n")
    pairs = read_xnli_tsv(path).pairs_by_language[None]
    assert pairs == [Pair("a", "b", 0), Pair("c", "d", 1), Pair("e", "f", 2)]


def test_eval_columns_are_picked_by_header_name_and_grouped_by_language(tmp_path):
    text = "pairID\tsentence2\tlanguage\tsentence1\tgold_label\n1\th1\tfr\tp1\tcontradiction\n2\th2\ten\tp2\tneutral\n"
    pairs = read_xnli_tsv(write(tmp_path / "dev.tsv", text)).pairs_by_language
    assert pairs == {"fr": [Pair("p1", "h1", 2)], "en": [Pair("p2", "h2", 1)]}


def test_quotes_are_plain_text(tmp_path):
    path = write(tmp_path / "train.tsv", TRAIN_HEADER + 'He said "hi\tand "left\tneutral\n')
    assert read_xnli_tsv(path).pairs_by_language[None] == [Pair('He said "hi', 'and "left', 1)]


def test_rows_with_an_empty_field_and_blank_lines_are_skipped_and_counted(tmp_path):
    text = TRAIN_HEADER + "a\tb\tneutral\n\t\t\n\tb\tneutral\na\t\tneutral\na\tb\t\n\nc\td\tentailment\n"
    xnli_file = read_xnli_tsv(write(tmp_path / "train.tsv", text))
    assert xnli_file.pairs_by_language[None] == [Pair("a", "b", 1), Pair("c", "d", 0)]
    assert xnli_file.num_skipped == 5


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "it holds no row of pairs"),
        ("premise\thypothesis\n", "it holds no row of pairs"),
        ("a\t\n\tb\n", "each of its 2 row(s) has an empty field"),
    ],
    ids=["empty", "header-only", "empty-fields"],
)
def test_a_file_to_predict_without_a_pair_is_refused(tmp_path, text, why):
    path = write(tmp_path / "pairs.tsv", text)
    with pytest.raises(XnliDataError) as error:
        read_prediction_file(path)
    assert str(error.value) == f"{path}: no pair to predict ({why}; expected premise<TAB>hypothesis rows)"


def test_crlf_line_ends_and_a_bom_are_accepted(tmp_path):
    path = write(tmp_path / "train.tsv", "\ufeffpremise\thypo\tlabel\r\na\tb\tentailment\r\n")
    assert read_xnli_tsv(path).pairs_by_language[None] == [Pair("a", "b", 0)]


@pytest.mark.parametrize(
    "body, message",
    [
        ("a\tb\tneutral\na\tb\n", ":3: expected 3 tab-separated fields, found 2"),
        ("a\tb\tneutral\na\tb\tneutral\textra\n", ":3: expected 3 tab-separated fields, found 4"),
        ("a\tb\tneutral\na\tb\tmaybe\n", ":3: unknown label 'maybe'"),
        (b"a\tb\tneutral\na\xff\tb\tneutral\n", ":3: invalid UTF-8"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, body, message):
    path = write(tmp_path / "train.tsv", TRAIN_HEADER.encode() + (body if isinstance(body, bytes) else body.encode()))
    with pytest.raises(XnliDataError, match=message) as error:
        read_xnli_tsv(path)
    assert str(error.value).startswith(path + ":3:")


def test_missing_column_and_empty_file_are_named(tmp_path):
    with pytest.raises(XnliDataError, match=r"dev.tsv:1: header has no gold_label or label column"):
        read_xnli_tsv(write(tmp_path / "dev.tsv", "language\tsentence1\tsentence2\nen\ta\tb\n"))
    with pytest.raises(XnliDataError, match=r"empty.tsv: the file is empty"):
        read_xnli_tsv(write(tmp_path / "empty.tsv", ""))


def test_eval_split_needs_all_15_languages(tmp_path):
    path = write(tmp_path / "dev.tsv", "language\tgold_label\tsentence1\tsentence2\nen\tneutral\ta\tb\n")
    with pytest.raises(XnliDataError, match="no rows for language"):
        read_eval_split(path)


def test_release_layout_and_paddlenlp_cache_layout_are_found(tmp_path, xnli_dir):
    paths = xnli_file_paths(xnli_dir, ["en"])
    assert paths["dev"].endswith("XNLI-1.0/xnli.dev.tsv")
    assert paths["train"]["en"].endswith("XNLI-MT-1.0/multinli/multinli.train.en.tsv")

    cache = tmp_path / "XNLI"
    for release in ("XNLI-1.0", "XNLI-MT-1.0"):
        (cache / release).mkdir(parents=True)
        (cache / release / release).symlink_to(f"{xnli_dir}/{release}")
    paths = xnli_file_paths(str(cache), XNLI_LANGUAGES)
    assert paths["test"] == f"{cache}/XNLI-1.0/XNLI-1.0/xnli.test.tsv"


def test_missing_files_are_all_named(tmp_path):
    (tmp_path / "XNLI-1.0").mkdir()
    write(tmp_path / "XNLI-1.0" / "xnli.dev.tsv", "x")
    with pytest.raises(XnliDataError) as error:
        xnli_file_paths(str(tmp_path), ["en", "fr"])
    message = str(error.value)
    assert "xnli.test.tsv" in message and "multinli.train.en.tsv" in message and "multinli.train.fr.tsv" in message
    assert "xnli.dev.tsv" not in message
    assert "--train_languages" not in message  # no training file at hand

    write(tmp_path / "XNLI-1.0" / "xnli.test.tsv", "x")
    (tmp_path / "XNLI-MT-1.0" / "multinli").mkdir(parents=True)
    write(tmp_path / "XNLI-MT-1.0" / "multinli" / "multinli.train.en.tsv", "x")
    os.remove(tmp_path / "XNLI-1.0" / "xnli.dev.tsv")
    with pytest.raises(XnliDataError) as error:
        xnli_file_paths(str(tmp_path), ["en"])
    assert str(error.value).endswith("xnli.dev.tsv")  # every training file there: nothing to say of them


@pytest.mark.parametrize("premise_length, hypothesis_length", [(a, b) for a in range(0, 14) for b in range(0, 14)])
def test_longest_first_truncation_matches_a_token_by_token_loop(premise_length, hypothesis_length):
    budget = 9
    a, b = premise_length, hypothesis_length
    while a + b > budget:  # the tokenizer's loop: shorten the longer one, the second on ties
        if a > b:
            a -= 1
        else:
            b -= 1
    assert truncate_longest_first(premise_length, hypothesis_length, budget) == (a, b)


def test_encoding_matches_the_tokenizer_pair_encoding(tokenizer):
    pairs = [
        Pair("fkaka fsuta flomi fneri fvedu.", "fgali yes.", 0),
        Pair("eka lo mi ne su ta ri po ve du ga li " * 3, "ka maybe lo mi ne su.", 1),
        Pair("Chat 123, noir!", "no " * 40, 2),
    ]
    features = encode_pairs(tokenizer, pairs, max_seq_length=24, memory_length=0)
    for pair, ids in zip(pairs, features.input_ids):
        expected = tokenizer(
            pair.premise, text_pair=pair.hypothesis, max_length=24, truncation=True, return_token_type_ids=False
        )["input_ids"]
        assert ids.tolist() == expected
    assert features.labels.tolist() == [0, 1, 2]
    assert tokenizer.pad_token_id == 1 and features.input_ids[0][0] == tokenizer.cls_token_id


@pytest.mark.parametrize("num_workers", [1, 2], ids=["in-process", "two-workers"])
def test_chunked_encoding_equals_encoding_the_whole_list(tokenizer, monkeypatch, num_workers):
    monkeypatch.setattr(PairEncoder, "CHUNK_PAIRS", 4)
    rng = np.random.default_rng(0)
    words = ["fkaka", "lo", "mi", "ne", "su", "ta", "ri", "po", "yes", "no", "maybe"]
    pairs = [
        Pair(
            " ".join(rng.choice(words, rng.integers(1, 30))),
            " ".join(rng.choice(words, rng.integers(1, 9))),
            int(rng.integers(3)),
        )
        for _ in range(23)
    ]
    expected = encode_pairs(tokenizer, pairs, max_seq_length=24, memory_length=4)
    done = []
    with PairEncoder(tokenizer, max_seq_length=24, memory_length=4, num_workers=num_workers) as encoder:
        features = encoder.encode(pairs, done.append)
        assert (encoder.pool is not None) == (num_workers > 1)
        empty = encoder.encode([])
    assert [ids.tolist() for ids in features.input_ids] == [ids.tolist() for ids in expected.input_ids]
    assert features.labels.tolist() == expected.labels.tolist()
    assert features.example_ids.tolist() == expected.example_ids.tolist() and len(features) > len(pairs)
    assert features.num_examples == 23 and done == [4, 4, 4, 4, 4, 3]
    assert len(empty) == 0 and empty.num_examples == 0


def test_windows_cover_the_premise_sharing_memory_length_tokens():
    premise, hypothesis = list(range(100, 130)), [1, 2, 3]
    windows = pair_windows(premise, hypothesis, budget=13, memory_length=4)
    parts = [part for part, _ in windows]
    assert parts == [premise[0:10], premise[6:16], premise[12:22], premise[18:28], premise[24:30]]
    assert all(hyp == hypothesis for _, hyp in windows)
    for previous, current in zip(parts, parts[1:]):
        assert previous[-4:] == current[:4]


def test_windows_leave_the_premise_half_the_budget_when_the_hypothesis_is_long():
    windows = pair_windows(list(range(20)), list(range(100, 130)), budget=12, memory_length=2)
    assert [len(part) for part, _ in windows] == [6, 6, 6, 6, 4]
    assert all(len(premise) + len(hyp) <= 12 for premise, hyp in windows)


def test_memory_length_zero_or_a_fitting_pair_gives_one_window():
    assert pair_windows(list(range(30)), [1, 2], budget=13, memory_length=0) == [(list(range(11)), [1, 2])]
    assert pair_windows(list(range(5)), [1, 2], budget=13, memory_length=4) == [(list(range(5)), [1, 2])]


def test_windowed_features_keep_label_and_example_of_each_window(tokenizer):
    pairs = [Pair("fkaka flomi " * 20, "yes.", 0), Pair("fsuta.", "no.", 2)]
    features = encode_pairs(tokenizer, pairs, max_seq_length=16, memory_length=4)
    windows_of_first = (features.example_ids == 0).sum()
    assert windows_of_first > 2
    assert features.example_ids.tolist() == [0] * windows_of_first + [1]
    assert features.labels.tolist() == [0] * windows_of_first + [2]
    assert max(len(ids) for ids in features.input_ids) == 16
    assert features.example_labels().tolist() == [0, 2]


def test_logits_of_a_pair_are_averaged_over_its_windows():
    logits = np.array([[1.0, 0, 0], [3.0, 0, 6], [0, 2.0, 0]])
    averaged = average_window_logits(logits, np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(averaged, [[2.0, 0, 3], [0, 2.0, 0]])


def test_padding_uses_the_pad_id_and_masks_it():
    input_ids, attention_mask = pad_batch([np.array([0, 5, 2]), np.array([0, 2])], pad_token_id=1)
    assert input_ids.tolist() == [[0, 5, 2], [0, 2, 1]]
    assert attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_ranks_see_disjoint_shards_covering_every_example():
    shards = []
    for rank in range(3):
        sampler = ShardedBatchSampler(20, batch_size=3, rank=rank, world_size=3, seed=7)
        sampler.set_epoch(2)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 3
        shards.append([index for batch in batches for index in batch])
    assert sorted(sum(shards, [])) == sorted(list(range(20)) + [shards[0][0]])  # one index wraps around
    assert set(shards[1]).isdisjoint(shards[2])


def test_data_order_depends_on_seed_and_epoch_only():
    def order(seed, epoch):
        sampler = ShardedBatchSampler(50, batch_size=4, seed=seed)
        sampler.set_epoch(epoch)
        return [index for batch in sampler for index in batch]

    assert order(1, 0) == order(1, 0)
    assert order(1, 0) != order(1, 1)
    assert order(1, 0) != order(2, 0)
    assert sorted(order(1, 3)) == list(range(50))


def test_eval_batches_split_examples_across_ranks_and_sort_by_length(tokenizer):
    pairs = [Pair("fkaka " * (n % 7 + 1) + "fsu " * n, "yes.", 0) for n in range(10)]
    features = encode_pairs(tokenizer, pairs, max_seq_length=16, memory_length=4)
    seen = []
    for rank in range(2):
        batches = eval_batches(features, batch_size=3, rank=rank, world_size=2)
        indices = np.concatenate(batches)
        assert set(features.example_ids[indices] % 2) == {rank}
        lengths = features.lengths()[indices]
        assert (np.diff(lengths) >= 0).all()
        seen.extend(indices.tolist())
    assert sorted(seen) == list(range(len(features)))


def test_concatenated_features_number_examples_one_after_the_other(tokenizer):
    first = encode_pairs(tokenizer, [Pair("fkaka " * 30, "yes.", 0), Pair("fsu.", "no.", 2)], 16, 4)
    second = encode_pairs(tokenizer, [Pair("eka.", "maybe.", 1)], 16, 4)
    both = Features.concatenate([first, second])
    assert both.num_examples == 3 and len(both) == len(first) + 1
    assert both.example_ids.tolist() == first.example_ids.tolist() + [2]
    assert both.example_labels().tolist() == [0, 2, 1]
    assert both[len(first)][0].tolist() == second.input_ids[0].tolist()


def padding_ratio(batches, lengths):
    """Tokens computed when each batch is padded to its longest input, per real token."""
    return sum(len(batch) * lengths[batch].max() for batch in batches) / sum(lengths[batch].sum() for batch in batches)


def test_length_grouped_batches_cover_each_example_once_per_epoch_across_ranks():
    lengths = np.random.RandomState(0).randint(5, 200, size=1003)
    epoch_batches = []
    for rank in range(2):
        sampler = ShardedBatchSampler(1003, batch_size=8, rank=rank, world_size=2, seed=3, lengths=lengths)
        sampler.set_epoch(1)
        batches = [np.array(batch) for batch in sampler]
        assert len(batches) == len(sampler) == 63
        epoch_batches.append(batches)
    seen = np.concatenate([np.concatenate(batches) for batches in epoch_batches])
    assert len(seen) == 1004 and set(seen) == set(range(1003))  # one index wraps around to even the ranks
    assert len(set(np.concatenate(epoch_batches[0])) & set(np.concatenate(epoch_batches[1]))) <= 1
    # The ranks' batches of one step have similar lengths, and batches carry little padding.
    for batch_0, batch_1 in zip(*epoch_batches):
        assert abs(int(lengths[batch_0].max()) - int(lengths[batch_1].max())) <= 10
    assert padding_ratio(epoch_batches[0], lengths) < 1.1


def test_length_grouping_is_deterministic_random_and_cuts_padding():
    lengths = np.random.RandomState(1).randint(5, 200, size=800)

    def batches(seed, epoch, grouped=True):
        sampler = ShardedBatchSampler(800, batch_size=16, seed=seed, lengths=lengths if grouped else None)
        sampler.set_epoch(epoch)
        return [np.array(batch) for batch in sampler]

    assert [b.tolist() for b in batches(1, 0)] == [b.tolist() for b in batches(1, 0)]
    assert [b.tolist() for b in batches(1, 0)] != [b.tolist() for b in batches(1, 1)]
    first_lengths = [int(lengths[batch].max()) for batch in batches(1, 0)]
    assert first_lengths != sorted(first_lengths) and first_lengths != sorted(first_lengths, reverse=True)
    assert padding_ratio(batches(1, 0), lengths) < 1.1 < 1.5 < padding_ratio(batches(1, 0, grouped=False), lengths)


def test_resuming_mid_epoch_continues_the_same_order():
    lengths = np.arange(100) % 17
    sampler = ShardedBatchSampler(100, batch_size=4, seed=5, lengths=lengths)
    sampler.set_epoch(2)
    whole = list(sampler)
    sampler.set_epoch(2, start_batch=7)
    assert list(sampler) == whole[7:]
