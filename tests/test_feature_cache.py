"""Tokenized splits cached on disk: equal to fresh tokenization, and never stale."""

import os
import re

from ernie_m_xnli.data.encoding import encode_pairs
from ernie_m_xnli.data.feature_cache import cache_key, load_features, save_features
from ernie_m_xnli.data.xnli_files import Pair

from conftest import cpu_run, run_main


def assert_same_features(actual, expected):
    assert list(actual) == list(expected)
    for lang in expected:
        assert [ids.tolist() for ids in actual[lang].input_ids] == [ids.tolist() for ids in expected[lang].input_ids]
        assert actual[lang].labels.tolist() == expected[lang].labels.tolist()
        assert actual[lang].example_ids.tolist() == expected[lang].example_ids.tolist()
        assert actual[lang].num_examples == expected[lang].num_examples


def test_cached_features_equal_the_tokenized_ones(tmp_path, tokenizer):
    features = {
        "en": encode_pairs(tokenizer, [Pair("fkaka flomi " * 20, "yes.", 0), Pair("fsu.", "no.", 2)], 16, 4),
        "fr": encode_pairs(tokenizer, [Pair("fkaka.", "maybe.", 1)], 16, 4),
        "de": encode_pairs(tokenizer, [], 16, 4),
    }
    save_features(str(tmp_path / "cache" / "entry.npz"), features, num_skipped=3)
    loaded, num_skipped = load_features(str(tmp_path / "cache" / "entry.npz"))
    assert num_skipped == 3
    assert_same_features(loaded, features)
    assert os.listdir(tmp_path / "cache") == ["entry.npz"]


def test_the_key_changes_with_every_input_of_the_features(tmp_path, tokenizer):
    data_file = tmp_path / "dev.tsv"
    data_file.write_text("a")
    key = cache_key(tokenizer, [str(data_file)], 128, 0)
    assert cache_key(tokenizer, [str(data_file)], 128, 0) == key
    assert cache_key(tokenizer, [str(data_file)], 64, 0) != key
    assert cache_key(tokenizer, [str(data_file)], 128, 16) != key
    data_file.write_text("ab")
    assert cache_key(tokenizer, [str(data_file)], 128, 0) != key


def test_a_second_run_loads_the_cache_and_gets_the_same_results(tmp_path, tiny_model_dir, xnli_dir):
    common = dict(max_steps=20, save_steps=20, cache_dir=tmp_path / "cache")
    first = run_main(**cpu_run(tiny_model_dir, xnli_dir, tmp_path / "first", **common))
    second = run_main(**cpu_run(tiny_model_dir, xnli_dir, tmp_path / "second", **common))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert len(re.findall(r"skipped \(tokenized\)", first.stderr)) == 3
    assert len(re.findall(r"skipped \(from .*cache/(train|dev|test)-\w+\.npz\)", second.stderr)) == 3
    assert sorted(name.split("-")[0] for name in os.listdir(tmp_path / "cache")) == ["dev", "test", "train"]
    results = [open(tmp_path / run / "results.json").read() for run in ("first", "second")]
    accuracies = [re.search(r'"test_accuracy": \{[^}]*\}', text).group(0) for text in results]
    assert accuracies[0] == accuracies[1]
    uncached = run_main(**cpu_run(tiny_model_dir, xnli_dir, tmp_path / "uncached", **{**common, "cache_dir": ""}))
    assert len(re.findall(r"skipped \(tokenized\)", uncached.stderr)) == 3
