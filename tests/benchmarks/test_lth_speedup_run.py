"""The headline benchmark's ``run`` on a tiny design: arm order, the replay shortcut, reuse and resume.

Everything runs for real (prepare, MLflow store, baseline, searches,
retrainings, evaluations) on 14 patients of the calibration cohort's seed at
32x32, with one-epoch trainings and four search epochs.
"""

from __future__ import annotations

import json
import shutil
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



def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_lost_store_imports_the_kept_baseline_and_retrains_the_recorded_cells_to_the_same_dice(bench, tmp_path):
    args = Namespace(cohort="calibrate", seed=0, arms="full,retrain", criteria="", random=0,
                     epochs=2, threads=1, device="cpu", work=tmp_path / "work", searches_from=None)
    bench.run(args)
    path = tmp_path / "results" / "calibrate" / "arms.jsonl"
    rows = _rows(path)
    cells = [r for r in rows if r["arm"] == "full-cell"]
    assert len(cells) == 2
    kept = json.loads((path.parent / "baseline" / "baseline.json").read_text())
    assert kept["run_id"] == next(r["run_id"] for r in rows if r["arm"] == "baseline")
    # the store is gone (another machine) and the retrainings are still to do
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["arm"] != "full-cell"))
    bench.run(Namespace(**{**vars(args), "work": tmp_path / "elsewhere"}))
    (rebuild,) = _rows(path.parent / "rebuilds.jsonl")
    assert rebuild["how"] == "import" and rebuild["matches"] and rebuild["max_patient_dice_difference"] == 0.0
    again = [r for r in _rows(path) if r["arm"] == "full-cell"]
    # retrained from the imported baseline and the recorded genotype: the same Dice as from the lost runs
    assert [r["patient_dice"] for r in again] == [r["patient_dice"] for r in cells]
    assert all(r["run_id"] not in {c["run_id"] for c in cells} for r in again)


def test_without_a_kept_copy_the_baseline_is_trained_again_and_must_reproduce_the_recorded_dice(bench, tmp_path):
    args = Namespace(cohort="calibrate", seed=0, arms="none", criteria="", random=0,
                     epochs=1, threads=1, device="cpu", work=tmp_path / "work", searches_from=None)
    bench.run(args)  # the baseline alone: nothing used it, so no copy of its weights was kept
    results = tmp_path / "results" / "calibrate"
    assert not (results / "baseline").exists()
    elsewhere = bench.Bench("calibrate", 1, "cpu", tmp_path / "elsewhere", 1)
    uri = elsewhere.base_uri()
    (rebuild,) = _rows(results / "rebuilds.jsonl")
    assert rebuild["how"] == "retrain" and rebuild["matches"] and rebuild["max_patient_dice_difference"] == 0.0
    assert uri == rebuild["model_uri"] and elsewhere.in_store(rebuild["run_id"])
    # asked again, in the same store, it is not trained a second time
    assert bench.Bench("calibrate", 1, "cpu", tmp_path / "elsewhere", 1).base_uri() == uri
    assert len(_rows(results / "rebuilds.jsonl")) == 1


def test_a_retrained_baseline_that_differs_stops_the_run_until_the_cohort_is_rebased_on_it(bench, tmp_path):
    args = Namespace(cohort="calibrate", seed=0, arms="full,retrain", criteria="", random=0,
                     epochs=1, threads=1, device="cpu", work=tmp_path / "work", searches_from=None)
    bench.run(args)
    path = tmp_path / "results" / "calibrate" / "arms.jsonl"
    shutil.rmtree(path.parent / "baseline")
    rows = _rows(path)
    base = next(r for r in rows if r["arm"] == "baseline")
    first = sorted(base["patient_dice"])[0]
    base["patient_dice"][first] += 0.01  # as if recorded from other weights (another CPU)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["arm"] != "full-cell"))
    elsewhere = Namespace(**{**vars(args), "arms": "retrain", "work": tmp_path / "elsewhere"})
    with pytest.raises(SystemExit, match="does not reproduce the recorded one"):
        bench.run(elsewhere)
    (rebuild,) = _rows(path.parent / "rebuilds.jsonl")
    assert not rebuild["matches"] and rebuild["max_patient_dice_difference"] == pytest.approx(0.01)
    assert not any(r["arm"] == "full-cell" for r in _rows(path))  # nothing was retrained from it
    # a second try stops at once: the same baseline is not trained a third time
    with pytest.raises(SystemExit, match="rebase"):
        bench.run(elsewhere)
    assert len(_rows(path.parent / "rebuilds.jsonl")) == 1
    # rebase: the retrained baseline becomes the cohort's; what came from the lost one is set aside
    bench.rebase(Namespace(cohort="calibrate", threads=1, device="cpu", work=tmp_path / "elsewhere"))
    rebased = _rows(path)
    new_base = next(r for r in rebased if r["arm"] == "baseline")
    assert new_base["run_id"] == rebuild["run_id"] and new_base["replaces"] == base["run_id"]
    assert [r["arm"] for r in _rows(path.with_name(f"arms-baseline-{base['run_id'][:8]}.jsonl"))] == ["baseline"]
    assert {r["arm"] for r in rebased} == {"baseline", "full"}
    bench.run(elsewhere)
    assert {bench.arm_key(r) for r in _rows(path)} >= {"full-cell@0", "full-cell@0/t1"}
    assert len(_rows(path.parent / "rebuilds.jsonl")) == 1
