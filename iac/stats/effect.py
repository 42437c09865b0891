"""Effect sizes of paired patient-level differences.

All functions take the *oriented* paired differences ``d`` (see
:func:`oriented_differences`): one value per patient, positive when the
reference method is better on that patient, whatever the metric's direction.

The effect reported next to every signed-rank test is the Hodges–Lehmann
estimate, the median of the Walsh averages ``(d_i + d_j) / 2`` (``i <= j``),
with its exact confidence interval: the Walsh averages of ranks ``k`` and
``M + 1 - k`` (``M = n (n + 1) / 2``), where ``k`` is the largest count with
``P(T+ <= k - 1) <= (1 - level) / 2`` under the signed-rank null distribution
of ``T+`` (no ties). It is the set of shifts the two-sided signed-rank test
does not reject, so the estimate, the interval and the test speak about the
same quantity (the pseudo-median), unlike the sample median.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy.stats import rankdata

from iac.config import ZERO_METHODS  # zero-difference handling of the signed-rank statistics (scipy's names)

# Bootstrap resamples drawn per block, to bound memory for large cohorts.
_BOOT_BLOCK = 1000


def check_zero_method(zero_method: str) -> str:
    """Return ``zero_method`` if scipy's ``wilcoxon`` knows it, else raise naming the valid ones."""
    if zero_method not in ZERO_METHODS:
        raise ValueError(f"unknown zero_method {zero_method!r}; valid: {', '.join(ZERO_METHODS)}")
    return zero_method


def oriented_differences(reference: np.ndarray, other: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Paired differences, positive when the reference is better.

    Args:
        reference: the reference method's per-patient scores.
        other: the compared method's scores for the same patients, same order.
        higher_is_better: True for Dice (``d = reference - other``), False
            for HD95 (``d = other - reference``: a smaller distance is better).
    """
    reference = np.asarray(reference, dtype=float)
    other = np.asarray(other, dtype=float)
    if reference.shape != other.shape:
        raise ValueError(f"paired scores differ in shape: {reference.shape} vs {other.shape}")
    return reference - other if higher_is_better else other - reference


def signed_rank_sums(d: np.ndarray, zero_method: str = "zsplit") -> tuple[float, float]:
    """Sums of the ranks of ``|d|`` over positive (R+) and negative (R-) differences.

    Ties get average ranks. Zero differences follow scipy's ``zero_method``:
    ``"wilcox"`` drops them before ranking, ``"pratt"`` ranks them and then
    drops their ranks, ``"zsplit"`` ranks them and gives half of their ranks
    to each sum.

    Returns:
        ``(r_plus, r_minus)``.
    """
    check_zero_method(zero_method)
    d = np.asarray(d, dtype=float)
    if zero_method == "wilcox":
        d = d[d != 0]
    if d.size == 0:
        return 0.0, 0.0
    ranks = rankdata(np.abs(d))
    r_plus = float(ranks[d > 0].sum())
    r_minus = float(ranks[d < 0].sum())
    if zero_method == "zsplit":
        half_zero = float(ranks[d == 0].sum()) / 2
        r_plus, r_minus = r_plus + half_zero, r_minus + half_zero
    return r_plus, r_minus


def rank_biserial(d: np.ndarray, zero_method: str = "zsplit") -> float:
    """Matched-pairs rank-biserial correlation ``r = (R+ - R-) / (R+ + R-)``.

    In [-1, 1]; positive when the reference is better (``d`` oriented).
    Zero differences are handled as in :func:`signed_rank_sums`, so with
    ``"zsplit"`` patients on which the methods agree pull ``r`` towards 0.
    Returns 0 when every difference is zero.
    """
    r_plus, r_minus = signed_rank_sums(d, zero_method)
    total = r_plus + r_minus
    return 0.0 if total == 0 else (r_plus - r_minus) / total


def bootstrap_median_ci(
    d: np.ndarray, n_boot: int = 10000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of ``d``.

    Patients are resampled with replacement ``n_boot`` times from
    ``numpy.random.default_rng(seed)``; the same inputs and seed always give
    the same interval.

    Returns:
        ``(low, high)``, the ``(1 - level) / 2`` and ``(1 + level) / 2``
        quantiles of the resampled medians.
    """
    d = np.asarray(d, dtype=float)
    if d.size == 0:
        raise ValueError("bootstrap of an empty set of differences")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    medians = np.empty(n_boot)
    for start in range(0, n_boot, _BOOT_BLOCK):
        stop = min(start + _BOOT_BLOCK, n_boot)
        idx = rng.integers(0, d.size, size=(stop - start, d.size))  # (block, n)
        medians[start:stop] = np.median(d[idx], axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(medians, [tail, 1 - tail])
    return float(low), float(high)


def walsh_averages(d: np.ndarray) -> np.ndarray:
    """The ``n (n + 1) / 2`` Walsh averages ``(d_i + d_j) / 2``, ``i <= j``, sorted."""
    d = np.asarray(d, dtype=float)
    i, j = np.triu_indices(d.size)
    return np.sort((d[i] + d[j]) / 2)


def hodges_lehmann(d: np.ndarray) -> float:
    """Hodges–Lehmann estimate of the pseudo-median of ``d`` (NaN for no differences)."""
    d = np.asarray(d, dtype=float)
    return float(np.median(walsh_averages(d))) if d.size else math.nan


@functools.lru_cache(maxsize=64)
def signed_rank_null(n: int) -> np.ndarray:
    """Exact null distribution of the signed-rank statistic ``T+`` for ``n`` pairs without ties.

    Every sign vector is equally likely, so ``P(T+ = t)`` is the number of
    subsets of ``{1, ..., n}`` summing to ``t`` over ``2**n``; built one rank
    at a time (halving each step keeps the values in range), ``O(n**3)``
    (about 3 s for 1000 pairs; cached per ``n``).

    Returns:
        ``pmf`` of length ``n (n + 1) / 2 + 1``: ``pmf[t] = P(T+ = t)``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pmf = np.zeros(n * (n + 1) // 2 + 1)
    pmf[0] = 1.0
    for rank in range(1, n + 1):
        top = rank * (rank + 1) // 2  # largest T+ reachable with ranks 1..rank
        shifted = pmf[: top - rank + 1].copy()  # rank added: t -> t + rank
        pmf[: top + 1] *= 0.5
        pmf[rank : top + 1] += 0.5 * shifted
    pmf.flags.writeable = False  # cached: shared by every comparison with n pairs
    return pmf


def hodges_lehmann_ci(d: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """Exact (Walsh-average) confidence interval of the pseudo-median of ``d``.

    Args:
        d: paired differences (ties and zeros are ranked like any value; the
            interval's coverage is then approximate, as for every rank method).
        level: the confidence level asked for.

    Returns:
        ``(low, high, achieved)``: the interval and its exact coverage under the
        null distribution, at least ``level`` (the distribution is discrete).
        With too few pairs for any finite interval at that level (``2 / 2**n >
        1 - level``), ``(-inf, inf, 1.0)``.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    d = np.asarray(d, dtype=float)
    if d.size == 0:
        raise ValueError("confidence interval of an empty set of differences")
    walsh = walsh_averages(d)
    cdf = np.cumsum(signed_rank_null(d.size))
    tail = (1 - level) / 2
    # k: ranks k .. M+1-k of the Walsh averages; P(T+ <= k - 1) is cdf[k - 1].
    ok = np.flatnonzero(cdf <= tail * (1 + 1e-9))  # the tolerance absorbs rounding of the dyadic sums
    if ok.size == 0:
        return -math.inf, math.inf, 1.0
    k = int(ok[-1]) + 1
    return float(walsh[k - 1]), float(walsh[walsh.size - k]), float(1 - 2 * cdf[k - 1])


def median_difference(d: np.ndarray) -> float:
    """Median of the paired differences (NaN for none)."""
    d = np.asarray(d, dtype=float)
    return float(np.median(d)) if d.size else math.nan
