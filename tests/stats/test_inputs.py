"""Stacking evaluate runs and the checks that refuse incomparable scores."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
from stats_helpers import BASE, one_row

from iac.stats import EvaluatedRun, StatsError, compare_methods, stack_runs


def test_refuses_runs_evaluated_on_different_data(make_table, fast):
    a = make_table({"iac-lth": list(BASE)}, n=12, fingerprint="fpA")
    b = make_table({"identity": list(BASE)}, n=12, fingerprint="fpB")
    with pytest.raises(StatsError, match="eval_data_fingerprint mismatch.*fpA.*fpB.*stats --fingerprint"):
        compare_methods(pd.concat([a, b]), fast)
    with pytest.raises(StatsError, match="state no eval_data_fingerprint"):
        compare_methods(pd.concat([a, b.assign(eval_data_fingerprint="")]), fast)
    # The training data may differ (a baseline trained on other data, scored on the same test set).
    same_eval = pd.concat([a, b.assign(eval_data_fingerprint="fpA", data_fingerprint="other-training-data")])
    assert one_row(compare_methods(same_eval, fast), metric="dice")["n"] == 12


@pytest.mark.parametrize(
    "column, a_value, b_value, words",
    [
        ("restore", "probabilities", "labels", "ways of restoring predictions"),
        ("nsd_tolerance_mm", '{"mean_fg": 2.0}', '{"mean_fg": 1.0}', "NSD tolerances"),
    ],
)
def test_refuses_runs_scored_differently(make_table, fast, column, a_value, b_value, words):
    a = make_table({"iac-lth": list(BASE)}, n=12).assign(**{column: a_value})
    b = make_table({"identity": list(BASE)}, n=12).assign(**{column: b_value})
    with pytest.raises(StatsError, match=f"runs use different {words}"):
        compare_methods(pd.concat([a, b]), fast)
    if column == "nsd_tolerance_mm":  # only matters when NSD is compared
        res = compare_methods(pd.concat([a, b]), dataclasses.replace(fast, metrics=("dice",)))
        assert set(res["metric"]) == {"dice"}


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


def test_stack_runs_takes_identity_from_meta(make_table, fast, tmp_path):
    from iac.eval.per_case import load_per_case, save_per_case

    runs = []
    for method, values in {"iac-lth": BASE, "identity": BASE - 0.05}.items():
        per_case = make_table({method: list(values)}, n=12).drop(
            columns=["method", "seed", "dataset", "backbone", "empty_policy", "eval_data_fingerprint", "data_fingerprint"]
        )
        meta = {
            "empty_policy": "dice1_hd0", "dataset": "phantom", "eval_data_fingerprint": "fp0",
            "data_fingerprint": f"train-{method}", "method": method, "seed": 3, "restore": "probabilities",
            "nsd_tolerance_mm": {"mean_fg": 2.0},
        }
        path = save_per_case(per_case, tmp_path / method / "per_case.csv", meta)
        runs.append(EvaluatedRun(*load_per_case(path), backbone="unet", run_id=method))
    long = stack_runs(runs)
    assert set(long["seed"]) == {"3"} and set(long["method"]) == {"iac-lth", "identity"}
    assert set(long["eval_data_fingerprint"]) == {"fp0"} and set(long["restore"]) == {"probabilities"}
    assert set(long["data_fingerprint"]) == {"train-iac-lth", "train-identity"}
    assert set(long["nsd_tolerance_mm"]) == {'{"mean_fg": 2.0}'}
    row = one_row(compare_methods(long, fast), metric="dice")
    assert row["median_diff"] == pytest.approx(0.05) and row["seeds_reference"] == "3"
