"""The rule that chooses the implanted cells' learning-rate scale (benchmarks/implant_lr.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def rule(load_benchmark):
    return load_benchmark("implant_lr.py", "implant_lr_bench")


def _rows(dice):
    rows = [{"arm": "continued", "kind": "control-continued", "model_uri": "models:/u/1", "test_dice": 0.87}]
    rows += [{"arm": f"random-{k}", "kind": "random", "model_uri": f"models:/u/{k + 2}", "test_dice": d}
             for k, d in enumerate(dice)]
    return rows


def _shares(rows, share):
    return {r["model_uri"]: [{"level": lv, "ratio": share} for lv in range(3)] for r in rows if r["kind"] != "control-continued"}


def test_figures_leave_out_the_continued_control(rule):
    rows = _rows([0.86, 0.88])
    shares = _shares(rows, 0.2)
    shares["models:/u/2"][0]["ratio"] = 0.0  # one level of one cell: the median stays 0.2
    f = rule.scale_figures(rows, shares)
    assert f["cells"] == ["random-0", "random-1"]
    assert f["median_share"] == pytest.approx(0.2)
    assert f["mean_test_dice"] == pytest.approx(0.87) and f["continued_test_dice"] == 0.87
    with pytest.raises(SystemExit, match="no contribution measured for models:/u/3"):
        rule.scale_figures(rows, {"models:/u/2": shares["models:/u/2"]})


def test_the_smallest_scale_where_the_cell_acts_without_costing_dice(rule):
    rows = _rows([0.87, 0.87])
    one = rule.scale_figures(rows, _shares(rows, 0.01))  # switched off: never qualifies
    acts_but_hurts = rule.scale_figures(_rows([0.86, 0.86]), _shares(rows, 0.3))  # 1 point lower
    acts = rule.scale_figures(_rows([0.867, 0.867]), _shares(rows, 0.15))  # 0.3 points lower: within 0.5
    assert rule.choose({1.0: one}) is None
    assert rule.choose({1.0: one, 3.0: acts_but_hurts, 10.0: acts, 30.0: acts}) == 10.0
    assert rule.choose({1.0: one, 10.0: rule.scale_figures(rows, _shares(rows, 0.099))}) is None  # just under 10 %
    with pytest.raises(ValueError, match="scale 1"):
        rule.choose({10.0: acts})
