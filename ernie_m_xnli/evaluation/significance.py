"""Confidence intervals and paired tests over XNLI test pairs, from per-pair correctness.

A model's correctness on one language is a [pairs] array: the fraction of its runs (seeds) that
classified each pair correctly. Its accuracy is that array's mean; the average over languages gives
each language the same weight, as results.json's "avg" does.
"""

import numpy as np

from utils import XNLI_LANGUAGES


def accuracies(correct_by_language):
    """{language: %, "avg": %} of per-pair correctness."""
    accuracy = {lang: 100 * float(np.mean(correct_by_language[lang])) for lang in XNLI_LANGUAGES}
    return {**accuracy, "avg": float(np.mean(list(accuracy.values())))}


def bootstrap_intervals(correct_by_language, resamples, seed, level=0.95):
    """{column: [low, high]} percentile intervals (%) of the accuracy under resampling the test pairs
    with replacement, each language on its own (the average from the same resamples)."""
    rng = np.random.default_rng(seed)
    resampled = {}
    for lang in XNLI_LANGUAGES:
        correct = np.asarray(correct_by_language[lang], dtype=np.float64)
        resampled[lang] = 100 * correct[rng.integers(0, len(correct), (resamples, len(correct)))].mean(1)
    resampled["avg"] = np.mean([resampled[lang] for lang in XNLI_LANGUAGES], axis=0)
    tail = 100 * (1 - level) / 2
    return {
        column: [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
        for column, values in resampled.items()
    }


def paired_permutation_tests(correct_a, correct_b, permutations, seed):
    """{column: (difference b - a in points, two-sided p-value)} of a paired permutation test on the
    same test pairs: under the null hypothesis the two models are exchangeable on each pair, so each
    pair's difference keeps or flips its sign at random. p = (1 + permuted differences at least as
    large as the observed one) / (1 + permutations). Identical predictions give difference 0, p 1."""
    rng = np.random.default_rng(seed)
    differences, weights = [], []
    results = {}
    for lang in XNLI_LANGUAGES:
        difference = 100 * (np.asarray(correct_b[lang], np.float64) - np.asarray(correct_a[lang], np.float64))
        differences.append(difference)
        weights.append(np.full(len(difference), 1 / len(difference)))
    languages = [([lang], [index]) for index, lang in enumerate(XNLI_LANGUAGES)]
    for columns, indices in [*languages, (["avg"], list(range(len(XNLI_LANGUAGES))))]:
        values = np.concatenate([differences[i] * weights[i] for i in indices]) / len(indices)
        observed = float(values.sum())
        at_least = 0
        for start in range(0, permutations, 1000):
            signs = rng.choice(np.array([-1.0, 1.0]), size=(min(1000, permutations - start), len(values)))
            at_least += int((np.abs(signs @ values) >= abs(observed) - 1e-9).sum())
        results[columns[0]] = (observed, (1 + at_least) / (1 + permutations))
    return results
