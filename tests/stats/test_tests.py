"""Signed-rank tests, Holm, TOST, non-inferiority and the false-positive sign test: agreement with scipy and statsmodels, known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, wilcoxon
from statsmodels.stats.multitest import multipletests

from iac.stats import equivalence_test, false_positive_test, holm, noninferiority_test, signed_rank_test


def test_known_answer_exact_p():
    # 10 positive distinct differences: the exact two-sided p is 2 / 2**10.
    res = signed_rank_test(np.arange(1, 11) / 100)
    assert res.method == "exact" and res.pvalue == pytest.approx(2 / 2**10) and res.statistic == 0.0


@pytest.mark.parametrize("n, decimals, method", [(15, None, "exact"), (60, None, "asymptotic"), (15, 2, "asymptotic")])
def test_signed_rank_equals_scipy(n, decimals, method):
    d = np.random.default_rng(n).normal(0.01, 0.03, n)
    if decimals is not None:
        d = np.round(d, decimals)  # ties -> asymptotic
    res = signed_rank_test(d, "zsplit")
    ref = wilcoxon(d, zero_method="zsplit", method=method)
    assert res.method == method
    assert (res.statistic, res.pvalue) == pytest.approx((float(ref.statistic), float(ref.pvalue)))


def test_all_zero_differences_give_p_one():
    assert signed_rank_test(np.zeros(12), "wilcox").pvalue == 1.0


def test_known_answer_holm_and_statsmodels():
    reject, p_adj = holm([0.01, 0.04, 0.03])
    # sorted: 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 -> max(0.04, 0.06) = 0.06
    assert p_adj == pytest.approx([0.03, 0.06, 0.06]) and reject.tolist() == [True, False, False]
    p = np.random.default_rng(42).uniform(0, 0.1, 7)
    assert holm(p)[1] == pytest.approx(multipletests(p, method="holm")[1])
    assert not np.allclose(holm(p)[1], multipletests(p)[1])  # statsmodels' default is Holm-Sidak


def test_equivalence_tost():
    tiny = np.random.default_rng(0).normal(0, 0.002, 30)
    eq = equivalence_test(tiny, margin=0.01)
    assert eq.equivalent and eq.pvalue == max(eq.p_lower, eq.p_upper) < 0.05
    assert eq.p_lower == pytest.approx(float(wilcoxon(tiny + 0.01, zero_method="zsplit", alternative="greater").pvalue))
    assert eq.p_upper == pytest.approx(float(wilcoxon(tiny - 0.01, zero_method="zsplit", alternative="less").pvalue))
    shifted = tiny + 0.03  # reference 0.03 better: outside the margin
    assert not equivalence_test(shifted, margin=0.01).equivalent
    assert not equivalence_test(tiny[:4], margin=0.01).equivalent  # too few pairs to show anything
    with pytest.raises(ValueError, match="margin"):
        equivalence_test(tiny, margin=0.0)


def test_noninferiority_is_one_sided_against_minus_the_margin():
    d = np.random.default_rng(2).normal(-0.004, 0.003, 25)  # the reference slightly worse
    ni = noninferiority_test(d, margin=0.01)
    assert ni.pvalue == pytest.approx(float(wilcoxon(d + 0.01, zero_method="zsplit", alternative="greater").pvalue))
    assert ni.noninferior and ni.method == "exact"
    assert not noninferiority_test(d - 0.02, margin=0.01).noninferior  # worse by more than the margin
    better = noninferiority_test(d + 0.05, margin=0.01)  # better: non-inferior, though TOST says not equivalent
    assert better.noninferior and not equivalence_test(d + 0.05, margin=0.01).equivalent
    with pytest.raises(ValueError, match="non-inferiority margin must be > 0"):
        noninferiority_test(d, margin=-0.01)


def test_false_positive_sign_test():
    ref = np.array([0.0, 0.0, 0.0, 0.5, 1.0, 0.0, 0.0, 0.0])
    other = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.0])  # 6 patients differ, all against "other"
    assert false_positive_test(ref, other) == pytest.approx(float(binomtest(6, 6).pvalue)) == pytest.approx(2 / 2**6)
    assert false_positive_test(other, ref) == pytest.approx(2 / 2**6)  # two-sided
    assert false_positive_test(ref, ref) == 1.0
