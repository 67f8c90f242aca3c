"""compare.py's statistics count the runs: on synthetic runs whose truth is known, a model compared
with itself is flagged about 5% of the time under seed noise, in any of the 15 languages too once
Holm's adjustment counts them, a real gap is flagged with 3 seeds, and a row of one run says that its
figures count the test pairs only."""

import json

import numpy as np
import pytest

from ernie_m_xnli.evaluation.predictions import write_test_predictions
from ernie_m_xnli.evaluation.significance import (
    TEST_PAIRS,
    difference_estimates,
    holm_adjusted,
    row_estimates,
    run_accuracies,
    seeds_for_power,
)
from utils import XNLI_LANGUAGES

from conftest import run_script

PAIRS_PER_LANGUAGE = 200
SEED_STD = 0.03  # the luck of training: ±3 points between seeds, as 120 steps of multilingual-e5 show


def pair_difficulties(rng):
    """{language: [pairs]} each test pair's chance of being classified correctly by a typical run."""
    return {lang: rng.beta(2.5, 2.5, PAIRS_PER_LANGUAGE) for lang in XNLI_LANGUAGES}


def synthetic_run(rng, difficulties, skill=0.0, seed_std=SEED_STD):
    """{language: correctness} of one training run: the model's skill plus this run's luck moves
    every pair's chance; the pairs are drawn given those chances."""
    luck = skill + rng.normal(0, seed_std)
    return {
        lang: rng.random(PAIRS_PER_LANGUAGE) < np.clip(chances + luck, 0, 1) for lang, chances in difficulties.items()
    }


def rejection_rate(rng, comparisons, skill_b, seed_std, paired):
    difficulties = pair_difficulties(rng)
    rejected = 0
    for _ in range(comparisons):
        runs_a = [synthetic_run(rng, difficulties, 0.0, seed_std) for _ in range(3)]
        runs_b = [synthetic_run(rng, difficulties, skill_b, seed_std) for _ in range(3)]
        rejected += difference_estimates(runs_a, runs_b, paired)["avg"].p_value() < 0.05
    return rejected / comparisons


@pytest.mark.parametrize("paired", [True, False], ids=["matched-seeds", "unmatched-seeds"])
def test_a_model_compared_with_itself_is_flagged_about_5_percent_of_the_time(paired):
    # 3 seeds a row, seeds 3 points apart: the pair-level test flagged most of these comparisons.
    rate = rejection_rate(np.random.default_rng(7), 400, 0.0, SEED_STD, paired)
    assert 0.015 <= rate <= 0.08, rate


def test_a_real_10_point_gap_with_agreeing_seeds_is_flagged_with_3_seeds():
    rng = np.random.default_rng(8)
    assert rejection_rate(rng, 50, 0.10, 0.005, paired=True) == 1.0
    assert rejection_rate(rng, 50, 0.10, 0.005, paired=False) == 1.0


def test_holm_multiplies_the_smallest_p_value_by_the_family_size_and_keeps_the_order():
    # Sorted: 0.005 x 4, 0.01 x 3, 0.03 x 2 and 0.04 x 1, which may not fall below the one before it.
    assert holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjusted([0.5, 0.9]) == [1.0, 1.0]


def test_one_of_15_languages_falls_under_005_by_chance_unless_holm_counts_them():
    rng = np.random.default_rng(10)
    difficulties = pair_difficulties(rng)
    any_alone = any_adjusted = 0
    for _ in range(400):
        runs_a = [synthetic_run(rng, difficulties) for _ in range(3)]
        runs_b = [synthetic_run(rng, difficulties) for _ in range(3)]
        estimates = difference_estimates(runs_a, runs_b, paired=True)
        p_values = [estimates[lang].p_value() for lang in XNLI_LANGUAGES]
        any_alone += min(p_values) < 0.05
        any_adjusted += min(holm_adjusted(p_values)) < 0.05
    assert any_alone / 400 > 0.25 and any_adjusted / 400 <= 0.08, (any_alone, any_adjusted)


def test_the_seeds_a_difference_needs_are_those_of_the_t_tests_power_tables():
    # Cohen's d = 1 at 80% power, alpha 0.05 two-sided: 10 pairs (paired), 17 a group (two groups).
    assert seeds_for_power(2.0, (2.0,)) == 10
    assert seeds_for_power(-1.0, (1.0, 1.0)) == 17
    assert seeds_for_power(0.0, (1.0, 1.0)) is None and seeds_for_power(0.01, (3.0,), most=50) is None


def test_the_interval_of_a_rows_mean_holds_the_true_accuracy_about_95_percent_of_the_time():
    rng = np.random.default_rng(9)
    difficulties = pair_difficulties(rng)
    truth = 100 * np.mean([np.mean(np.clip(d, 0, 1)) for d in difficulties.values()])
    held = 0
    for _ in range(300):
        low, high = row_estimates([synthetic_run(rng, difficulties) for _ in range(3)])["avg"].interval()
        held += low <= truth <= high
    assert 0.9 <= held / 300 <= 0.995


def write_run(directory, seed, run, gold_rng, versions=None):
    """A run directory as run_classifier.py (or, with transformers in `versions`, its transformers peer)
    leaves one: results.json and test_predictions.tsv."""
    directory.mkdir(parents=True)
    gold = {lang: np.random.default_rng(0).integers(0, 3, PAIRS_PER_LANGUAGE) for lang in XNLI_LANGUAGES}
    wrong_by = {lang: gold_rng.integers(1, 3, PAIRS_PER_LANGUAGE) for lang in XNLI_LANGUAGES}
    predicted = {lang: np.where(run[lang], gold[lang], (gold[lang] + wrong_by[lang]) % 3) for lang in XNLI_LANGUAGES}
    logits = {lang: np.eye(3)[predicted[lang]] for lang in XNLI_LANGUAGES}
    write_test_predictions(directory / "test_predictions.tsv", logits, gold)
    results = {"args": {"seed": seed}, "model_type": "bert", "test_accuracy": run_accuracies(run)}
    results["environment"] = {"cpu": "AMD EPYC", "versions": versions or {"paddle": "3.3.1", "suite": "abc"}}
    (directory / "results.json").write_text(json.dumps(results))
    return directory


def synthetic_rows(
    tmp_path, skill_b, seed_std, seeds_b=(42, 43, 44), seeds_a=(42, 43, 44), rng_seed=3, versions_b=None
):
    rng = np.random.default_rng(rng_seed)
    difficulties = pair_difficulties(rng)
    rows = []
    for name, skill, seeds, versions in (("a", 0.0, seeds_a, None), ("b", skill_b, seeds_b, versions_b)):
        runs = [
            write_run(
                tmp_path / f"{name}-{seed}", seed, synthetic_run(rng, difficulties, skill, seed_std), rng, versions
            )
            for seed in seeds
        ]
        rows.append(f"{name}={','.join(map(str, runs))}")
    return rows


def compare(tmp_path, rows):
    result = run_script(*rows, "--output_dir", tmp_path / "out", script="compare.py")
    assert result.returncode == 0, result.stderr
    comparison = json.loads((tmp_path / "out" / "comparison.json").read_text())
    return comparison, (tmp_path / "out" / "comparison.md").read_text()


def run_averages(row):
    return [json.loads(open(f"{run}/results.json").read())["test_accuracy"]["avg"] for run in row["runs"]]


def test_seed_noise_between_runs_of_one_model_is_no_difference_shown(tmp_path):
    comparison, markdown = compare(tmp_path, synthetic_rows(tmp_path, 0.0, SEED_STD))
    avg = next(p for p in comparison["paired"] if p["language"] == "avg")
    assert avg["unit"] == "runs" and avg["p_value"] >= 0.05 and avg["test"] == "paired t-test over seeds [42, 43, 44]"
    assert avg["degrees_of_freedom"] == pytest.approx(2, abs=0.5)
    assert f"{avg['difference']:+.1f} |" in markdown and "no difference shown" in markdown
    for row in comparison["rows"]:
        cell = row["test"]["avg"]
        assert row["seed_std"]["avg"] == cell["std"] > 1
        # The interval is wider than the test pairs alone (about ±0.9 points here) would make it.
        assert cell["ci95"][1] - cell["ci95"][0] > 4 * cell["std"] / np.sqrt(3)
    assert set(comparison["method"]) >= {"unit", "ci95", "p_value", "p_value_holm"}
    languages = [p for p in comparison["paired"] if p["language"] != "avg"]
    assert [p["p_value_holm"] for p in languages] == holm_adjusted([p["p_value"] for p in languages])
    assert avg["p_value_holm"] is None
    # A difference of a few tenths against seeds 3 points apart: no number of seeds worth running finds it.
    runs_a, runs_b = (run_averages(row) for row in comparison["rows"])
    assert seeds_for_power(avg["difference"], (float(np.std(np.subtract(runs_b, runs_a), ddof=1)),)) is None
    assert avg["seeds_for_80_percent_power"] is None and "over 1,000 seeds a row would be needed" in markdown
    alone = ", ".join(p["language"] for p in languages if p["p_value"] < 0.05) or "none"
    adjusted = ", ".join(p["language"] for p in languages if p["p_value_holm"] < 0.05) or "none"
    assert f"languages under p < 0.05: {alone}; after Holm's adjustment for 15 languages" in markdown
    assert f"comparisons of equal models): {adjusted}." in markdown


def test_a_real_gap_is_flagged_over_the_seeds(tmp_path):
    comparison, markdown = compare(tmp_path, synthetic_rows(tmp_path, 0.10, 0.005, seeds_b=(1, 2, 3)))
    avg = next(p for p in comparison["paired"] if p["language"] == "avg")
    assert avg["test"] == "Welch's t-test over the rows' seeds" and avg["seeds"] == []
    assert avg["difference"] == pytest.approx(10, abs=1.5) and avg["p_value"] < 0.01
    assert f"{avg['difference']:+.1f}*" in markdown
    seeds = seeds_for_power(
        avg["difference"], tuple(float(np.std(run_averages(row), ddof=1)) for row in comparison["rows"])
    )
    assert avg["seeds_for_80_percent_power"] == seeds == 3  # 2 seeds: 74%, t with 1.3 degrees of freedom
    assert f"{avg['difference']:+.1f} on the average the true difference, 3 seeds a row would find it" in markdown


def test_a_row_of_one_run_counts_the_test_pairs_only_and_says_so(tmp_path):
    comparison, markdown = compare(tmp_path, synthetic_rows(tmp_path, 0.10, 0.005, seeds_b=(42,)))
    assert comparison["rows"][1]["unit"] == TEST_PAIRS and comparison["rows"][1]["seed_std"]["avg"] is None
    for paired in comparison["paired"]:
        assert paired["unit"] == TEST_PAIRS and paired["degrees_of_freedom"] is None
        assert paired["seeds_for_80_percent_power"] is None  # no run-to-run spread to plan seeds with
    avg = next(p for p in comparison["paired"] if p["language"] == "avg")
    assert avg["p_value"] < 0.05 and f"{avg['difference']:+.1f}†" in markdown
    assert "run-to-run variance is unknown" in markdown and f"{avg['difference']:+.1f}*" not in markdown


def test_two_seeds_say_how_large_a_difference_must_be(tmp_path):
    comparison, markdown = compare(tmp_path, synthetic_rows(tmp_path, 0.0, SEED_STD, (42, 43), (42, 43)))
    avg = next(p for p in comparison["paired"] if p["language"] == "avg")
    assert avg["degrees_of_freedom"] == pytest.approx(1, abs=0.2)
    assert avg["critical_ratio"] > 8  # t with 1 degree of freedom: 12.7
    assert f"p < 0.05 needs a difference of {avg['critical_ratio']:.1f} standard errors" in markdown


def test_the_seeds_of_two_harnesses_are_not_paired(tmp_path):
    # transformers' seed 42 draws other batches and another start than the suite's: nothing pairs them.
    transformers = {"torch": "2.14.1", "transformers": "4.46.3"}
    comparison, _ = compare(tmp_path, synthetic_rows(tmp_path, 0.0, SEED_STD, versions_b=transformers))
    avg = next(p for p in comparison["paired"] if p["language"] == "avg")
    assert avg["test"] == "Welch's t-test over the rows' seeds" and avg["seeds"] == []
