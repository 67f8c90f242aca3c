"""Intervals and tests whose unit is the run: XNLI accuracies of models trained with several seeds.

A run (one seed) gives one correctness array per language: 1 where it classified a test pair
correctly. Two sources of chance move an accuracy: the training run (seed, batch order, the head's
start; ±3 points between seeds at a few hundred steps) and the test pairs drawn for the test set.
The pairs within one run are not independent evidence about a model: the run is the unit.

- A row's mean accuracy: its standard error adds the spread between its runs (s^2 / n) and the
  sampling variance of its seed-averaged correctness over the test pairs (var / pairs), so that its
  interval covers the accuracy on other test pairs too; degrees of freedom by Welch-Satterthwaite.
- The difference between two rows on the same test pairs: a t-test over the runs, paired over the
  seeds both rows ran where one seed draws the same batches in both, Welch's otherwise. The test
  pairs are shared, so the runs' spread (which holds each run's own per-pair luck) is the whole
  uncertainty; with 3 seeds a paired difference must be 4.3 standard errors to reach p < 0.05,
  with 2 seeds 12.7.
- With one run in a row the run-to-run variance is unknown: the estimate counts the test pairs only
  and says so (`unit` "test pairs").
- Fifteen languages are fifteen tests: with no difference at all, one of them falls under 0.05 by
  chance in a good share of comparisons. Holm's adjustment over the languages of one comparison keeps
  the chance of any false flag among them at 5%, whatever their dependence.

Accuracies are in percent; "avg" weighs each language the same, as results.json's does.
"""

from typing import NamedTuple

import numpy as np
from scipy import stats

from utils import XNLI_LANGUAGES

COLUMNS = (*XNLI_LANGUAGES, "avg")
RUNS, TEST_PAIRS = "runs", "test pairs"


class Estimate(NamedTuple):
    """A mean accuracy or difference (%), its standard error, degrees of freedom (inf: normal), what
    its uncertainty counts (RUNS, or TEST_PAIRS only) and the runs' stds it came from (a difference's:
    of the per-seed differences where paired, each row's otherwise; none for TEST_PAIRS)."""

    value: float
    standard_error: float
    degrees_of_freedom: float
    unit: str
    run_stds: tuple = ()

    def interval(self, level=0.95):
        half_width = stats.t.ppf(0.5 + level / 2, self.degrees_of_freedom) * self.standard_error
        return [self.value - half_width, self.value + half_width]

    def p_value(self):
        """Two-sided p-value of the hypothesis that the true value is 0."""
        if self.standard_error == 0:
            return 1.0 if self.value == 0 else 0.0
        return float(2 * stats.t.sf(abs(self.value) / self.standard_error, self.degrees_of_freedom))

    def critical_ratio(self, level=0.05):
        """How many standard errors a value must be to reach p < `level`."""
        return float(stats.t.ppf(1 - level / 2, self.degrees_of_freedom))


def run_accuracies(run_correctness):
    """{column: %} of one run's {language: correctness array}."""
    accuracy = {lang: 100 * float(np.mean(run_correctness[lang])) for lang in XNLI_LANGUAGES}
    return {**accuracy, "avg": float(np.mean(list(accuracy.values())))}


def pair_sampling_variances(per_pair_by_language):
    """{column: variance (%^2)} of the mean of per-pair values under drawing other test pairs."""
    variances = {
        lang: 1e4 * float(np.var(values, ddof=1)) / len(values) if len(values) > 1 else 0.0
        for lang, values in ((lang, np.asarray(per_pair_by_language[lang], np.float64)) for lang in XNLI_LANGUAGES)
    }
    return {**variances, "avg": sum(variances.values()) / len(XNLI_LANGUAGES) ** 2}


def seed_averaged(runs):
    """{language: per-pair correctness averaged over `runs`}."""
    return {lang: np.mean([np.asarray(run[lang], np.float64) for run in runs], axis=0) for lang in XNLI_LANGUAGES}


def combined(value, run_samples, pair_variance):
    """An Estimate from the runs' values (one array a source of run-to-run variance, each counted as
    s^2 / n with n - 1 degrees of freedom) and the test pairs' variance."""
    if not run_samples:
        return Estimate(value, float(np.sqrt(pair_variance)), np.inf, TEST_PAIRS)
    stds = tuple(float(np.std(sample, ddof=1)) for sample in run_samples)
    parts = [(std**2 / len(sample), len(sample) - 1) for std, sample in zip(stds, run_samples)]
    run_variance = sum(part for part, _ in parts)
    spread = sum(part**2 / dof for part, dof in parts)
    dof = (run_variance + pair_variance) ** 2 / spread if spread > 0 else np.inf
    return Estimate(value, float(np.sqrt(run_variance + pair_variance)), dof, RUNS, stds)


def row_estimates(runs):
    """{column: Estimate of the row's mean accuracy} from its runs' {language: correctness}."""
    accuracies = [run_accuracies(run) for run in runs]
    pair_variance = pair_sampling_variances(seed_averaged(runs))
    estimates = {}
    for column in COLUMNS:
        values = np.array([accuracy[column] for accuracy in accuracies])
        estimates[column] = combined(float(values.mean()), [values] if len(values) > 1 else [], pair_variance[column])
    return estimates


def difference_estimates(runs_a, runs_b, paired):
    """{column: Estimate of row b's mean accuracy minus row a's}. `paired`: runs_a[i] and runs_b[i]
    share a seed (a paired t-test over the seeds); otherwise the rows are independent (Welch)."""
    accuracies_a = [run_accuracies(run) for run in runs_a]
    accuracies_b = [run_accuracies(run) for run in runs_b]
    averaged_a, averaged_b = seed_averaged(runs_a), seed_averaged(runs_b)
    pair_variance = pair_sampling_variances({lang: averaged_b[lang] - averaged_a[lang] for lang in XNLI_LANGUAGES})
    estimates = {}
    for column in COLUMNS:
        a = np.array([accuracy[column] for accuracy in accuracies_a])
        b = np.array([accuracy[column] for accuracy in accuracies_b])
        if paired and len(a) > 1:
            samples = [b - a]
        elif not paired and len(a) > 1 and len(b) > 1:
            samples = [a, b]
        else:
            samples = []
        # The rows ran on the same test pairs: the runs' spread is the whole uncertainty of their difference.
        estimates[column] = combined(float(b.mean() - a.mean()), samples, 0.0 if samples else pair_variance[column])
    return estimates


def holm_adjusted(p_values):
    """Holm's step-down adjustment of a family of p-values, in their order: the smallest times the
    family's size, the next times one less, each at least the one before it, at most 1."""
    order = np.argsort(p_values, kind="stable")
    adjusted, running_max = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running_max = max(running_max, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running_max
    return adjusted


def seeds_for_power(difference, run_stds, power=0.8, level=0.05, most=1000):
    """Seeds a row that the t-test over the runs needs to find `difference` (p < `level`) in a share
    `power` of experiments, were it the true difference: `run_stds` is one std (of the per-seed
    differences: paired) or the two rows' stds (Welch's, as many seeds in each). None beyond `most`, or
    without a run-to-run spread (no stds: a row of one run)."""
    variance = sum(std**2 for std in run_stds)
    if variance == 0 or difference == 0:
        return None
    for seeds in range(2, most + 1):
        if len(run_stds) == 1:
            dof = seeds - 1
        else:
            dof = variance**2 * (seeds - 1) / sum(std**4 for std in run_stds)
        critical = stats.t.ppf(1 - level / 2, dof)
        shift = abs(difference) / np.sqrt(variance / seeds)
        # The far tail (a significant difference of the wrong sign) adds under 1e-4 near 80% power.
        if stats.nct.sf(critical, dof, shift) >= power:
            return seeds
    return None
