"""Comparing the reference with every method: whole tables, pairing, seeds, frames, empty structures, refusals."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon
from statsmodels.stats.multitest import multipletests
from stats_helpers import BASE, one_row

from iac.stats import POOLED, StatsError, compare_methods, headline_metrics, patient_scores, to_markdown


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
        walsh = [(a + b) / 2 for i, a in enumerate(d) for b in d[i:]]  # independent of iac.stats.effect
        assert row["hl"] == pytest.approx(float(np.median(walsh)))
        assert row["hl_ci_low"] <= row["hl"] <= row["hl_ci_high"] and row["hl_ci_level"] >= 0.95
        assert row["n"] == 30 and row["zero_method"] == "zsplit" and row["alternative"] == "two-sided"
        p_direct.append(float(direct.pvalue))
    assert dice["p_holm"].to_numpy() == pytest.approx(multipletests(p_direct, method="holm")[1])
    assert set(dice["holm_family_size"]) == {3}
    assert set(res["metric"]) == {"dice", "hd95", "nsd"}


def test_sign_convention_for_dice_and_hd95(make_table, fast):
    table = make_table({"iac-lth": list(BASE + 0.05), "identity": list(BASE)}, n=30)
    res = compare_methods(table, fast)
    dice, hd = one_row(res, metric="dice"), one_row(res, metric="hd95")
    assert dice["better"] == "higher" and hd["better"] == "lower"
    for row in (dice, hd, one_row(res, metric="nsd")):  # reference better on all: positive r and shift
        assert row["r"] == pytest.approx(1.0) and row["median_diff"] > 0 and row["ci_low"] > 0
        assert row["hl"] > 0 and row["hl_ci_low"] > 0
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


def test_unscored_patients_are_dropped_only_when_every_method_lacks_a_score(make_table, fast):
    table = make_table({"iac-lth": list(BASE), "identity": list(BASE - 0.05)}, n=14, policy="nan")
    empty = table["patient"] == "p000"  # the reference structure is empty: unscored for every method
    table.loc[empty, ["dice", "hd95", "nsd"]] = np.nan
    table.loc[empty, "ref_empty"] = True
    row = one_row(compare_methods(table, fast), metric="dice")
    assert row["n"] == 13 and row["n_dropped"] == 1 and row["n_ref_empty"] == 1
    # NaN for one method only: the older 'nan' policy's pattern, refused rather than dropped
    table.loc[empty & (table["method"] == "iac-lth"), ["dice", "hd95", "nsd"]] = 0.9
    with pytest.raises(StatsError, match=r"leave different patients unscored.*\{'p000': 'identity'\}"):
        compare_methods(table, fast)


# The constructed case: structure "lesion" is absent from 10 of 17 patients. Where it is present,
# "fp-prone" scores 0.01 better than the reference; where it is absent, the reference rightly
# predicts nothing and "fp-prone" predicts a false positive every time.
N_PRESENT, N_ABSENT = 7, 10


def _constructed_case(make_table, policy: str) -> pd.DataFrame:
    present = list(BASE[:N_PRESENT])
    table = make_table(
        {"iac-lth": present + [1.0] * N_ABSENT, "fp-prone": [v + 0.01 for v in present] + [0.0] * N_ABSENT},
        n=N_PRESENT + N_ABSENT, labels=("lesion",), policy=policy,
    )
    absent = table["patient"].isin([f"p{i:03d}" for i in range(N_PRESENT, N_PRESENT + N_ABSENT)])
    table.loc[absent, "ref_empty"] = True
    table.loc[absent, "pred_empty"] = table.loc[absent, "method"] == "iac-lth"
    fp = absent & (table["method"] == "fp-prone")
    table.loc[fp, "hd95"], table.loc[fp, "nsd"] = 300.0, 0.0  # the image diagonal; no surface in common
    if policy == "nan":  # NaN wherever the reference is empty, for every method
        table.loc[absent, ["dice", "hd95", "nsd"]] = np.nan
    return table


def test_constructed_case_the_better_method_is_reported_better(make_table, fast):
    cfg = dataclasses.replace(fast, min_pairs=7)
    # Every empty structure scored (the default policy): the false positives weigh in the test.
    scored = one_row(compare_methods(_constructed_case(make_table, "dice1_hd0"), cfg), metric="dice")
    assert scored["n"] == N_PRESENT + N_ABSENT and scored["r"] > 0 and scored["p"] < 0.05 and scored["hl"] > 0
    # Unscored empty references (policy "nan"): both methods lose the same patients, and the
    # false positives the overlap scores cannot see are compared on their own.
    res = compare_methods(_constructed_case(make_table, "nan"), cfg)
    unscored = one_row(res, metric="dice")
    assert unscored["n"] == N_PRESENT and unscored["n_dropped"] == N_ABSENT
    assert unscored["r"] == pytest.approx(-1.0)  # where the lesion exists, fp-prone is better, truly
    assert unscored["n_ref_empty"] == N_ABSENT
    assert (unscored["fp_rate_reference"], unscored["fp_rate_method"]) == (0.0, 1.0)
    assert unscored["p_fp"] == pytest.approx(2 / 2**N_ABSENT) and unscored["p_fp"] < 0.05
    md = to_markdown(res)
    assert "FP on empty ref" in md and "0.00 vs 1.00 (p 0.002, 10 patients)" in md
    # The older "nan" (NaN only where the prediction was empty too) dropped exactly the reference's
    # right answers and reported it worse (r = -1); such a table is refused.
    older = _constructed_case(make_table, "dice1_hd0").assign(empty_policy="nan")
    older.loc[older["ref_empty"] & older["pred_empty"], ["dice", "hd95", "nsd"]] = np.nan
    with pytest.raises(StatsError, match="leave different patients unscored"):
        compare_methods(older, cfg)


def test_noninferiority_is_its_own_one_sided_test_with_holm(make_table, fast):
    rng = np.random.default_rng(11)
    slightly_better = BASE + 0.004 + rng.normal(0, 0.003, 30)  # the reference is 0.004 worse
    much_better = BASE + 0.05
    table = make_table({"iac-lth": list(BASE), "iac-full": list(slightly_better), "identity": list(much_better)}, n=30)
    res = compare_methods(table, dataclasses.replace(fast, ni_margin=0.01))
    close, far = one_row(res, metric="dice", method="iac-full"), one_row(res, metric="dice", method="identity")
    d = BASE - slightly_better
    assert close["p_ni"] == pytest.approx(float(wilcoxon(d + 0.01, zero_method="zsplit", alternative="greater").pvalue))
    assert bool(close["noninferior"]) and not bool(far["noninferior"])
    assert close["p_ni_holm"] == pytest.approx(multipletests([close["p_ni"], far["p_ni"]], method="holm")[1][0])
    assert not bool(close["equivalent"]) or close["p_tost"] < 0.05  # TOST is a different question
    assert pd.isna(one_row(res, metric="hd95", method="iac-full")["noninferior"])  # no HD95 margin set
    assert pd.isna(one_row(compare_methods(table, fast), metric="dice", method="iac-full")["noninferior"])


def test_headline_metrics(make_table, fast):
    table = make_table({"iac-lth": list(BASE), "identity": list(BASE - 0.05)}, n=30)
    head = headline_metrics(compare_methods(table, fast))
    assert head["phantom/unet/identity/mean_fg/dice/equivalent"] == 0.0
    assert head["phantom/unet/identity/mean_fg/dice/median_diff"] == pytest.approx(0.05)
    assert head["phantom/unet/identity/mean_fg/dice/hl"] == pytest.approx(0.05)
    assert head["phantom/unet/identity/mean_fg/dice/hl_ci_low"] == pytest.approx(0.05)  # every difference is 0.05
    assert "phantom/unet/identity/mean_fg/hd95/equivalent" not in head


# --------------------------------------------------------------------------- refusals


def test_refuses_differing_patient_sets_and_names_them(make_table, fast):
    table = make_table({"iac-lth": list(BASE), "identity": list(BASE)}, n=12)
    table = table[~((table["method"] == "identity") & table["patient"].isin(["p003", "p007"]))]
    with pytest.raises(StatsError, match=r"missing \[\('p003', ''\), \('p007', ''\)\]; extra \[\]"):
        compare_methods(table, fast)


@pytest.mark.parametrize("average_frames", [True, False])
def test_refuses_a_method_evaluated_on_other_frames(make_table, fast, average_frames):
    """An ED-only evaluation is not compared with the reference's ED+ES mean."""
    table = make_table({"iac-lth": list(BASE), "identity": list(BASE - 0.1)}, n=12, frames=("ED", "ES"))
    ed_only = table[~((table["method"] == "identity") & (table["frame"] == "ES"))]
    cfg = dataclasses.replace(fast, average_frames=average_frames)
    with pytest.raises(StatsError, match=r"'identity' seed 0 was evaluated on other \(patient, frame\) cases "
                                         r"than the reference 'iac-lth' seed 0: missing \[\('p000', 'ES'\)"):
        compare_methods(ed_only, cfg)
    fewer_labels = make_table({"iac-lth": list(BASE), "identity": list(BASE)}, n=12, labels=("LV", "mean_fg"))
    fewer_labels = fewer_labels[~((fewer_labels["method"] == "identity") & (fewer_labels["label"] == "LV"))]
    with pytest.raises(StatsError, match=r"'identity' seed 0 has labels \['mean_fg'\], the reference"):
        compare_methods(fewer_labels, fast)


def test_refuses_too_few_pairs(make_table, fast):
    table = make_table({"iac-lth": list(BASE), "identity": list(BASE - 0.1)}, n=9)
    with pytest.raises(StatsError, match="9 paired patients, fewer than min_pairs=10"):
        compare_methods(table, fast)
    assert len(compare_methods(table, dataclasses.replace(fast, min_pairs=9))) == 3


def test_refuses_missing_reference_and_duplicates(make_table, fast):
    table = make_table({"iac-full": list(BASE), "identity": list(BASE)}, n=12)
    with pytest.raises(StatsError, match="reference method 'iac-lth' is not among"):
        compare_methods(table, fast)
    dup = make_table({"iac-lth": list(BASE), "identity": list(BASE)}, n=12)
    with pytest.raises(StatsError, match="repeat a"):
        compare_methods(pd.concat([dup, dup[dup["method"] == "identity"]]), fast)
    with pytest.raises(ValueError, match="zero_method: 'none' is not one of zsplit, wilcox, pratt"):
        dataclasses.replace(fast, zero_method="none")  # the settings refuse it before any comparison
