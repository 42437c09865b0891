"""The signed-rank tests of paired differences and Holm's correction.

* two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) with the
  configured ``zero_method`` (default ``"zsplit"``: a patient on which the
  two methods agree stays in the test) and ``method="exact"`` when there are
  at most ``exact_max_n`` pairs and neither zero nor tied differences, else
  ``method="asymptotic"`` (the normal approximation, no continuity
  correction); both choices are columns of the result;
* Holm's step-down correction over all rows of a table
  (``statsmodels.stats.multitest.multipletests(method="holm")``);
* an equivalence test (TOST): two one-sided signed-rank tests, of
  ``d + margin > 0`` and of ``d - margin < 0``; the methods are called
  equivalent when both one-sided p-values are below ``alpha``;
* a non-inferiority test, its own question with its own margin: one
  one-sided signed-rank test of ``H0: pseudo-median(d) <= -margin`` against
  ``H1: pseudo-median(d) > -margin`` (``d + margin`` with
  ``alternative="greater"``): is the reference worse by less than the margin?
  Unlike TOST it says nothing about the reference being *better*;
* a sign test of false positives on empty reference structures
  (``scipy.stats.binomtest`` on the patients whose false-positive rates
  differ; the exact McNemar test when every patient has one such case): the
  overlap scores cannot see them under the ``"nan"`` policy.

The differences ``d`` are oriented as :func:`iac.stats.effect.oriented_differences`
makes them: positive when the reference is better.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from scipy.stats import binomtest, wilcoxon
from statsmodels.stats.multitest import multipletests

from iac.stats.effect import check_zero_method
from iac.stats.inputs import StatsError

# Holm's method, named explicitly: statsmodels' default is Holm-Sidak.
HOLM = "holm"


class SignedRankResult(NamedTuple):
    """A signed-rank test: scipy's statistic and p-value, and the method used."""

    statistic: float
    pvalue: float
    method: str


class EquivalenceResult(NamedTuple):
    """Two one-sided signed-rank tests against ``-margin`` and ``+margin``."""

    p_lower: float  # H0: pseudo-median(d) <= -margin
    p_upper: float  # H0: pseudo-median(d) >= +margin
    pvalue: float  # max of the two
    equivalent: bool
    method: str  # "exact", "asymptotic" or "exact/asymptotic" when they differ


def _scipy_method(d: np.ndarray, exact_max_n: int) -> str:
    """``"exact"`` for at most ``exact_max_n`` pairs without zero or tied |d|, else ``"asymptotic"``."""
    magnitudes = np.abs(d)
    if d.size <= exact_max_n and not np.any(magnitudes == 0) and np.unique(magnitudes).size == d.size:
        return "exact"
    return "asymptotic"


def signed_rank_test(
    d: np.ndarray,
    zero_method: str = "zsplit",
    alternative: str = "two-sided",
    exact_max_n: int = 50,
) -> SignedRankResult:
    """Wilcoxon signed-rank test of paired differences with a stated method.

    Calls ``scipy.stats.wilcoxon(d, zero_method=..., alternative=...,
    method=...)`` with ``method`` chosen by the rule of the module docstring.
    When every difference is zero there is no evidence of a difference and
    the p-value is 1 (scipy returns NaN for some zero methods).
    """
    check_zero_method(zero_method)
    d = np.asarray(d, dtype=float)
    if d.size == 0:
        raise StatsError("signed-rank test of no pairs")
    method = _scipy_method(d, exact_max_n)
    if not np.any(d != 0):
        return SignedRankResult(0.0, 1.0, method)
    res = wilcoxon(d, zero_method=zero_method, alternative=alternative, method=method)
    return SignedRankResult(float(res.statistic), float(res.pvalue), method)


def equivalence_test(
    d: np.ndarray,
    margin: float,
    alpha: float = 0.05,
    zero_method: str = "zsplit",
    exact_max_n: int = 50,
) -> EquivalenceResult:
    """TOST with signed-rank tests: is the pseudo-median difference inside ``(-margin, margin)``?

    Lower test: ``d + margin`` with ``alternative="greater"``; upper test:
    ``d - margin`` with ``alternative="less"``. Equivalent when both
    one-sided p-values are below ``alpha``.
    """
    if not margin > 0:
        raise ValueError(f"equivalence margin must be > 0, got {margin}")
    d = np.asarray(d, dtype=float)
    lower = signed_rank_test(d + margin, zero_method, "greater", exact_max_n)
    upper = signed_rank_test(d - margin, zero_method, "less", exact_max_n)
    # An all-zero shifted vector cannot happen for margin > 0 unless d == -margin everywhere;
    # signed_rank_test then reports p = 1, which correctly refuses equivalence.
    p = max(lower.pvalue, upper.pvalue)
    method = lower.method if lower.method == upper.method else f"{lower.method}/{upper.method}"
    return EquivalenceResult(lower.pvalue, upper.pvalue, p, bool(lower.pvalue < alpha and upper.pvalue < alpha), method)


class NonInferiorityResult(NamedTuple):
    """One one-sided signed-rank test of ``H0: pseudo-median(d) <= -margin``."""

    pvalue: float
    noninferior: bool  # pvalue < alpha (uncorrected; compare_methods applies Holm)
    method: str


def noninferiority_test(
    d: np.ndarray,
    margin: float,
    alpha: float = 0.05,
    zero_method: str = "zsplit",
    exact_max_n: int = 50,
) -> NonInferiorityResult:
    """Is the reference worse than the other method by less than ``margin``?

    ``d`` is oriented (positive when the reference is better); the test is
    ``scipy.stats.wilcoxon(d + margin, alternative="greater")``.
    """
    if not margin > 0:
        raise ValueError(f"non-inferiority margin must be > 0, got {margin}")
    res = signed_rank_test(np.asarray(d, dtype=float) + margin, zero_method, "greater", exact_max_n)
    return NonInferiorityResult(res.pvalue, bool(res.pvalue < alpha), res.method)


def false_positive_test(rate_reference: np.ndarray, rate_other: np.ndarray) -> float:
    """Two-sided exact sign test of paired false-positive rates (patients with equal rates left out).

    Args:
        rate_reference: per patient, the share of its empty-reference cases
            where the reference predicted the structure.
        rate_other: the other method's, same patients and order.

    Returns:
        The p-value; 1 when no patient's rates differ.
    """
    a, b = np.asarray(rate_reference, dtype=float), np.asarray(rate_other, dtype=float)
    fewer, more = int(np.sum(a < b)), int(np.sum(a > b))
    return float(binomtest(fewer, fewer + more).pvalue) if fewer + more else 1.0


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm step-down adjusted p-values and rejections (statsmodels, ``method="holm"``)."""
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return np.array([], dtype=bool), np.array([], dtype=float)
    reject, p_adj, _, _ = multipletests(p, alpha=alpha, method=HOLM)
    return reject, p_adj
