"""Comparing the reference with every method: whole tables, pairing, seeds, frames, refusals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon
from statsmodels.stats.multitest import multipletests
from stats_helpers import BASE, one_row

from iac.stats import POOLED, StatsError, compare_methods, headline_metrics, patient_scores


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
        row = one_row(dice, method=method)
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
    dice, hd = one_row(res, metric="dice"), one_row(res, metric="hd95")
    assert dice["better"] == "higher" and hd["better"] == "lower"
    for row in (dice, hd):  # reference better on both: positive r and difference
        assert row["r"] == pytest.approx(1.0) and row["median_diff"] > 0 and row["ci_low"] > 0
    assert hd["median_diff"] == pytest.approx(20 * 0.05)
    flipped = compare_methods(table, dataclasses.replace(fast, reference="identity"))
    assert one_row(flipped, metric="dice")["r"] == pytest.approx(-1.0)
    assert one_row(flipped, metric="hd95")["r"] == pytest.approx(-1.0)


def test_equivalence_columns(make_table, fast):
    near = BASE + np.random.default_rng(5).normal(0, 0.002, 30)
    table = make_table({"iac-lth": list(BASE), "iac-full": list(near), "identity": list(BASE - 0.05)}, n=30)
    res = compare_methods(table, fast)
    assert res["equivalent"].dtype == "boolean"
    assert bool(one_row(res, metric="dice", method="iac-full")["equivalent"])
    assert not bool(one_row(res, metric="dice", method="identity")["equivalent"])
    assert pd.isna(one_row(res, metric="hd95", method="iac-full")["equivalent"])  # no HD95 margin by default
    with_hd = compare_methods(table, dataclasses.replace(fast, hd95_margin=1.0))
    assert bool(one_row(with_hd, metric="hd95", method="iac-full")["equivalent"])


def test_frames_are_averaged_per_patient(make_table, fast):
    def ref(i, frame, seed):
        return BASE[i] + (0.02 if frame == "ED" else -0.02)

    def other(i, frame, seed):
        return BASE[i] - 0.01 + (0.04 if frame == "ED" else -0.04)

    table = make_table({"iac-lth": ref, "identity": other}, n=12, frames=("ED", "ES"))
    scores = patient_scores(table)
    assert len(scores) == 2 * 12 and set(scores["n_frames"]) == {2}
    res = compare_methods(table, fast)
    row = one_row(res, metric="dice")
    assert row["n"] == 12 and row["frame"] == ""  # patients, not frames
    assert row["median_reference"] == pytest.approx(float(np.median(BASE[:12])))
    assert row["median_diff"] == pytest.approx(0.01)
    separate = compare_methods(table, dataclasses.replace(fast, average_frames=False))
    dice = separate[separate["metric"] == "dice"]
    assert sorted(dice["frame"]) == ["ED", "ES"] and set(dice["n"]) == {12}
    assert one_row(dice, frame="ED")["median_diff"] == pytest.approx(-0.01)
    assert one_row(dice, frame="ES")["median_diff"] == pytest.approx(0.03)
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
    pooled = one_row(dice, seed=POOLED, method="iac-full")
    assert pooled["median_diff"] == pytest.approx(0.03) and pooled["n"] == 12
    assert pooled["seeds_reference"] == "0,1" and pooled["seeds_method"] == "0,1"
    assert one_row(dice, seed="0", method="iac-full")["median_diff"] == pytest.approx(0.02)
    assert one_row(dice, seed="1", method="iac-full")["median_diff"] == pytest.approx(0.04)
    # a method with one seed is compared as it is in every seed analysis
    assert one_row(dice, seed="1", method="identity")["median_diff"] == pytest.approx(0.14)
    assert one_row(dice, seed=POOLED, method="identity")["seeds_method"] == "0"


def test_nan_scores_are_dropped_pairs(make_table, fast):
    table = make_table({"iac-lth": list(BASE), "identity": list(BASE - 0.05)}, n=14, policy="nan")
    table.loc[(table["patient"] == "p000") & (table["method"] == "identity"), ["dice", "hd95"]] = np.nan
    row = one_row(compare_methods(table, fast), metric="dice")
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


def test_refuses_missing_reference_and_duplicates(make_table, fast):
    table = make_table({"iac-full": list(BASE), "identity": list(BASE)}, n=12)
    with pytest.raises(StatsError, match="reference method 'iac-lth' is not among"):
        compare_methods(table, fast)
    dup = make_table({"iac-lth": list(BASE), "identity": list(BASE)}, n=12)
    with pytest.raises(StatsError, match="repeat a"):
        compare_methods(pd.concat([dup, dup[dup["method"] == "identity"]]), fast)
    with pytest.raises(ValueError, match="zero_method: 'none' is not one of zsplit, wilcox, pratt"):
        dataclasses.replace(fast, zero_method="none")  # the settings refuse it before any comparison
