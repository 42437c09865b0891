"""Paired patient-level comparisons: scipy / statsmodels agreement, pairing, refusals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon
from statsmodels.stats.multitest import multipletests

from iac.stats import (
    POOLED,
    EvaluatedRun,
    StatsError,
    compare_methods,
    equivalence_test,
    headline_metrics,
    holm,
    patient_scores,
    signed_rank_test,
    stack_runs,
)

RNG = np.random.default_rng(42)
BASE = RNG.uniform(0.6, 0.9, 30)  # per-patient Dice of the reference


def _row(results: pd.DataFrame, **where) -> pd.Series:
    mask = np.ones(len(results), bool)
    for k, v in where.items():
        mask &= results[k].to_numpy() == v
    assert mask.sum() == 1, f"{mask.sum()} rows match {where}"
    return results[mask].iloc[0]


# --------------------------------------------------------------------------- single tests


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
    p = RNG.uniform(0, 0.1, 7)
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


# --------------------------------------------------------------------------- whole tables


def test_table_matches_scipy_and_statsmodels_on_the_same_numbers(make_table, fast):
    other = {
        "iac-full": BASE + np.random.default_rng(1).normal(0, 0.01, 30),
        "identity": BASE - 0.04 + np.random.default_rng(2).normal(0, 0.01, 30),
        "attention": BASE - 0.01 + np.random.default_rng(3).normal(0, 0.02, 30),
    }
    table = make_table({"iac-lth": list(BASE), **{m: list(v) for m, v in other.items()}}, n=30)
    res = compare_methods(table, fast)
    dice = res[(res["metric"] == "dice") & (res["seed"] == POOLED)]
    assert list(dice["method"]) == list(other)
    p_direct = []
    for method, values in other.items():
        d = BASE - values
        direct = wilcoxon(d, zero_method="zsplit", method="exact")
        row = _row(dice, method=method)
        assert row["p"] == pytest.approx(float(direct.pvalue)) and row["wilcoxon_method"] == "exact"
        assert row["statistic"] == pytest.approx(float(direct.statistic))
        assert row["median_diff"] == pytest.approx(float(np.median(d)))
        assert row["ci_low"] <= row["median_diff"] <= row["ci_high"]
        assert row["n"] == 30 and row["zero_method"] == "zsplit" and row["alternative"] == "two-sided"
        p_direct.append(float(direct.pvalue))
    assert dice["p_holm"].to_numpy() == pytest.approx(multipletests(p_direct, method="holm")[1])
    assert set(dice["holm_family_size"]) == {3}
    assert set(res["metric"]) == {"dice", "hd95"}


def test_sign_convention_for_dice_and_hd95(make_table, fast):
    table = make_table({"iac-lth": list(BASE + 0.05), "identity": list(BASE)}, n=30)
    res = compare_methods(table, fast)
    dice, hd = _row(res, metric="dice"), _row(res, metric="hd95")
    assert dice["better"] == "higher" and hd["better"] == "lower"
    for row in (dice, hd):  # reference better on both: positive r and difference
        assert row["r"] == pytest.approx(1.0) and row["median_diff"] > 0 and row["ci_low"] > 0
    assert hd["median_diff"] == pytest.approx(20 * 0.05)
    flipped = compare_methods(table, dataclasses.replace(fast, reference="identity"))
    assert _row(flipped, metric="dice")["r"] == pytest.approx(-1.0)
    assert _row(flipped, metric="hd95")["r"] == pytest.approx(-1.0)


def test_equivalence_columns(make_table, fast):
    near = BASE + np.random.default_rng(5).normal(0, 0.002, 30)
    table = make_table({"iac-lth": list(BASE), "iac-full": list(near), "identity": list(BASE - 0.05)}, n=30)
    res = compare_methods(table, fast)
    assert res["equivalent"].dtype == "boolean"
    assert bool(_row(res, metric="dice", method="iac-full")["equivalent"])
    assert not bool(_row(res, metric="dice", method="identity")["equivalent"])
    assert pd.isna(_row(res, metric="hd95", method="iac-full")["equivalent"])  # no HD95 margin by default
    with_hd = compare_methods(table, dataclasses.replace(fast, hd95_margin=1.0))
    assert bool(_row(with_hd, metric="hd95", method="iac-full")["equivalent"])


def test_frames_are_averaged_per_patient(make_table, fast):
    def ref(i, frame, seed):
        return BASE[i] + (0.02 if frame == "ED" else -0.02)

    def other(i, frame, seed):
        return BASE[i] - 0.01 + (0.04 if frame == "ED" else -0.04)

    table = make_table({"iac-lth": ref, "identity": other}, n=12, frames=("ED", "ES"))
    scores = patient_scores(table)
    assert len(scores) == 2 * 12 and set(scores["n_frames"]) == {2}
    res = compare_methods(table, fast)
    row = _row(res, metric="dice")
    assert row["n"] == 12 and row["frame"] == ""  # patients, not frames
    assert row["median_reference"] == pytest.approx(float(np.median(BASE[:12])))
    assert row["median_diff"] == pytest.approx(0.01)
    separate = compare_methods(table, dataclasses.replace(fast, average_frames=False))
    dice = separate[separate["metric"] == "dice"]
    assert sorted(dice["frame"]) == ["ED", "ES"] and set(dice["n"]) == {12}
    assert _row(dice, frame="ED")["median_diff"] == pytest.approx(-0.01)
    assert _row(dice, frame="ES")["median_diff"] == pytest.approx(0.03)
    assert set(dice["holm_family_size"]) == {1}  # each frame is its own analysis


def test_seeds_are_pooled_by_patient_mean_and_reported_per_seed(make_table, fast):
    def lth(i, frame, seed):
        return BASE[i] + (0.02 if seed == 0 else 0.04)  # seed-mean: +0.03

    table = make_table(
        {"iac-lth": lth, "iac-full": list(BASE), "identity": list(BASE - 0.1)},
        n=12,
        seeds={"iac-lth": [0, 1], "iac-full": [0, 1]},
    )
    res = compare_methods(table, fast)
    dice = res[res["metric"] == "dice"]
    assert list(dict.fromkeys(dice["seed"])) == [POOLED, "0", "1"]
    pooled = _row(dice, seed=POOLED, method="iac-full")
    assert pooled["median_diff"] == pytest.approx(0.03) and pooled["n"] == 12
    assert pooled["seeds_reference"] == "0,1" and pooled["seeds_method"] == "0,1"
    assert _row(dice, seed="0", method="iac-full")["median_diff"] == pytest.approx(0.02)
    assert _row(dice, seed="1", method="iac-full")["median_diff"] == pytest.approx(0.04)
    # a method with one seed is compared as it is in every seed analysis
    assert _row(dice, seed="1", method="identity")["median_diff"] == pytest.approx(0.14)
    assert _row(dice, seed=POOLED, method="identity")["seeds_method"] == "0"


def test_nan_scores_are_dropped_pairs(make_table, fast):
    table = make_table({"iac-lth": list(BASE), "identity": list(BASE - 0.05)}, n=14, policy="nan")
    table.loc[(table["patient"] == "p000") & (table["method"] == "identity"), ["dice", "hd95"]] = np.nan
    row = _row(compare_methods(table, fast), metric="dice")
    assert row["n"] == 13 and row["n_dropped"] == 1


def test_headline_metrics(make_table, fast):
    table = make_table({"iac-lth": list(BASE), "identity": list(BASE - 0.05)}, n=30)
    head = headline_metrics(compare_methods(table, fast))
    assert head["phantom/unet/identity/mean_fg/dice/equivalent"] == 0.0
    assert head["phantom/unet/identity/mean_fg/dice/median_diff"] == pytest.approx(0.05)
    assert "phantom/unet/identity/mean_fg/hd95/equivalent" not in head


# --------------------------------------------------------------------------- refusals


def test_refuses_differing_patient_sets_and_names_them(make_table, fast):
    table = make_table({"iac-lth": list(BASE), "identity": list(BASE)}, n=12)
    table = table[~((table["method"] == "identity") & table["patient"].isin(["p003", "p007"]))]
    with pytest.raises(StatsError, match=r"missing from 'identity': \['p003', 'p007'\]; missing from 'iac-lth': \[\]"):
        compare_methods(table, fast)


def test_refuses_too_few_pairs(make_table, fast):
    table = make_table({"iac-lth": list(BASE), "identity": list(BASE - 0.1)}, n=9)
    with pytest.raises(StatsError, match="9 paired patients, fewer than min_pairs=10"):
        compare_methods(table, fast)
    assert len(compare_methods(table, dataclasses.replace(fast, min_pairs=9))) == 2


def test_refuses_fingerprint_mismatch(make_table, fast):
    a = make_table({"iac-lth": list(BASE)}, n=12, fingerprint="fpA")
    b = make_table({"identity": list(BASE)}, n=12, fingerprint="fpB")
    with pytest.raises(StatsError, match="data_fingerprint mismatch.*fpA.*fpB"):
        compare_methods(pd.concat([a, b]), fast)
    with pytest.raises(StatsError, match="state no data_fingerprint"):
        compare_methods(pd.concat([a, b.assign(data_fingerprint="")]), fast)


def test_refuses_unstated_or_mixed_policies(make_table, fast):
    a = make_table({"iac-lth": list(BASE)}, n=12)
    b = make_table({"identity": list(BASE)}, n=12)
    with pytest.raises(StatsError, match=r"scores of \['identity'\] state no empty-structure policy"):
        compare_methods(pd.concat([a, b.assign(empty_policy=None)]), fast)
    with pytest.raises(StatsError, match="different empty-structure policies"):
        compare_methods(pd.concat([a, b.assign(empty_policy="nan")]), fast)
    with pytest.raises(StatsError, match=r"lacks columns \['empty_policy'\]"):
        compare_methods(pd.concat([a, b]).drop(columns="empty_policy"), fast)
    per_case = b.drop(columns=["method", "seed", "empty_policy", "data_fingerprint"])
    with pytest.raises(StatsError, match="state no empty-structure policy"):
        stack_runs([EvaluatedRun(per_case, {"data_fingerprint": "fp0"}, method="identity", run_id="r1")])


def test_refuses_missing_reference_and_duplicates(make_table, fast):
    table = make_table({"iac-full": list(BASE), "identity": list(BASE)}, n=12)
    with pytest.raises(StatsError, match="reference method 'iac-lth' is not among"):
        compare_methods(table, fast)
    dup = make_table({"iac-lth": list(BASE), "identity": list(BASE)}, n=12)
    with pytest.raises(StatsError, match="repeat a"):
        compare_methods(pd.concat([dup, dup[dup["method"] == "identity"]]), fast)
    with pytest.raises(ValueError, match="unknown zero_method"):
        compare_methods(dup, dataclasses.replace(fast, zero_method="none"))


def test_stack_runs_takes_identity_from_meta(make_table, fast, tmp_path):
    from iac.eval.per_case import load_per_case, save_per_case

    runs = []
    for method, values in {"iac-lth": BASE, "identity": BASE - 0.05}.items():
        per_case = make_table({method: list(values)}, n=12).drop(
            columns=["method", "seed", "dataset", "backbone", "empty_policy", "data_fingerprint"]
        )
        meta = {"empty_policy": "dice1_hd0", "dataset": "phantom", "data_fingerprint": "fp0", "method": method, "seed": 3}
        path = save_per_case(per_case, tmp_path / method / "per_case.csv", meta)
        runs.append(EvaluatedRun(*load_per_case(path), backbone="unet", run_id=method))
    long = stack_runs(runs)
    assert set(long["seed"]) == {"3"} and set(long["method"]) == {"iac-lth", "identity"}
    row = _row(compare_methods(long, fast), metric="dice")
    assert row["median_diff"] == pytest.approx(0.05) and row["seeds_reference"] == "3"
