"""The headline benchmark's summary, on finished arms written by hand.

``benchmarks/lth_speedup.py summary`` turns the arm lines of a cohort into the
speed, statistics and agreement tables; here three seeds of made-up arms with
known differences go in, and the figures that come out are checked against
``iac.stats`` and ``iac.nas.agreement`` called directly.
"""

from __future__ import annotations

import json
import math
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from iac.config import SearchConfig
from iac.nas.agreement import agreement
from iac.nas.genotype import SearchSpace, random_genotype
from iac.stats.tests import noninferiority_test


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("lth_speedup.py", "lth_speedup_bench")


def _rows():
    rng = np.random.default_rng(0)
    space = SearchSpace.from_config(SearchConfig(cell_channels=8))
    patients = [f"patient{i:03d}" for i in range(1, 31)]
    base = rng.uniform(0.7, 0.9, len(patients))

    def dice(shift, spread=0.01):
        return {p: float(v) for p, v in zip(patients, base + shift + rng.normal(0, spread, len(patients)))}

    design = {"patients": 60}
    rows = [{"arm": "baseline", "seed": None, "patient_dice": dice(0.0), "test_dice": 0.8, "design": design},
            {"arm": "continued", "seed": None, "patient_dice": dice(0.0), "test_dice": 0.8, "design": design}]
    for k in range(3):
        rows.append({"arm": f"random-{k}", "seed": None, "kind": "random", "patient_dice": dice(-0.02),
                     "test_dice": 0.78, "genotype": random_genotype(space, rng).to_dict(), "design": design})
    fulls = {}
    for seed in range(3):
        g = random_genotype(space, rng)
        fulls[seed] = g
        cum = list(np.cumsum(np.full(200, 10.0)))
        rows.append({"arm": "full", "seed": seed, "kind": "search", "search_seconds": cum[-1], "epochs_run": 200,
                     "genotype": g.to_dict(), "cum_seconds": cum, "epoch_seconds": [10.0] * 200,
                     "mean_epoch_seconds_before": 10.0, "mean_epoch_seconds_after": None, "design": design})
        # LTH: stops after 50 epochs, pruned epochs at 5 s after epoch 20: 20 * 10 + 30 * 5 = 350 s
        lth_cum = list(np.cumsum([10.0] * 20 + [5.0] * 30))
        rows.append({"arm": "lth-js", "seed": seed, "kind": "search", "search_seconds": lth_cum[-1], "epochs_run": 50,
                     "genotype": g.to_dict(), "cum_seconds": lth_cum, "mean_epoch_seconds_before": 10.0,
                     "mean_epoch_seconds_after": 5.0, "first_pruning_epoch": 20, "design": design})
        rows.append({"arm": "control-js", "seed": seed, "kind": "control-truncated", "genotype": g.to_dict(),
                     "patient_dice": dice(0.03), "test_dice": 0.83, "design": design})
        rows.append({"arm": "full-cell", "seed": seed, "kind": "cell", "patient_dice": dice(0.03), "test_dice": 0.83,
                     "design": design})
        rows.append({"arm": "lth-js-cell", "seed": seed, "kind": "cell", "patient_dice": dice(0.03),
                     "test_dice": 0.83, "design": design})
    return rows, fulls, patients


def test_summary_figures_match_the_library(bench, tmp_path):
    rows, fulls, patients = _rows()
    folder = tmp_path / "confirm"
    folder.mkdir()
    (folder / "arms.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench.RESULTS = tmp_path
    bench.summarize(Namespace(cohort="confirm", ni_margin=0.01, superiority_margin=0.01))
    out = json.loads((folder / "summary.json").read_text())

    # speed: 2000 s against 350 s on every seed; pruning saved 500 - 350 of the 1650 s
    assert out["speedup_geomean"]["js"] == pytest.approx(2000 / 350)
    assert all(r["pruning_share"] == pytest.approx(150 / 1650) for r in out["speed"])

    # non-inferiority: the seed-mean per-patient differences through iac.stats
    by = {(r["arm"], r["seed"]): r for r in rows}

    def seed_mean(arm):
        return np.mean([[by[(arm, s)]["patient_dice"][p] for p in patients] for s in range(3)], axis=0)

    d = seed_mean("lth-js-cell") - seed_mean("full-cell")
    ni = next(t for t in out["tests"] if t["family"] == "noninferiority")
    assert ni["p"] == pytest.approx(noninferiority_test(d, 0.01).pvalue)
    assert ni["ci_low_points"] <= ni["hl_points"] <= ni["ci_high_points"]
    # the full cell is 3 points above the continued control: superior by more than 1 point, after Holm
    sup = {t["comparison"]: t for t in out["tests"] if t["family"] == "superiority"}
    assert sup["superiority: full - continued (by 1 points)"]["reject_holm"]
    assert sup["superiority: full - random (pooled) (by 1 points)"]["reject_holm"]
    assert not sup["superiority: full - control-js (by 1 points)"]["reject_holm"]  # same cell quality

    # agreement: LTH equals its full search; full vs full matches iac.nas.agreement
    lth = [a for a in out["agreement"] if a["other"] == "lth-js"]
    assert all(a["shared"] == a["total"] == 8 for a in lth)
    ff = [a["shared"] for a in out["agreement"] if a["other"].startswith("full seed")]
    expected = [agreement(fulls[a], fulls[b]).shared for a, b in ((0, 1), (0, 2), (1, 2))]
    assert sorted(ff) == sorted(expected)
    assert out["full_vs_full_shared_mean"] == pytest.approx(np.mean(expected))
    assert math.isfinite(out["random_pairs"]["shared_p99"])
    assert (folder / "tables.md").is_file() and (folder / "lth_speedup.png").stat().st_size > 0


def test_a_summary_refuses_mixed_designs(bench, tmp_path):
    rows, _, _ = _rows()
    rows[0]["design"] = {"patients": 20}
    (tmp_path / "confirm").mkdir()
    (tmp_path / "confirm" / "arms.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench.RESULTS = tmp_path
    with pytest.raises(SystemExit, match="mixes 2 designs"):
        bench.summarize(Namespace(cohort="confirm", ni_margin=0.01, superiority_margin=0.01))


def test_a_cell_retrained_with_several_training_seeds_scores_their_mean(bench, tmp_path):
    rows, _, _ = _rows()
    # two more retrainings of seed 0's full-search cell, 1 point above and below the first
    first = next(r for r in rows if r["arm"] == "full-cell" and r["seed"] == 0)
    first["train_seed"] = 0
    for k, shift in ((1, 0.01), (2, -0.01)):
        rows.append({**first, "train_seed": k, "test_dice": first["test_dice"] + shift,
                     "patient_dice": {p: v + shift for p, v in first["patient_dice"].items()}})
    (tmp_path / "confirm").mkdir()
    (tmp_path / "confirm" / "arms.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    bench.RESULTS = tmp_path
    bench.summarize(Namespace(cohort="confirm", ni_margin=0.01, superiority_margin=0.01))
    out = json.loads((tmp_path / "confirm" / "summary.json").read_text())
    # the merged score is the mean of the three (the first one, since the shifts cancel)
    assert out["dice"]["full-cell@0"] == pytest.approx(np.mean(list(first["patient_dice"].values())))
    # run-to-run spread over the one arm with three seeds: test Dice 0.83, 0.84, 0.82
    spread = out["run_to_run"]
    assert spread["arms"] == 1
    assert spread["sd_test_dice_points"] == pytest.approx(1.0)
    assert spread["mean_abs_test_diff_points"] == pytest.approx((1 + 1 + 2) / 3)
    assert spread["sd_patient_diff_points"] == pytest.approx(0.0, abs=1e-9)  # constant shifts per pair
    assert "| full-cell@0 |" in (tmp_path / "confirm" / "tables.md").read_text()
    # arm keys: training seed 0 keeps the plain key, the others carry theirs
    assert bench.arm_key(first) == "full-cell@0"
    assert bench.arm_key({**first, "train_seed": 2}) == "full-cell@0/t2"


def _replayed(criterion, settings, epochs_run, shared):
    return {"criterion": criterion, "settings": settings, "epochs_run": epochs_run, "shared": shared, "total": 8}


def test_the_calibration_rule_takes_the_earliest_stop_that_agrees(bench):
    rows = [_replayed("js", {"tau": 1e-3, "patience": 1}, 20, 4),   # fastest, but disagrees
            _replayed("js", {"tau": 3e-4, "patience": 1}, 50, 7),   # earliest of those sharing >= 7
            _replayed("js", {"tau": 1e-4, "patience": 2}, 80, 8)]
    assert bench.choose(rows)["settings"] == {"tau": 3e-4, "patience": 1}
    # ties go to the paper's default
    rows.append(_replayed("js", {"tau": 1e-4, "patience": 2}, 50, 7))
    assert bench.choose(rows)["settings"] == {"tau": 1e-4, "patience": 2}
    # nothing agrees enough: the most shared choices, then the earliest stop
    low = [_replayed("sequential", {"seq_error": 0.3, "seq_effect": 40.0}, 30, 5),
           _replayed("sequential", {"seq_error": 0.1, "seq_effect": 80.0}, 90, 6),
           _replayed("sequential", {"seq_error": 0.2, "seq_effect": 80.0}, 120, 6)]
    assert bench.choose(low)["settings"] == {"seq_error": 0.1, "seq_effect": 80.0}


def test_the_default_criterion_is_one_that_finds_the_full_searchs_cell(bench):
    fast_but_wrong = _replayed("js", {"tau": 1e-5, "patience": 3}, 36, 3)
    slow_and_right = _replayed("sequential", {"seq_error": 0.05, "seq_effect": 40.0}, 150, 7)
    assert bench.default_criterion({"js": fast_but_wrong, "sequential": slow_and_right}) == "sequential"
    # both agree: the earlier stop; neither: the one sharing more
    assert bench.default_criterion({"js": _replayed("js", {}, 90, 7), "sequential": slow_and_right}) == "js"
    assert bench.default_criterion({"js": fast_but_wrong, "sequential": _replayed("sequential", {}, 200, 5)}) == "sequential"
    assert bench.default_criterion({"js": _replayed("js", {}, 90, 7), "sequential": _replayed("sequential", {}, 90, 7)}) == "js"


def _write(folder: Path, rows) -> None:
    (folder / "confirm").mkdir(parents=True)
    (folder / "confirm" / "arms.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_rows_written_before_a_design_field_read_with_the_value_they_ran_with(bench, tmp_path):
    rows, _, _ = _rows()
    for r in rows[::2]:  # half written after implant_lr_scale existed, at the value the others ran with
        r["design"] = {**r["design"], "implant_lr_scale": 1.0}
    _write(tmp_path / "same", rows)
    bench.RESULTS = tmp_path / "same"
    bench.summarize(Namespace(cohort="confirm", ni_margin=0.01, superiority_margin=0.01))
    assert json.loads((tmp_path / "same" / "confirm" / "summary.json").read_text())["design"]["implant_lr_scale"] == 1.0
    rows[0]["design"] = {**rows[0]["design"], "implant_lr_scale": 10.0}
    _write(tmp_path / "mixed", rows)
    bench.RESULTS = tmp_path / "mixed"
    with pytest.raises(SystemExit, match="mixes 2 designs"):
        bench.summarize(Namespace(cohort="confirm", ni_margin=0.01, superiority_margin=0.01))


def test_an_amended_retraining_reuses_the_searches_and_nothing_else(bench, tmp_path, monkeypatch):
    from dataclasses import asdict, replace
    from types import SimpleNamespace

    frozen = {k: v for k, v in asdict(bench.Design()).items() if k != "implant_lr_scale"}  # written before the field
    rows, _, _ = _rows()
    rows.append({"arm": "replay-js", "seed": 0, "kind": "replay", "stopped": True, "epochs_run": 50})
    for r in rows:
        r.update(design=frozen, data_fingerprint="abc", cohort="confirm")
    _write(tmp_path / "v2", rows)
    monkeypatch.setattr(bench, "DESIGN", replace(bench.Design(), implant_lr_scale=10.0))
    monkeypatch.setattr(bench, "RESULTS", tmp_path / "amended")
    (tmp_path / "amended" / "confirm").mkdir(parents=True)

    def fresh_bench(fingerprint="abc"):
        b = SimpleNamespace(cohort="confirm", fingerprint=fingerprint, done={})
        b.record = lambda row: bench.Bench.record(b, row)
        return b

    b = fresh_bench()
    bench.reuse_searches(b, tmp_path / "v2", seed=0)
    assert sorted(b.done) == ["baseline", "full@0", "lth-js@0", "replay-js@0"]  # no cell, control or random
    written = bench.read_arms("confirm")
    assert {r["design"]["implant_lr_scale"] for r in written} == {10.0}
    assert all(r["searches_from"] == (tmp_path / "v2").as_posix() for r in written)
    source_full = next(r for r in rows if r["arm"] == "full" and r["seed"] == 0)
    assert b.done["full@0"]["genotype"] == source_full["genotype"]
    # a second call records nothing twice
    bench.reuse_searches(b, tmp_path / "v2", seed=0)
    assert len(bench.read_arms("confirm")) == 4
    # searches of another design (a field outside the retraining) or other data are refused
    with pytest.raises(SystemExit, match="other data"):
        bench.reuse_searches(fresh_bench("other"), tmp_path / "v2", seed=0)
    for r in rows:
        r["design"] = {**frozen, "size": 32}
    _write(tmp_path / "v2-small", rows)
    with pytest.raises(SystemExit, match=r"ran under another design \(size differ\)"):
        bench.reuse_searches(fresh_bench(), tmp_path / "v2-small", seed=0)
    with pytest.raises(SystemExit, match="seed 5's full search is not finished"):
        bench.reuse_searches(fresh_bench(), tmp_path / "v2", seed=5)
