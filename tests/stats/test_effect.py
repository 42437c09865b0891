"""Rank sums, rank-biserial r, oriented differences, the bootstrap interval, Hodges-Lehmann and its exact interval."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import wilcoxon

from iac.stats.effect import (
    bootstrap_median_ci,
    hodges_lehmann,
    hodges_lehmann_ci,
    median_difference,
    oriented_differences,
    rank_biserial,
    signed_rank_null,
    signed_rank_sums,
    walsh_averages,
)


def test_known_answer_rank_biserial():
    # |d| ranks: 0.1 -> 1, 0.2 -> 2, 0.3 -> 3, 0.4 -> 4, 0.5 -> 5; only -0.1 is negative.
    d = np.array([0.5, -0.1, 0.2, 0.3, 0.4])
    assert signed_rank_sums(d) == (14.0, 1.0)
    assert rank_biserial(d) == pytest.approx(13 / 15)
    assert rank_biserial(-d) == pytest.approx(-13 / 15)


@pytest.mark.parametrize(
    "zero_method, sums",
    [
        ("wilcox", (4.0, 2.0)),  # zero dropped, then 1, 2, 3 ranked 1, 2, 3
        ("pratt", (6.0, 3.0)),  # zero ranked 1 and dropped
        ("zsplit", (6.5, 3.5)),  # zero's rank 1 split between the sums
    ],
)
def test_zero_methods_by_hand(zero_method, sums):
    d = np.array([0.0, 1.0, -2.0, 3.0])
    assert signed_rank_sums(d, zero_method) == sums
    assert rank_biserial(d, zero_method) == pytest.approx((sums[0] - sums[1]) / sum(sums))


@pytest.mark.parametrize("zero_method", ["wilcox", "pratt", "zsplit"])
def test_rank_sums_agree_with_scipy_statistic(zero_method):
    d = np.round(np.random.default_rng(0).normal(0.01, 0.02, 25), 3)  # ties and possibly zeros
    d[:2] = 0.0
    r_plus, r_minus = signed_rank_sums(d, zero_method)
    res = wilcoxon(d, zero_method=zero_method, alternative="greater", method="asymptotic")
    assert r_plus == pytest.approx(float(res.statistic))
    two = wilcoxon(d, zero_method=zero_method, method="asymptotic")
    assert min(r_plus, r_minus) == pytest.approx(float(two.statistic))


def test_all_zero_differences_have_no_effect():
    assert rank_biserial(np.zeros(5), "wilcox") == 0.0
    assert rank_biserial(np.zeros(5), "zsplit") == 0.0


def test_orientation_makes_the_better_reference_positive():
    ref, other = np.array([0.9, 0.8]), np.array([0.7, 0.6])
    assert np.all(oriented_differences(ref, other, higher_is_better=True) > 0)
    hd_ref, hd_other = np.array([2.0, 3.0]), np.array([5.0, 4.0])  # reference closer: better
    assert np.all(oriented_differences(hd_ref, hd_other, higher_is_better=False) > 0)
    with pytest.raises(ValueError, match="differ in shape"):
        oriented_differences(ref, other[:1], True)


def test_bootstrap_is_seeded_percentile_of_resampled_medians():
    d = np.random.default_rng(1).normal(0.02, 0.01, 20)
    low, high = bootstrap_median_ci(d, n_boot=500, level=0.9, seed=7)
    rng = np.random.default_rng(7)
    medians = np.median(d[rng.integers(0, d.size, size=(500, d.size))], axis=1)
    assert (low, high) == pytest.approx(tuple(np.quantile(medians, [0.05, 0.95])))
    assert bootstrap_median_ci(d, n_boot=500, level=0.9, seed=7) == (low, high)
    assert low <= median_difference(d) <= high
    wide = bootstrap_median_ci(d, n_boot=2500, level=0.99, seed=7)  # several blocks
    assert wide[0] <= low and wide[1] >= high


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n_boot": 0}, "n_boot"), ({"level": 1.0}, "level"), ({"d": np.array([])}, "empty")],
)
def test_bootstrap_refuses_bad_arguments(kwargs, match):
    args = {"d": np.ones(3), **kwargs}
    with pytest.raises(ValueError, match=match):
        bootstrap_median_ci(**args)
    with pytest.raises(ValueError, match="unknown zero_method 'drop'"):
        signed_rank_sums(np.ones(3), "drop")


# --------------------------------------------------------------------------- Hodges-Lehmann


def _brute_walsh(d) -> list[float]:
    """Walsh averages by a double loop (independent of iac.stats.effect)."""
    return sorted((d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d)))


@pytest.mark.parametrize("n", [0, 1, 2, 5, 9])
def test_signed_rank_null_counts_every_sign_vector(n):
    counts = np.zeros(n * (n + 1) // 2 + 1)
    for signs in itertools.product((0, 1), repeat=n):
        counts[sum(rank * s for rank, s in zip(range(1, n + 1), signs))] += 1
    np.testing.assert_allclose(signed_rank_null(n), counts / 2**n, rtol=0, atol=1e-15)


def test_hodges_lehmann_is_the_median_of_the_walsh_averages():
    d = np.random.default_rng(4).normal(0.01, 0.02, 17)
    assert walsh_averages(d).tolist() == pytest.approx(_brute_walsh(d))
    assert hodges_lehmann(d) == pytest.approx(float(np.median(_brute_walsh(d))))
    assert hodges_lehmann(np.array([1.0, 2.0, 10.0])) == pytest.approx(3.75)  # Walsh: 1 1.5 2 5.5 6 10


@pytest.mark.parametrize("n, level", [(6, 0.95), (12, 0.95), (12, 0.9), (20, 0.99)])
def test_exact_interval_is_what_the_exact_signed_rank_test_does_not_reject(n, level):
    """Shift d by every point between consecutive Walsh averages: inside the interval iff scipy's exact p > alpha."""
    d = np.random.default_rng(n).normal(0.02, 0.03, n)
    low, high, achieved = hodges_lehmann_ci(d, level)
    walsh = np.unique(_brute_walsh(d))
    for theta in (walsh[:-1] + walsh[1:]) / 2:
        p = float(wilcoxon(d - theta, method="exact").pvalue)
        assert (low < theta < high) == (p > 1 - level), (theta, p)
    assert low in walsh and high in walsh and low <= hodges_lehmann(d) <= high
    assert level <= achieved < 1


def test_too_few_pairs_have_no_finite_interval():
    low, high, achieved = hodges_lehmann_ci(np.array([0.1, 0.2, 0.3, 0.4, 0.5]), 0.95)  # 2 / 2**5 > 0.05
    assert (low, high, achieved) == (-math.inf, math.inf, 1.0)
    with pytest.raises(ValueError, match="level"):
        hodges_lehmann_ci(np.ones(8), 1.0)
