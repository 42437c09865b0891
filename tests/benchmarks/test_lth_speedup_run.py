"""The headline benchmark's ``run`` on a tiny design: arm order, the replay shortcut, reuse and resume.

Everything runs for real (prepare, MLflow store, baseline, searches,
retrainings, evaluations) on 14 patients of the calibration cohort's seed at
32x32, with one-epoch trainings and four search epochs.
"""

from __future__ import annotations

import json
from argparse import Namespace
from dataclasses import replace

import pytest


@pytest.fixture
def bench(tmp_path, monkeypatch, load_benchmark):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    module = load_benchmark("lth_speedup.py", "lth_speedup_run")
    module.RESULTS = tmp_path / "results"
    module.DESIGN = replace(module.DESIGN, patients=14, size=32, baseline_epochs=1, retrain_epochs=1, retrain_seeds=2,
                            max_slices_per_epoch=16, check_every=1, val_fraction=0.15, test_fraction=0.3)
    # a JS threshold nothing reaches: the rule can neither prune nor stop
    module.CRITERIA = {**module.CRITERIA, "js": {"criterion": "js", "tau": 1e-12}}
    return module


def test_an_odd_seed_runs_every_arm_once_and_skips_a_rule_that_would_repeat_the_full_search(bench, tmp_path):
    args = Namespace(cohort="calibrate", seed=1, arms="shared,full,lth,retrain", criteria="js-paper,js", random=1,
                     epochs=4, threads=1, device="cpu", work=tmp_path / "work", searches_from=None)
    bench.run(args)
    path = tmp_path / "results" / "calibrate" / "arms.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    keys = [bench.arm_key(r) for r in rows]
    assert len(keys) == len(set(keys))
    # odd seed: the first IAC-LTH criterion before the full search
    assert keys.index("lth-js-paper@1") < keys.index("full@1")
    # the JS rule replayed on the full search prunes nothing and never stops: recorded as the full search
    replayed = rows[keys.index("replay-js@1")]
    assert (replayed["stopped"], replayed["pruning_events"], replayed["shared"]) == (False, 0, 8)
    lth_js, full = rows[keys.index("lth-js@1")], rows[keys.index("full@1")]
    assert lth_js["identical_to_full"] and lth_js["run_id"] == full["run_id"]
    # its cell is the full search's: the retrainings are reused, once per training seed
    for t, suffix in ((0, ""), (1, "/t1")):
        copy, source = rows[keys.index(f"lth-js-cell@1{suffix}")], rows[keys.index(f"full-cell@1{suffix}")]
        assert copy["copied_from"] == "full-cell" and copy["train_seed"] == t
        assert copy["patient_dice"] == source["patient_dice"]
    # every retrained arm has both training seeds
    for arm in ("continued", "random-0", "full-cell@1", "lth-js-paper-cell@1", "control-js-paper@1"):
        assert arm in keys and f"{arm}/t1" in keys
    # a rerun finds every arm done and adds nothing
    bench.run(args)
    assert len(path.read_text().splitlines()) == len(rows)


def test_a_lost_store_is_rebuilt_and_retrains_the_recorded_cells_to_the_same_dice(bench, tmp_path):
    args = Namespace(cohort="calibrate", seed=0, arms="full,retrain", criteria="", random=0,
                     epochs=2, threads=1, device="cpu", work=tmp_path / "work", searches_from=None)
    bench.run(args)
    path = tmp_path / "results" / "calibrate" / "arms.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    cells = [r for r in rows if r["arm"] == "full-cell"]
    assert len(cells) == 2
    # the store is gone (another machine) and the retrainings are still to do
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["arm"] != "full-cell"))
    bench.run(Namespace(**{**vars(args), "work": tmp_path / "elsewhere"}))
    rebuilds = [json.loads(line) for line in (path.parent / "rebuilds.jsonl").read_text().splitlines()]
    assert len(rebuilds) == 1 and rebuilds[0]["matches"] and rebuilds[0]["max_patient_dice_difference"] == 0.0
    again = [json.loads(line) for line in path.read_text().splitlines() if json.loads(line)["arm"] == "full-cell"]
    # retrained from the rebuilt baseline and the recorded genotype: the same Dice as from the lost runs
    assert [r["patient_dice"] for r in again] == [r["patient_dice"] for r in cells]
    assert all(r["run_id"] not in {c["run_id"] for c in cells} for r in again)


def test_a_rebuilt_baseline_that_differs_from_the_recorded_one_stops_the_run(bench, tmp_path):
    args = Namespace(cohort="calibrate", seed=0, arms="full", criteria="", random=0,
                     epochs=1, threads=1, device="cpu", work=tmp_path / "work", searches_from=None)
    bench.run(args)
    path = tmp_path / "results" / "calibrate" / "arms.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    base = next(r for r in rows if r["arm"] == "baseline")
    first = sorted(base["patient_dice"])[0]
    base["patient_dice"][first] += 0.01  # as if recorded from other weights
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SystemExit, match="does not reproduce the recorded one"):
        bench.run(Namespace(**{**vars(args), "arms": "retrain", "work": tmp_path / "elsewhere"}))
    rebuild = json.loads((path.parent / "rebuilds.jsonl").read_text())
    assert not rebuild["matches"] and rebuild["max_patient_dice_difference"] == pytest.approx(0.01)
    # nothing was retrained from it
    assert len(path.read_text().splitlines()) == len(rows)
