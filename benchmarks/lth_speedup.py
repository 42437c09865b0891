"""The headline benchmark (v2): IAC-LTH against the 200-epoch full search on the test bed.

Usage (from the project root; one command per search seed, then one summary)::

    python benchmarks/lth_speedup.py run --cohort confirm --seed 0
    python benchmarks/lth_speedup.py run --cohort confirm --seed 1
    python benchmarks/lth_speedup.py run --cohort confirm --seed 2
    python benchmarks/lth_speedup.py summary --cohort confirm

    python benchmarks/lth_speedup.py run --cohort calibrate --seed 0 --arms full
    python benchmarks/lth_speedup.py calibrate            # replay grid and trade-off curve

Cohorts (the test bed, ``phantom_variant=testbed``, sized by :data:`DESIGN`):
``calibrate`` is the design cohort (``phantom_seed`` 101), on which the stop
rule is fixed; ``confirm`` is ``phantom_seed`` 202, never used before the
confirmatory runs.

``run`` executes, one after another and never two at once, the arms of one
search seed (each an MLflow run in ``<work>/<cohort>/mlflow.db``):

- shared by all seeds (made once, by the first ``run`` that needs them, not
  timed): the baseline U-Net trained to a plateau; the baseline continued for
  the retraining budget with identity skips (the same-extra-epochs control);
  ``--random`` random genotypes of the search space, each retrained;
- timed: the full search (``--epochs``, the paper's 200) and IAC-LTH with each
  criterion of ``--criteria`` (``js-paper``: the paper's rule, not
  calibrated); even seeds run the full search first, odd seeds the first
  criterion first; a criterion whose rule, replayed on the seed's full search,
  neither prunes nor stops is recorded as that search instead of run again;
- the control of each criterion: the full search truncated where that LTH
  search stopped (the genotype its trajectory records at that epoch, and the
  search time spent up to it);
- every cell retrained from the baseline's weights with the same budget, once
  per training seed (``Design.retrain_seeds``), and evaluated on the test
  patients; a cell's score is the per-patient mean over its retrainings.

Each finished arm appends one JSON line to
``benchmarks/results/lth_speedup_v2/<cohort>/arms.jsonl`` (per-patient Dice,
timings, genotype); a rerun skips the arms found there, and an interrupted
search or retraining is resumed from the checkpoint of its MLflow run (its time
is then the sum of its per-epoch times, as ``search_seconds`` always is). On a
machine whose ``--work`` store lacks the recorded runs, the remaining
retrainings still run: the baseline is imported from the copy of its weights
kept in ``<cohort>/baseline/`` (or, without one, trained again), and must
reproduce the recorded per-patient test Dice (``rebuilds.jsonl`` records the
check); each searched cell is retrained from the genotype its row records.
``rebase`` makes a baseline trained again that does not reproduce the
recorded one (another CPU) the cohort's, and sets aside the rows retrained
from the lost one.

``summary`` reads those lines and writes ``summary.json``, ``tables.md`` and
``lth_speedup.png`` next to them: speed-up per seed and its geometric mean,
epoch times before and after pruning, the share of the saving that pruning
adds to stopping early, non-inferiority of IAC-LTH against the full search
(one-sided signed-rank test of LTH - full against -``--ni-margin``, with the
Hodges-Lehmann estimate and its interval, ``iac.stats``), the Holm-corrected
comparisons of the full-search cell with its controls, and genotype agreement
with its two yardsticks (full vs full across seeds; random pairs).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import textwrap
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_RESULTS = Path("benchmarks/results/lth_speedup_v2")
RESULTS = DEFAULT_RESULTS
WORK = Path("outputs/lth-v2")
COHORT_SEEDS = {"calibrate": 101, "confirm": 202}
# Largest per-patient test-Dice difference allowed between a baseline brought back into a store that lost
# it and the recorded one (Bench.base_uri). Trained again: CPU training repeats exactly on one machine,
# but not on another CPU (docs/deviations.md), so a retrained baseline that differs is reported, never
# used. Imported from its kept weights: only the evaluation's arithmetic may differ.
REBUILD_TOLERANCE = 1e-6
IMPORT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Design:
    """The benchmark instance of the test bed, frozen (``docs/datasets.md``, "Frozen design")."""

    patients: int = 140  # generated patients; the split gives about 28 train, 8 val, 104 test
    size: int = 48  # in-plane matrix of the generator (fixed field of view; 64-pixel slices after prepare)
    val_fraction: float = 0.06
    test_fraction: float = 0.74  # ~100 test patients for the power of the non-inferiority test
    backbone_preset: str = "small"  # the baseline U-Net: widths (8, 16, 32, 64)
    baseline_epochs: int = 150  # to a plateau (< 0.5 point gained over the last fifth)
    baseline_lr: float = 3e-3
    retrain_epochs: int = 30  # every cell and the continued control, from the baseline's weights
    retrain_lr: float = 1e-3  # a third of the baseline's: the converged backbone is fine-tuned, not retrained
    retrain_seeds: int = 3  # training seeds 0..k-1 per cell; a cell's per-patient Dice is their mean
    cell_channels: int = 8  # the search space's cell width, shrunk for CPUs
    max_slices_per_epoch: int | None = 160  # caps the epoch (and the search's halves) to fit 2 CPU cores
    check_every: int = 10  # architecture steps between two stability checks
    # Learning-rate multiplier of the implanted cells and their projections in every cell retraining
    # (TrainConfig.implant_lr_scale). Added after confirmatory seed 0 (docs/benchmarks.md, "Retraining
    # amendment"); rows written before the field have 1.0.
    implant_lr_scale: float = 1.0


DESIGN = Design()
# Design fields added after rows were written, with the value those rows ran with.
LEGACY_DESIGN = {"implant_lr_scale": 1.0}
# Fields that change only the retrainings: searches and replays of two designs differing in these alone
# are the same runs, so an amended retraining can reuse them (`run --searches-from`).
RETRAIN_FIELDS = ("retrain_epochs", "retrain_lr", "retrain_seeds", "implant_lr_scale")
# Stop-rule settings per criterion: the defaults on the calibration cohort; on the confirmatory
# cohort the choice written by `calibrate` (calibrate/calibration.json) replaces them.
CRITERIA: dict[str, dict[str, Any]] = {
    "js": {"criterion": "js"},
    "sequential": {"criterion": "sequential"},
    # The paper's rule as published (the StabilityConfig defaults), never calibrated: what a user
    # gets without calibration. Added before any confirmatory run (docs/benchmarks.md).
    "js-paper": {"criterion": "js"},
}


def results_dir(cohort: str) -> Path:
    return RESULTS / cohort


def stamped(cohort: str, fingerprint: str, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with the bookkeeping every recorded arm carries (cohort, design, data, time; see :func:`_payload`)."""
    return {"cohort": cohort, "design": asdict(DESIGN), "data_fingerprint": fingerprint,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **row}


def read_rebuilds(cohort: str) -> list[dict[str, Any]]:
    """The checks of baselines brought back into a store that lost them (``rebuilds.jsonl``)."""
    path = results_dir(cohort) / "rebuilds.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    for r in rows:
        r.setdefault("how", "retrain")
    return rows


def read_arms(cohort: str, results: Path | None = None) -> list[dict[str, Any]]:
    """The finished arms of a cohort (one dict per JSON line), each design completed by :data:`LEGACY_DESIGN`."""
    path = (results or RESULTS) / cohort / "arms.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    for r in rows:
        if "design" in r:
            r["design"] = {**LEGACY_DESIGN, **r["design"]}
    return rows


def arm_key(row: dict[str, Any]) -> str:
    """``arm``, ``arm@seed`` for per-seed arms, ``.../t<k>`` for a retraining with training seed k > 0."""
    key = f"{row['arm']}@{row['seed']}" if row.get("seed") is not None else row["arm"]
    return key + (f"/t{row['train_seed']}" if row.get("train_seed") else "")


def merge_train_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per arm: a cell retrained with several training seeds becomes their mean.

    The merged row's ``patient_dice`` is the per-patient mean over the
    training seeds (the cell's score in every statistic), ``test_dice`` its
    patient mean, and ``train_seed_dice`` the test Dice of each retraining.
    """
    import numpy as np

    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["arm"], r.get("seed")), []).append(r)
    merged = []
    for rs in groups.values():
        rs = sorted(rs, key=lambda r: r.get("train_seed") or 0)
        row = {k: v for k, v in rs[0].items() if k != "train_seed"}
        if "patient_dice" in row:
            patients = sorted(row["patient_dice"])
            mean = np.mean([[r["patient_dice"][p] for p in patients] for r in rs], axis=0)
            row["patient_dice"] = {p: float(v) for p, v in zip(patients, mean)}
            row["test_dice"] = float(mean.mean())
            row["train_seed_dice"] = [r["test_dice"] for r in rs]
            row["train_seeds"] = [r.get("train_seed") or 0 for r in rs]
            row["seconds"] = float(np.mean([r.get("seconds", float("nan")) for r in rs]))
        merged.append(row)
    return merged


class Bench:
    """One cohort's benchmark state: the MLflow store, the prepared data, the finished arms."""

    def __init__(self, cohort: str, threads: int, device: str, work: Path, epochs: int = 200) -> None:
        import torch

        self.cohort, self.device, self.epochs = cohort, device, epochs
        if threads:
            torch.set_num_threads(threads)
        self.work = work / cohort
        self.work.mkdir(parents=True, exist_ok=True)
        results_dir(cohort).mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{(self.work / 'mlflow.db').resolve()}"
        import mlflow

        mlflow.set_experiment(f"lth-speedup-v2-{cohort}")
        from iac.config import PrepareConfig
        from iac.data.prepare import prepare_dataset

        d = DESIGN
        prep = prepare_dataset(
            PrepareConfig(
                out=self.work / "data", phantom_variant="testbed", phantom_seed=COHORT_SEEDS[cohort],
                phantom_patients=d.patients, phantom_size=d.size, val_fraction=d.val_fraction,
                test_fraction=d.test_fraction, workers=1,
            ),
            progress=False,
        )
        self.data = Path(prep.root)
        self.fingerprint = prep.fingerprint
        self.done = {arm_key(r): r for r in read_arms(cohort)}
        self._rebuilt: str | None = None  # the baseline brought back where the store lost it (base_uri)
        self.sources: list[Path] = []  # results folders whose searches this one reuses (--searches-from)

    # -- bookkeeping -------------------------------------------------------------------------------

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        row = stamped(self.cohort, self.fingerprint, row)
        with (results_dir(self.cohort) / "arms.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        self.done[arm_key(row)] = row
        print(f"[{row['finished']}] {arm_key(row)}: " + ", ".join(
            f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}"
            for k in ("search_seconds", "epochs_run", "test_dice", "seconds") if k in row and row[k] is not None
        ), flush=True)
        return row

    def unfinished_run(self, step: str, arm: str, seed: int | None, train_seed: int | None = None) -> str | None:
        """The newest unfinished MLflow run of this arm (to resume from its checkpoint), if any."""
        import mlflow

        filt = f"tags.step = '{step}' and tags.bench_arm = '{arm}' and attributes.status != 'FINISHED'"
        if RESULTS != DEFAULT_RESULTS:  # another results folder in the same store: its own runs only
            filt += f" and tags.bench_results = '{RESULTS.as_posix()}'"
        if seed is not None:
            filt += f" and tags.bench_seed = '{seed}'"
        if train_seed is not None:
            filt += f" and tags.bench_train_seed = '{train_seed}'"
        runs = mlflow.search_runs(search_all_experiments=True, filter_string=filt,
                                  order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
        return runs[0].info.run_id if runs else None

    # -- arms --------------------------------------------------------------------------------------

    def _baseline_config(self):
        from iac.config import TrainConfig

        d = DESIGN
        return TrainConfig(data=self.data, epochs=d.baseline_epochs, lr=d.baseline_lr, seed=0, device=self.device,
                           max_slices_per_epoch=d.max_slices_per_epoch)

    def baseline(self) -> dict[str, Any]:
        """The plateaued baseline U-Net (shared by every seed)."""
        if "baseline" in self.done:
            return self.done["baseline"]
        from iac.commands.retrain import run_retrain

        cfg = self._baseline_config()
        start = time.perf_counter()
        out = run_retrain(cfg, {"bench_arm": "baseline", "bench_results": RESULTS.as_posix()},
                          resume_run=self.unfinished_run("retrain", "baseline", None))
        row = {"arm": "baseline", "seed": None, "model_uri": out["model_uri"], "run_id": out["run_id"],
               "seconds": time.perf_counter() - start, **_plateau(out["run_id"])}
        row.update(self.evaluate(out["model_uri"]))
        return self.record(row)

    # -- a store that lost the recorded runs ------------------------------------------------------------

    def in_store(self, run_id: str | None) -> bool:
        """Whether the run ``run_id`` is in this work folder's MLflow store."""
        import mlflow
        from mlflow.exceptions import MlflowException

        if not run_id:
            return False
        try:
            mlflow.get_run(run_id)
        except MlflowException:
            return False
        return True

    def base_uri(self) -> str:
        """The baseline's model URI in this store.

        Where the store no longer holds the recorded baseline (another machine,
        or ``--work`` deleted), the baseline is brought back before anything is
        retrained from it: imported from the copy of its weights kept in the
        results folder (``baseline/``, written whenever the store holds it), or,
        without one, trained again with its recorded configuration. Either must
        reproduce the recorded per-patient test Dice (:data:`IMPORT_TOLERANCE`,
        :data:`REBUILD_TOLERANCE`); each check is appended to ``rebuilds.jsonl``.
        """
        row = self.baseline()
        if self.in_store(row["run_id"]):
            self.keep_baseline(row)
            return row["model_uri"]
        if self._rebuilt is None:
            self._rebuilt = self._restore_baseline(row)
        return self._rebuilt

    def kept_baseline(self, run_id: str) -> Path | None:
        """The folder holding a kept copy of baseline ``run_id`` (this results folder or a ``--searches-from`` one)."""
        for folder in (RESULTS, *self.sources):
            meta = folder / self.cohort / "baseline" / "baseline.json"
            if meta.is_file() and json.loads(meta.read_text()).get("run_id") == run_id:
                return meta.parent
        return None

    def keep_baseline(self, row: dict[str, Any]) -> None:
        """Copy the baseline's weights, config and version tags into ``<results>/<cohort>/baseline/``."""
        if self.kept_baseline(row["run_id"]) is not None:
            return
        from iac import registry

        dest = results_dir(self.cohort) / "baseline"
        tmp = dest.with_name("baseline.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        weights, config = registry.download_model_files(row["model_uri"], tmp / "download")
        shutil.move(str(weights), tmp / "model.safetensors")
        shutil.rmtree(tmp / "download")
        (tmp / "model_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        meta = {"run_id": row["run_id"], "model_uri": row["model_uri"], "test_dice": row.get("test_dice"),
                "sha256": hashlib.sha256((tmp / "model.safetensors").read_bytes()).hexdigest(),
                "tags": registry.resolve(row["model_uri"]).tags}
        (tmp / "baseline.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)

    def _import_baseline(self, row: dict[str, Any], kept: Path) -> tuple[str, str]:
        """Register the kept copy of the baseline in this store; returns (model URI, run id)."""
        import mlflow
        from safetensors.torch import load_file

        from iac import registry

        meta = json.loads((kept / "baseline.json").read_text())
        weights = kept / "model.safetensors"
        if hashlib.sha256(weights.read_bytes()).hexdigest() != meta["sha256"]:
            raise SystemExit(f"{weights}: its SHA-256 differs from the one {kept / 'baseline.json'} records")
        config = json.loads((kept / "model_config.json").read_text())
        name = meta["model_uri"].split("/")[1]
        tags = {"step": "import", "bench_arm": "baseline-import", "bench_rebuild_of": row["run_id"],
                "bench_results": RESULTS.as_posix()}
        with mlflow.start_run(run_name="baseline-import", tags=tags) as run:
            mv = registry.register_unet(run.info.run_id, load_file(str(weights)), config, name, meta.get("tags", {}))
        return mv.uri, run.info.run_id

    def _restore_baseline(self, row: dict[str, Any]) -> str:
        import mlflow

        from iac.commands.retrain import run_retrain

        if row.get("data_fingerprint") != self.fingerprint:
            raise SystemExit(f"the recorded baseline ({row['run_id']}) ran on other data than {self.data} "
                             "(fingerprint differs): it cannot be brought back here")
        filt = f"tags.bench_rebuild_of = '{row['run_id']}' and attributes.status = 'FINISHED'"
        for done in mlflow.search_runs(search_all_experiments=True, filter_string=filt, output_format="list"):
            if done.data.tags.get("bench_model_uri"):
                return done.data.tags["bench_model_uri"]
        kept = self.kept_baseline(row["run_id"])
        failed = [e for e in read_rebuilds(self.cohort) if e["of_run_id"] == row["run_id"] and not e["matches"]
                  and e["store"] == os.environ["MLFLOW_TRACKING_URI"] and e["how"] == ("import" if kept else "retrain")]
        if failed:
            raise SystemExit(f"the baseline brought back into this store ({failed[-1]['how']}, run {failed[-1]['run_id']}) "
                             "does not reproduce the recorded one; see rebuilds.jsonl, and `rebase` to retrain the "
                             "cohort's arms from it")
        start = time.perf_counter()
        if kept is not None:
            print(f"the store lacks the recorded baseline {row['run_id']}: importing {kept}", flush=True)
            uri, run_id = self._import_baseline(row, kept)
            how, tolerance = "import", IMPORT_TOLERANCE
        else:
            print(f"the store lacks the recorded baseline {row['run_id']}: training it again", flush=True)
            tags = {"bench_arm": "baseline-rebuild", "bench_rebuild_of": row["run_id"], "bench_results": RESULTS.as_posix()}
            out = run_retrain(self._baseline_config(), tags,
                              resume_run=self.unfinished_run("retrain", "baseline-rebuild", None))
            uri, run_id = out["model_uri"], out["run_id"]
            how, tolerance = "retrain", REBUILD_TOLERANCE
        ev = self.evaluate(uri)
        patients = sorted(row["patient_dice"])
        if sorted(ev["patient_dice"]) != patients:
            raise SystemExit(f"the baseline brought back ({how}) was evaluated on other test patients than the recorded one")
        diff = max(abs(ev["patient_dice"][p] - row["patient_dice"][p]) for p in patients)
        entry = {"arm": "baseline", "how": how, "of_run_id": row["run_id"], "run_id": run_id, "model_uri": uri,
                 "store": os.environ["MLFLOW_TRACKING_URI"], "seconds": time.perf_counter() - start,
                 "test_dice": ev["test_dice"], "recorded_test_dice": row["test_dice"], "patient_dice": ev["patient_dice"],
                 "max_patient_dice_difference": diff, "tolerance": tolerance, "matches": diff <= tolerance,
                 "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with (results_dir(self.cohort) / "rebuilds.jsonl").open("a") as f:
            f.write(json.dumps(entry) + "\n")
        if not entry["matches"]:
            raise SystemExit(f"the baseline brought back ({how}) does not reproduce the recorded one (per-patient test "
                             f"Dice differ by up to {diff:.3g}, more than {tolerance:g}): the cohort's remaining arms "
                             "cannot be retrained from it; see rebuilds.jsonl, and `rebase` to retrain them all from it")
        mlflow.MlflowClient().set_tag(run_id, "bench_model_uri", uri)
        print(f"the baseline brought back ({how}) reproduces the recorded test Dice ({ev['test_dice']:.4f}; "
              f"largest per-patient difference {diff:.2g})", flush=True)
        return uri

    def cell(self, row: dict[str, Any]) -> str:
        """A search arm's cell: its registered URI, or, where the store lost the search, its recorded genotype."""
        if self.in_store(row["run_id"]):
            return row["cell_uri"]
        from iac.nas.genotype import Genotype

        path = self.work / f"{row['arm']}-seed{row['seed']}-genotype.json"
        path.write_text(Genotype.from_dict(row["genotype"]).to_json())
        return str(path)

    def retrain(self, arm: str, seed: int | None, genotype: str | None, extra: dict[str, Any]) -> list[dict[str, Any]]:
        """Retrain the baseline with ``genotype`` (a cell URI or file; None: identity skips) and evaluate it.

        One retraining per training seed ``0 .. retrain_seeds - 1`` (same budget,
        same baseline weights); the summary averages their per-patient Dice.
        """
        from iac.commands.retrain import run_retrain
        from iac.config import TrainConfig

        d = DESIGN
        rows = []
        for train_seed in range(d.retrain_seeds):
            key = arm_key({"arm": arm, "seed": seed, "train_seed": train_seed})
            if key in self.done:
                rows.append(self.done[key])
                continue
            kwargs = {"skip": "iac", "genotype": genotype, "implant_lr_scale": d.implant_lr_scale} if genotype else {}
            cfg = TrainConfig(data=self.data, epochs=d.retrain_epochs, lr=d.retrain_lr, seed=train_seed,
                              device=self.device, pretrained=self.base_uri(),
                              max_slices_per_epoch=d.max_slices_per_epoch, **kwargs)
            tags = {"bench_arm": arm, "bench_train_seed": str(train_seed), "bench_results": RESULTS.as_posix(),
                    **({"bench_seed": str(seed)} if seed is not None else {})}
            start = time.perf_counter()
            out = run_retrain(cfg, tags, resume_run=self.unfinished_run("retrain", arm, seed, train_seed))
            row = {"arm": arm, "seed": seed, "train_seed": train_seed, "model_uri": out["model_uri"],
                   "run_id": out["run_id"], "seconds": time.perf_counter() - start, **extra, **_plateau(out["run_id"])}
            row.update(self.evaluate(out["model_uri"]))
            rows.append(self.record(row))
        return rows

    def copy_arm(self, source: str, arm: str, seed: int | None, extra: dict[str, Any]) -> list[dict[str, Any]]:
        """Record ``source``'s retrainings again under ``arm``: the same genotype, retrained alike.

        Retraining is deterministic on the CPU for a given genotype, baseline and
        training seed, so an arm whose cell is exactly another arm's reuses its
        rows (``copied_from`` says so) rather than spending the retraining twice.
        """
        rows = []
        for train_seed in range(DESIGN.retrain_seeds):
            key = arm_key({"arm": arm, "seed": seed, "train_seed": train_seed})
            if key in self.done:
                rows.append(self.done[key])
                continue
            src = self.done[arm_key({"arm": source, "seed": seed, "train_seed": train_seed})]
            keep = _payload(src)
            rows.append(self.record({**keep, **extra, "arm": arm, "copied_from": source}))
        return rows

    def replay_on_full(self, criterion: str, seed: int) -> dict[str, Any]:
        """Replay ``criterion``'s stop rule on this seed's full search (recorded as ``replay-<criterion>``)."""
        key = f"replay-{criterion}@{seed}"
        if key in self.done:
            return self.done[key]
        import mlflow

        from iac.config import StabilityConfig
        from iac.nas.agreement import agreement
        from iac.nas.genotype import Genotype
        from iac.nas.replay import replay
        from iac.nas.trajectory import load_trajectory

        full = self.done[f"full@{seed}"]
        traj = load_trajectory(mlflow.artifacts.download_artifacts(run_id=full["run_id"], artifact_path="trajectory.json"))
        stab = StabilityConfig(**CRITERIA[criterion])
        res = replay(traj, cfg=stab)
        a = agreement(Genotype.from_dict(full["genotype"]), res.genotype)
        return self.record({
            "arm": f"replay-{criterion}", "seed": seed, "kind": "replay", "stability": asdict(stab),
            "stopped": res.stopped, "epochs_run": res.stop_epoch + 1 if res.stopped else len(traj["epochs"]),
            "pruning_events": len(res.events), "genotype": res.genotype.to_dict(), "shared": a.shared, "total": a.total,
        })

    def evaluate(self, model_uri: str) -> dict[str, Any]:
        """Test-patient Dice of a registered U-Net: patient-mean foreground, per class and per patient."""
        import mlflow

        from iac.commands.evaluate import run_evaluate
        from iac.config import EvalConfig
        from iac.eval.per_case import load_per_case

        ev = run_evaluate(EvalConfig(model=model_uri, data=self.data, split="test", device=self.device))
        csv = mlflow.artifacts.download_artifacts(run_id=ev["run_id"], artifact_path="per_case.csv")
        mlflow.artifacts.download_artifacts(run_id=ev["run_id"], artifact_path="per_case.json",
                                            dst_path=str(Path(csv).parent))
        df, _ = load_per_case(csv)
        fg = df[df["label"] == "mean_fg"].groupby("patient")["dice"].mean()
        per_class = {f"test_dice_{lab}": float(g.groupby("patient")["dice"].mean().mean())
                     for lab, g in df[df["label"] != "mean_fg"].groupby("label")}
        return {"eval_run_id": ev["run_id"], "test_dice": float(fg.mean()),
                "patient_dice": {str(p): float(v) for p, v in fg.items()}, **per_class}

    def search(self, method: str, seed: int, criterion: str | None) -> dict[str, Any]:
        """One timed search arm (``full`` or ``lth-<criterion>``)."""
        arm = "full" if method == "full" else f"lth-{criterion}"
        if f"{arm}@{seed}" in self.done:
            return self.done[f"{arm}@{seed}"]
        import mlflow

        from iac.commands.search import run_search_step
        from iac.config import SearchConfig, StabilityConfig

        d = DESIGN
        cfg = SearchConfig(data=self.data, epochs=self.epochs, pretrained=self.base_uri(), seed=seed,
                           cell_channels=d.cell_channels, device=self.device, check_every=d.check_every,
                           max_slices_per_epoch=d.max_slices_per_epoch)
        stab = StabilityConfig(**CRITERIA[criterion]) if criterion else None
        tags = {"bench_arm": arm, "bench_seed": str(seed), "bench_results": RESULTS.as_posix()}
        out = run_search_step(cfg, method, stab, tags, resume_run=self.unfinished_run(f"search_{method}", arm, seed))
        metrics = mlflow.get_run(out["run_id"]).data.metrics
        traj = json.loads(Path(mlflow.artifacts.download_artifacts(
            run_id=out["run_id"], artifact_path="trajectory.json")).read_text())
        row = {
            "arm": arm, "seed": seed, "kind": "search", "run_id": out["run_id"], "cell_uri": out["cell_uri"],
            "search_seconds": out["search_seconds"], "epochs_run": out["epochs_run"], "genotype": traj["final_genotype"],
            "stability": asdict(stab) if stab else None,
            "epoch_seconds": [e["epoch_seconds"] for e in traj["epochs"]],
            "cum_seconds": [e["cum_seconds"] for e in traj["epochs"]],
            "epoch_genotypes": [e["genotype"] for e in traj["epochs"]] if method == "full" else None,
            "mean_epoch_seconds_before": metrics.get("mean_epoch_seconds_before_pruning", metrics.get("mean_epoch_seconds")),
            "mean_epoch_seconds_after": metrics.get("mean_epoch_seconds_after_pruning"),
            "first_pruning_epoch": _first_pruning_epoch(traj),
        }
        return self.record(row)


def _payload(row: dict[str, Any]) -> dict[str, Any]:
    """An arm's row without the bookkeeping ``Bench.record`` adds (for recording it again under another arm)."""
    return {k: v for k, v in row.items() if k not in ("cohort", "design", "data_fingerprint", "finished")}


def _plateau(run_id: str) -> dict[str, Any]:
    """Best validation Dice over the run, at 4/5 of its epochs, and the gain between them (points)."""
    import mlflow
    import numpy as np

    hist = mlflow.MlflowClient().get_metric_history(run_id, "val_dice")
    vals = [m.value for m in sorted(hist, key=lambda m: m.step)]
    if not vals:
        return {}
    best = np.fmax.accumulate(np.nan_to_num(vals, nan=0.0))
    cut = max(round(0.8 * len(best)) - 1, 0)
    return {"val_best": float(best[-1]), "plateau_gain_points": float(100 * (best[-1] - best[cut]))}


def _first_pruning_epoch(traj: dict[str, Any]) -> int | None:
    epochs = [e.get("epoch") for e in traj.get("events", []) if e.get("epoch") is not None]
    return min(epochs) if epochs else None


def reuse_searches(bench: Bench, source: Path, seed: int) -> None:
    """Record ``source``'s baseline and this seed's searches and replays under the current design.

    Only allowed when the two designs differ in :data:`RETRAIN_FIELDS` alone:
    then the baseline, the searches and the replays are the same runs (same
    store, same prepared cohort), and only the retrainings are done again.
    """
    if source.resolve() == RESULTS.resolve():
        raise SystemExit(f"--searches-from {source}: that is the results folder being written (--results)")
    rows = read_arms(bench.cohort, source)
    if not rows:
        raise SystemExit(f"--searches-from {source}: no finished arms in {source / bench.cohort / 'arms.jsonl'}")
    own = asdict(DESIGN)
    wanted = [r for r in rows if r["arm"] == "baseline"
              or (r.get("seed") == seed and r.get("kind") in ("search", "replay"))]
    for r in wanted:
        differ = sorted(k for k in set(own) | set(r["design"])
                        if k not in RETRAIN_FIELDS and own.get(k) != r["design"].get(k))
        if differ:
            raise SystemExit(f"--searches-from {source}: {arm_key(r)} ran under another design "
                             f"({', '.join(differ)} differ); only {', '.join(RETRAIN_FIELDS)} may")
        if r["data_fingerprint"] != bench.fingerprint:
            raise SystemExit(f"--searches-from {source}: {arm_key(r)} ran on other data (fingerprint differs)")
    if not any(r["arm"] == "full" and r.get("seed") == seed for r in wanted):
        raise SystemExit(f"--searches-from {source}: seed {seed}'s full search is not finished there")
    for r in wanted:
        if arm_key(r) not in bench.done:
            bench.record({**_payload(r), "searches_from": source.as_posix()})


def run(args: argparse.Namespace) -> None:
    """The arms of one search seed, one after another."""
    import numpy as np

    from iac.config import SearchConfig
    from iac.nas.genotype import Genotype, SearchSpace, random_genotype

    if args.cohort == "confirm":  # an amended retraining keeps the calibration of the searches it reuses
        calib = (args.searches_from or RESULTS) / "calibrate" / "calibration.json"
        if not calib.is_file():
            raise SystemExit(f"the confirmatory cohort runs with the calibrated stop rule; {calib} is missing "
                             "(run the calibration cohort's full search and `calibrate` first)")
        chosen = json.loads(calib.read_text())["chosen"]
        for criterion, settings in chosen.items():
            CRITERIA[criterion] = {"criterion": criterion, **settings}
    bench = Bench(args.cohort, args.threads, args.device, args.work, args.epochs)
    if args.searches_from is not None:
        bench.sources.append(args.searches_from)
        reuse_searches(bench, args.searches_from, args.seed)
    wanted = args.arms.split(",")
    criteria = [c for c in args.criteria.split(",") if c]
    bench.baseline()
    if "shared" in wanted:
        bench.retrain("continued", None, None, {"kind": "control-continued"})
        space = SearchSpace.from_config(SearchConfig(cell_channels=DESIGN.cell_channels))
        for k in range(args.random):
            g = random_genotype(space, np.random.default_rng(1000 + k))
            path = bench.work / f"random-{k}-genotype.json"
            path.write_text(g.to_json())
            bench.retrain(f"random-{k}", None, str(path), {"kind": "random", "genotype": g.to_dict()})
    searches = ([("full", None)] if "full" in wanted else []) + (
        [("lth", c) for c in criteria] if "lth" in wanted else [])
    if args.seed % 2:  # odd seeds: the first IAC-LTH criterion before the full search
        searches = searches[1:2] + searches[:1] + searches[2:] if searches and searches[0][0] == "full" else searches
    for method, criterion in searches:
        full = bench.done.get(f"full@{args.seed}")
        if method == "lth" and full and f"lth-{criterion}@{args.seed}" not in bench.done:
            # A rule that, replayed on this seed's full search, neither prunes nor stops would repeat
            # the full search exactly (deterministic on the CPU): recorded as such, not run again.
            rep = bench.replay_on_full(criterion, args.seed)
            if not rep["stopped"] and rep["pruning_events"] == 0:
                keep = _payload(full)
                bench.record({**keep, "arm": f"lth-{criterion}", "identical_to_full": True,
                              "stability": rep["stability"], "epoch_genotypes": None,
                              "mean_epoch_seconds_after": None, "first_pruning_epoch": None})
                continue
        bench.search(method, args.seed, criterion)
    if "retrain" not in wanted:
        return
    full = bench.done.get(f"full@{args.seed}")
    if full:
        bench.retrain("full-cell", args.seed, bench.cell(full), {"kind": "cell", "of": "full"})
    for criterion in criteria:
        lth = bench.done.get(f"lth-{criterion}@{args.seed}")
        if not lth:
            continue
        if lth.get("identical_to_full"):
            bench.copy_arm("full-cell", f"lth-{criterion}-cell", args.seed, {"kind": "cell", "of": f"lth-{criterion}"})
        else:
            bench.retrain(f"lth-{criterion}-cell", args.seed, bench.cell(lth), {"kind": "cell", "of": f"lth-{criterion}"})
        if full:
            stop = lth["epochs_run"]  # the control: the full search's genotype after as many epochs
            g = Genotype.from_dict(full["epoch_genotypes"][stop - 1])
            extra = {"kind": "control-truncated", "genotype": g.to_dict(), "epochs_run": stop,
                     "search_seconds": full["cum_seconds"][stop - 1]}
            if g.to_dict() == full["genotype"]:  # stopped where the full search had already settled
                bench.copy_arm("full-cell", f"control-{criterion}", args.seed, extra)
                continue
            path = bench.work / f"control-{criterion}-seed{args.seed}-genotype.json"
            path.write_text(g.to_json())
            bench.retrain(f"control-{criterion}", args.seed, str(path), extra)


def rebase(args: argparse.Namespace) -> None:
    """Make the baseline trained again in this store the cohort's baseline; set aside what was retrained from the lost one.

    For a store that lost the recorded baseline where training it again did
    not reproduce it (another CPU): every row retrained from the lost baseline
    (the baseline, the continued control, the random cells, the cells and
    controls; the rows with a ``model_uri``) moves to
    ``arms-baseline-<run>.jsonl``, and the retrained baseline, evaluated again,
    becomes the ``baseline`` row (``replaces``: the lost run). The searches and
    replays stay: they ran on the lost baseline, which their rows keep saying
    (``searches_ran_on`` on the new baseline row). A following ``run``
    retrains every cell from the new baseline.
    """
    bench = Bench(args.cohort, args.threads, args.device, args.work)
    old = bench.done.get("baseline")
    if old is None:
        raise SystemExit(f"{results_dir(args.cohort) / 'arms.jsonl'}: no baseline recorded; nothing to rebase")
    if bench.in_store(old["run_id"]):
        raise SystemExit(f"the store {os.environ['MLFLOW_TRACKING_URI']} holds the recorded baseline {old['run_id']}: "
                         "nothing to rebase")
    store = os.environ["MLFLOW_TRACKING_URI"]
    tried = [e for e in read_rebuilds(args.cohort) if e["of_run_id"] == old["run_id"] and e["store"] == store
             and e["how"] == "retrain" and bench.in_store(e["run_id"])]
    if not tried:
        raise SystemExit(f"no baseline was trained again in {store} for the recorded {old['run_id']}: run `run` first "
                         "(it trains the baseline again and checks it)")
    new = tried[-1]
    row = {"arm": "baseline", "seed": None, "model_uri": new["model_uri"], "run_id": new["run_id"],
           "seconds": new["seconds"], "replaces": old["run_id"], "searches_ran_on": old["run_id"], **_plateau(new["run_id"])}
    row.update(bench.evaluate(new["model_uri"]))
    row = stamped(bench.cohort, bench.fingerprint, row)
    path = results_dir(args.cohort) / "arms.jsonl"
    rows = read_arms(args.cohort)
    moved = [r for r in rows if "model_uri" in r]
    kept = [r for r in rows if "model_uri" not in r]
    aside = path.with_name(f"arms-baseline-{old['run_id'][:8]}.jsonl")
    with aside.open("a") as f:
        f.writelines(json.dumps(r) + "\n" for r in moved)
    tmp = path.with_suffix(".partial")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in [*kept, row]))
    tmp.replace(path)
    bench.keep_baseline(row)
    print(f"rebased {args.cohort}: baseline {new['run_id']} (test Dice {row['test_dice']:.4f}) replaces "
          f"{old['run_id']}; {len(moved)} retrained rows set aside in {aside}")


# -- calibration -------------------------------------------------------------------------------------

# The grids replayed on the calibration cohort's full search, per criterion.
# JS: the first grid (1e-5 .. 1e-3) lay wholly above the divergence between two checks on the
# test bed (about 1e-7 .. 1e-6 at a check every 10 architecture steps), so every setting pruned at
# its first chance; 1e-8 .. 3e-6 were added after the calibration full search, before any
# confirmatory run (docs/benchmarks.md).
JS_TAUS = (1e-8, 3e-8, 1e-7, 3e-7, 1e-6, 3e-6, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3)
JS_PATIENCES = (1, 2, 3)
SEQ_ERRORS = (0.05, 0.1, 0.2, 0.3)
SEQ_EFFECTS = (40.0, 80.0, 160.0)
# The rule, fixed before any confirmatory run (docs/benchmarks.md, "Headline benchmark v2"):
# the earliest-stopping setting whose replayed genotype shares at least AGREE_MIN of the full
# search's final choices; if none does, the most shared choices, then the earliest stop.
AGREE_MIN = 7
PAPER_DEFAULTS = {"js": {"tau": 1e-4, "patience": 2}, "sequential": {"seq_error": 0.2, "seq_effect": 80.0}}


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The calibration rule over one criterion's replayed settings (see :data:`AGREE_MIN`).

    Ties (same stop epoch and agreement) go to the paper's default when it is among them,
    otherwise to the first setting of the grid.
    """
    if not rows:
        raise ValueError("no replayed settings to choose from")
    passing = [r for r in rows if r["shared"] >= AGREE_MIN]
    pool = passing or [r for r in rows if r["shared"] == max(x["shared"] for x in rows)]
    best = min(r["epochs_run"] for r in pool)
    tied = [r for r in pool if r["epochs_run"] == best]
    default = [r for r in tied if all(r["settings"].get(k) == v for k, v in PAPER_DEFAULTS[r["criterion"]].items())]
    return (default or tied)[0]


def default_criterion(chosen: dict[str, dict[str, Any]]) -> str:
    """The default criterion among the chosen settings.

    The one whose chosen setting shares at least ``AGREE_MIN`` choices and stops
    earlier; if neither does, the one sharing more, then the earlier; the
    paper's JS on a tie. (First written as "the earlier stop", which could make
    a criterion that does not find the full search's cell the default.)
    """
    def key(c: str) -> tuple:
        r = chosen[c]
        agrees = r["shared"] >= AGREE_MIN
        return (not agrees, 0 if agrees else -r["shared"], r["epochs_run"], c != "js")

    return min(chosen, key=key)


def calibrate(args: argparse.Namespace) -> None:
    """Replay each criterion's grid on the calibration full search; choose by the rule; write the curve."""
    import mlflow

    from iac.config import StabilityConfig
    from iac.nas.agreement import agreement
    from iac.nas.genotype import Genotype
    from iac.nas.replay import ReplayDiverged, replay
    from iac.nas.trajectory import final_genotype, load_trajectory

    rows = {arm_key(r): r for r in read_arms("calibrate")}
    full = rows.get(f"full@{args.seed}")
    if full is None:
        raise SystemExit(f"no finished full search of seed {args.seed} on the calibration cohort; run "
                         f"`python benchmarks/lth_speedup.py run --cohort calibrate --seed {args.seed} --arms full` first")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{(args.work / 'calibrate' / 'mlflow.db').resolve()}"
    traj = load_trajectory(mlflow.artifacts.download_artifacts(run_id=full["run_id"], artifact_path="trajectory.json"))
    reference = final_genotype(traj)
    total = len(traj["epochs"])
    grid = [("js", {"tau": t, "patience": p}) for t in JS_TAUS for p in JS_PATIENCES]
    grid += [("sequential", {"seq_error": e, "seq_effect": f}) for e in SEQ_ERRORS for f in SEQ_EFFECTS]
    out = []
    for criterion, settings in grid:
        cfg = StabilityConfig(criterion=criterion, **settings)
        try:
            res = replay(traj, cfg=cfg)
        except ReplayDiverged:
            continue
        run = res.stop_epoch + 1 if res.stopped else total
        a = agreement(reference, res.genotype)
        out.append({"criterion": criterion, "settings": settings, "stopped": res.stopped, "epochs_run": run,
                    "epoch_ratio": total / run, "shared": a.shared, "total": a.total,
                    "genotype": res.genotype.to_dict()})
    chosen = {c: choose([r for r in out if r["criterion"] == c]) for c in PAPER_DEFAULTS}
    default = default_criterion(chosen)
    result = {"seed": args.seed, "full_run_id": full["run_id"], "epochs_total": total, "agree_min": AGREE_MIN,
              "grid": out, "chosen": {c: r["settings"] for c, r in chosen.items()}, "default_criterion": default}
    folder = results_dir("calibrate")
    (folder / "calibration.json").write_text(json.dumps(result, indent=1))
    lines = ["| criterion | settings | stops | epochs run | epoch ratio | shared with the full search | chosen |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in out:
        mark = "**yes**" if r is chosen[r["criterion"]] else ""
        lines.append(f"| {r['criterion']} | {', '.join(f'{k}={v:g}' for k, v in r['settings'].items())} | "
                     f"{'yes' if r['stopped'] else 'no'} | {r['epochs_run']} | {r['epoch_ratio']:.2f} | "
                     f"{r['shared']}/{r['total']} | {mark} |")
    lines.append(f"\nDefault criterion: {default}.")
    (folder / "calibration.md").write_text("\n".join(lines) + "\n")
    genotypes = [Genotype.from_dict(e["genotype"]) for e in traj["epochs"]]
    truncated = [agreement(reference, g).shared for g in genotypes]
    result["truncated_shared"] = truncated
    (folder / "calibration.json").write_text(json.dumps(result, indent=1))
    _tradeoff_figure(out, chosen, truncated).savefig(folder / "calibration.png", dpi=120)
    print("\n".join(lines))


def _tradeoff_figure(rows: list[dict[str, Any]], chosen: dict[str, dict[str, Any]],
                     truncated: list[int] | None = None):
    """Epoch saving against agreement with the full search, one point per replayed setting.

    ``truncated[e - 1]``: choices the full search's own genotype after ``e``
    epochs shares with its final one (the truncated control at every stop).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    if truncated:
        total = len(truncated)
        first = max(total // 10, 1)  # savings up to 10x
        ax.step([total / e for e in range(first, total + 1)], truncated[first - 1:], where="post", color="gray",
                lw=1, label="the full search stopped there (no pruning)")
    for marker, criterion in zip("os", PAPER_DEFAULTS):
        pts = [r for r in rows if r["criterion"] == criterion]
        ax.scatter([r["epoch_ratio"] for r in pts], [r["shared"] for r in pts], marker=marker, alpha=0.6,
                   label=criterion)
        c = chosen.get(criterion)
        if c:
            ax.scatter([c["epoch_ratio"]], [c["shared"]], marker=marker, s=160, facecolors="none", edgecolors="k")
    ax.axhline(AGREE_MIN, color="gray", ls="--", lw=0.8, label=f"rule: at least {AGREE_MIN} shared")
    ax.set_xlabel("epoch saving (200 / epochs run), replayed")
    ax.set_ylabel("choices shared with the full search's final cell")
    ax.set_title("calibration cohort: speed against agreement")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# -- summary -----------------------------------------------------------------------------------------


def _patients(row: dict[str, Any], patients: list[str]):
    import numpy as np

    return np.array([row["patient_dice"][p] for p in patients], dtype=float)


def _paired(d, margin: float, alternative: str) -> dict[str, Any]:
    """One-sided 5 % signed-rank test of ``d`` against ``margin``, with the Hodges-Lehmann estimate.

    The interval is the exact 90 % Walsh-average interval: its lower end is
    the bound the one-sided test at 5 % compares with the margin.
    """
    from iac.stats.effect import hodges_lehmann, hodges_lehmann_ci
    from iac.stats.tests import noninferiority_test, signed_rank_test

    hl = hodges_lehmann(d)
    lo, hi, _ = hodges_lehmann_ci(d, level=0.90)
    if alternative == "noninferior":  # H0: pseudo-median(d) <= -margin
        p = noninferiority_test(d, margin).pvalue
    else:  # superiority by at least margin, H0: pseudo-median(d) <= +margin
        p = signed_rank_test(d - margin, alternative="greater").pvalue
    return {"n": int(d.size), "mean_points": 100 * float(d.mean()), "sd_points": 100 * float(d.std(ddof=1)),
            "hl_points": 100 * hl,
            "ci_low_points": 100 * lo, "ci_high_points": 100 * hi, "p": float(p)}


def run_to_run_spread(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How much one retraining moves a cell's score: the arms retrained with several training seeds.

    Pooled SD of an arm's test Dice across its training seeds, and the SD of the
    per-patient differences (and mean absolute test-Dice difference) between two
    retrainings of the same arm, over every pair of training seeds.
    """
    import itertools

    import numpy as np

    groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for r in rows:
        if "patient_dice" in r and "train_seed" in r:
            groups.setdefault((r["arm"], r.get("seed")), []).append(r)
    groups = {k: v for k, v in groups.items() if len(v) > 1}
    if not groups:
        return {"arms": 0}
    var, diffs, abs_test = [], [], []
    for rs in groups.values():
        var.append(np.var([r["test_dice"] for r in rs], ddof=1))
        patients = sorted(rs[0]["patient_dice"])
        for a, b in itertools.combinations(rs, 2):
            diffs.append(np.array([a["patient_dice"][p] - b["patient_dice"][p] for p in patients]))
            abs_test.append(abs(a["test_dice"] - b["test_dice"]))
    return {"arms": len(groups), "sd_test_dice_points": 100 * float(np.sqrt(np.mean(var))),
            "sd_patient_diff_points": 100 * float(np.sqrt(np.mean([d.var(ddof=1) for d in diffs]))),
            "mean_abs_test_diff_points": 100 * float(np.mean(abs_test))}


def summarize(args: argparse.Namespace) -> None:
    """Tables, statistics, agreement and the figure of one cohort's finished arms."""
    import numpy as np

    from iac.nas.agreement import agreement, random_agreement
    from iac.nas.genotype import Genotype
    from iac.stats.tables import format_p
    from iac.stats.tests import holm

    rows = read_arms(args.cohort)
    if not rows:
        raise SystemExit(f"no finished arms in {results_dir(args.cohort) / 'arms.jsonl'}; run `run` first")
    designs = {json.dumps(r["design"], sort_keys=True) for r in rows}
    if len(designs) > 1:
        raise SystemExit(f"{results_dir(args.cohort) / 'arms.jsonl'} mixes {len(designs)} designs; summarise one design")
    spread = run_to_run_spread(rows)
    rows = merge_train_seeds(rows)
    by = {arm_key(r): r for r in rows}
    seeds = sorted({r["seed"] for r in rows if r.get("kind") == "search" and r["arm"] == "full"})
    criteria = sorted({r["arm"][4:] for r in rows if r.get("kind") == "search" and r["arm"].startswith("lth-")})
    randoms = sorted(k for k in by if k.startswith("random-"))
    out: dict[str, Any] = {"cohort": args.cohort, "seeds": seeds, "criteria": criteria, "design": rows[0]["design"]}
    lines = [f"# Headline benchmark v2, cohort `{args.cohort}` (phantom_seed {COHORT_SEEDS[args.cohort]})", ""]

    # Speed: per seed and criterion.
    speed = []
    for seed in seeds:
        full = by[f"full@{seed}"]
        for c in criteria:
            lth, ctl = by.get(f"lth-{c}@{seed}"), by.get(f"control-{c}@{seed}")
            if not lth:
                continue
            stop_seconds = full["cum_seconds"][lth["epochs_run"] - 1]
            saving = full["search_seconds"] - lth["search_seconds"]
            speed.append({
                "seed": seed, "criterion": c, "full_s": full["search_seconds"], "lth_s": lth["search_seconds"],
                "speedup": full["search_seconds"] / lth["search_seconds"], "lth_epochs": lth["epochs_run"],
                "full_epochs": full["epochs_run"], "stop_s": stop_seconds,
                "epoch_s_full": full["mean_epoch_seconds_before"],
                "epoch_s_before": lth["mean_epoch_seconds_before"], "epoch_s_after": lth["mean_epoch_seconds_after"],
                "pruning_share": (stop_seconds - lth["search_seconds"]) / saving if saving > 0 else float("nan"),
                "first_pruning_epoch": lth.get("first_pruning_epoch"), "has_control": ctl is not None,
                "identical_to_full": bool(lth.get("identical_to_full")),
            })
    out["speed"] = speed
    out["speedup_geomean"] = {c: float(math.exp(np.mean([math.log(r["speedup"]) for r in speed if r["criterion"] == c])))
                              for c in criteria if any(r["criterion"] == c for r in speed)}
    lines += ["## Search time", "",
              "| seed | criterion | full s | LTH s | speed-up | LTH epochs | full s/epoch | LTH s/epoch before / after pruning | first pruning epoch | saving from pruning |",
              "|---|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in speed:
        after = f"{r['epoch_s_after']:.1f}" if r["epoch_s_after"] else "-"
        share = "-" if math.isnan(r["pruning_share"]) else f"{100 * r['pruning_share']:.0f} %"
        name = r["criterion"] + (" (prunes nothing on this search: the full search, not run again)"
                                 if r["identical_to_full"] else "")
        lines.append(f"| {r['seed']} | {name} | {r['full_s']:.0f} | {r['lth_s']:.0f} | {r['speedup']:.2f}x | "
                     f"{r['lth_epochs']} | {r['epoch_s_full']:.1f} | {r['epoch_s_before']:.1f} / {after} | "
                     f"{r['first_pruning_epoch'] if r['first_pruning_epoch'] is not None else '-'} | {share} |")
    lines += ["", "Geometric mean speed-up: " + ", ".join(f"{c} {v:.2f}x" for c, v in out["speedup_geomean"].items()), ""]
    replays = [r for r in rows if r.get("kind") == "replay"]
    out["replays"] = [{k: r[k] for k in ("arm", "seed", "stopped", "epochs_run", "pruning_events", "shared", "total")}
                      for r in replays]
    if replays:
        lines += ["Each rule replayed on its seed's full search before its live run:", "",
                  "| seed | rule | stops | epochs | pruning events | shared with the full search |",
                  "|---|---|---|---:|---:|---:|"]
        lines += [f"| {r['seed']} | {r['arm'][len('replay-'):]} | {'yes' if r['stopped'] else 'no'} | {r['epochs_run']} | "
                  f"{r['pruning_events']} | {r['shared']}/{r['total']} |" for r in replays]
        lines.append("")

    # Dice per arm (mean over seeds for the per-seed arms).
    patients = sorted(by["baseline"]["patient_dice"]) if "baseline" in by else []
    dice_rows = []
    for key, r in by.items():
        if "test_dice" in r:
            dice_rows.append((key, r["test_dice"], r.get("seconds", float("nan"))))
    lines += ["## Test Dice (patient-mean foreground, " + f"{len(patients)} test patients)", "",
              "A retrained cell's score is the mean over its training seeds; the last column lists each retraining's.", "",
              "| arm | test Dice | retraining s (mean) | per training seed |", "|---|---:|---:|---|"]
    lines += [f"| {k} | {d:.4f} | {s:.0f} | " + " ".join(f"{x:.4f}" for x in by[k].get("train_seed_dice", [])) + " |"
              for k, d, s in dice_rows]
    out["dice"] = {k: d for k, d, _ in dice_rows}
    out["run_to_run"] = spread
    if spread["arms"]:
        lines += ["", "## Run-to-run spread of one retraining (same cell, other training seed)", "",
                  (f"Over {spread['arms']} retrained arms: SD of an arm's test Dice across its training seeds "
                  f"{spread['sd_test_dice_points']:.2f} points (pooled); per-patient differences between two "
                  f"retrainings of the same arm: SD {spread['sd_patient_diff_points']:.2f} points, "
                  f"mean |test Dice difference| {spread['mean_abs_test_diff_points']:.2f} points."), ""]

    # Statistics: per-patient values averaged over the seeds (the seed-mean analysis).
    def seed_mean(arm: str):
        vals = [_patients(by[f"{arm}@{s}"], patients) for s in seeds if f"{arm}@{s}" in by]
        return np.mean(vals, axis=0) if vals else None

    full_cell = seed_mean("full-cell")
    tests = []
    if full_cell is not None:
        for c in criteria:
            lth_cell = seed_mean(f"lth-{c}-cell")
            if lth_cell is not None:
                tests.append({"comparison": f"non-inferiority: lth-{c} - full (margin {100 * args.ni_margin:g} points)",
                              "family": "noninferiority", **_paired(lth_cell - full_cell, args.ni_margin, "noninferior")})
        controls = {"continued": _patients(by["continued"], patients) if "continued" in by else None,
                    "random (pooled)": np.mean([_patients(by[k], patients) for k in randoms], axis=0) if randoms else None}
        controls.update({f"control-{c}": seed_mean(f"control-{c}") for c in criteria})
        controls.update({k: _patients(by[k], patients) for k in randoms})
        sup = [{"comparison": f"superiority: full - {name} (by {100 * args.superiority_margin:g} points)",
                "family": "superiority", **_paired(full_cell - other, args.superiority_margin, "superior")}
               for name, other in controls.items() if other is not None]
        if sup:
            reject, p_adj = holm([t["p"] for t in sup])
            for t, r, p in zip(sup, reject, p_adj):
                t.update({"p_holm": float(p), "reject_holm": bool(r)})
        tests += sup
    out["tests"] = tests
    lines += ["", "## Statistics (per-patient Dice averaged over the seeds; `iac.stats`)", "",
              "| comparison | n | mean (points) | SD (points) | HL estimate [90 % CI] (points) | p (one-sided) | p Holm |",
              "|---|---:|---:|---:|---|---:|---:|"]
    for t in tests:
        ph = format_p(t["p_holm"]) if "p_holm" in t else "-"
        lines.append(f"| {t['comparison']} | {t['n']} | {t['mean_points']:+.2f} | {t['sd_points']:.2f} | {t['hl_points']:+.2f} "
                     f"[{t['ci_low_points']:+.2f}, {t['ci_high_points']:+.2f}] | {format_p(t['p'])} | {ph} |")

    # Agreement with its yardsticks.
    def geno(row: dict[str, Any]) -> Genotype:
        return Genotype.from_dict(row["genotype"])

    agree = []
    for seed in seeds:
        ref = geno(by[f"full@{seed}"])
        others = [(f"lth-{c}", by.get(f"lth-{c}@{seed}")) for c in criteria]
        others += [(f"control-{c}", by.get(f"control-{c}@{seed}")) for c in criteria]
        others += [(k, by[k]) for k in randoms]
        others += [(f"full seed {s}", by[f"full@{s}"]) for s in seeds if s > seed]
        for name, row in others:
            if row is not None and row.get("genotype"):
                a = agreement(ref, geno(row))
                agree.append({"reference_seed": seed, "other": name, "shared": a.shared, "total": a.total,
                              "edges_shared": a.edges_shared, "ops_shared": a.ops_shared})
    out["agreement"] = agree
    if seeds:
        chance = random_agreement(geno(by[f"full@{seeds[0]}"]).space)
        out["random_pairs"] = chance
        ff = [a["shared"] for a in agree if a["other"].startswith("full seed")]
        out["full_vs_full_shared_mean"] = float(np.mean(ff)) if ff else None
        lines += ["", "## Agreement with each full search (shared choices)", "",
                  "| full seed | other | shared | edges shared | of them same operation |", "|---|---|---:|---:|---:|"]
        lines += [f"| {a['reference_seed']} | {a['other']} | {a['shared']}/{a['total']} | {a['edges_shared']} | {a['ops_shared']} |"
                  for a in agree]
        lines += ["", f"Random pairs ({int(chance['draws'])} draws): mean {chance['shared_mean']:.2f} shared choices, "
                  f"95th percentile {chance['shared_p95']:.0f}, 99th {chance['shared_p99']:.0f}."
                  + (f" Full vs full, pooled over the seed pairs: mean {out['full_vs_full_shared_mean']:.2f}." if ff else "")]

    folder = results_dir(args.cohort)
    (folder / "summary.json").write_text(json.dumps(out, indent=1))
    (folder / "tables.md").write_text("\n".join(lines) + "\n")
    if speed:
        figure(by, seeds, criteria, patients, args.ni_margin).savefig(folder / "lth_speedup.png", dpi=120)
    print("\n".join(lines))


def figure(by: dict[str, dict], seeds: list[int], criteria: list[str], patients: list[str], margin: float):
    """Cumulative search time per seed, and the paired per-patient Dice differences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    def against_full(row: dict[str, Any], seed: int) -> np.ndarray:
        return 100 * (_patients(row, patients) - _patients(by[f"full-cell@{seed}"], patients))

    diffs, names, same = [], [], {}
    for arm in [f"lth-{c}-cell" for c in criteria] + [f"control-{c}" for c in criteria]:
        for seed in seeds:
            if f"{arm}@{seed}" in by and f"full-cell@{seed}" in by:
                if by[f"{arm}@{seed}"].get("copied_from") == "full-cell":  # the full search's own cell
                    same.setdefault(arm.replace("-cell", ""), []).append(str(seed))
                    continue
                diffs.append(against_full(by[f"{arm}@{seed}"], seed))
                names.append(f"{arm.replace('-cell', '')}, seed {seed}")
    for k in sorted(k for k in by if k.startswith("random-") or k == "continued"):
        for seed in seeds:
            if f"full-cell@{seed}" in by:
                diffs.append(against_full(by[k], seed))
                names.append(f"{k}, seed {seed}")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, max(4.5, 1.5 + 0.24 * len(names))),
                                   gridspec_kw={"width_ratios": [1, 1.2]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, seed in enumerate(seeds):
        for j, c in enumerate(criteria):
            lth = by.get(f"lth-{c}@{seed}")
            if lth:
                ax1.plot(range(1, len(lth["cum_seconds"]) + 1), np.array(lth["cum_seconds"]) / 60, lw=2.5,
                         color=colors[1 + j], label=f"IAC-LTH ({c})" if i == 0 else None)
        full = by[f"full@{seed}"]  # drawn last, dashed: a rule recorded as the full search lies under it
        ax1.plot(range(1, len(full["cum_seconds"]) + 1), np.array(full["cum_seconds"]) / 60, color="black",
                 ls="--", lw=1, label="full search" if i == 0 else None)
    ax1.set_xlabel("search epoch")
    ax1.set_ylabel("cumulative search time (min)")
    ax1.set_title("search time, one line per seed")
    ax1.legend()
    if diffs:
        pos = np.arange(len(diffs), 0, -1)
        ax2.boxplot(diffs, positions=pos, vert=False, showfliers=False, widths=0.6)
        for y, d in zip(pos, diffs):
            ax2.scatter(d, np.full(d.size, y) + np.random.default_rng(int(y)).uniform(-0.15, 0.15, d.size), s=5, alpha=0.4)
        ax2.set_yticks(pos, names, fontsize=8)
    ax2.axvline(0, color="gray", lw=0.8)
    ax2.axvline(-100 * margin, color="red", lw=0.8, ls="--", label=f"non-inferiority margin (-{100 * margin:g})")
    ax2.set_xlabel("per-patient Dice minus the full-search cell's (points)")
    title = "paired differences against the full-search cell"
    if same:
        listed = "; ".join(f"{arm} (seed{'s' * (len(s) > 1)} {', '.join(s)})" for arm, s in same.items())
        title += "\n" + textwrap.fill(f"not shown, the full search's own cell: {listed}", 90)
    ax2.set_title(title, fontsize=9 if same else None)
    ax2.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def _design_field(item: str) -> tuple[str, Any]:
    """``FIELD=VALUE`` of ``--design``, the value converted to the field's type."""
    name, _, value = item.partition("=")
    fields = {f.name: f for f in dataclasses.fields(Design)}
    if name not in fields or not value:
        raise SystemExit(f"--design {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
    default = getattr(Design(), name)
    return name, (None if value == "none" else type(default)(value) if default is not None else int(value))


def main() -> None:
    global RESULTS, DESIGN  # --results and --design replace the module's defaults for this process
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="the arms of one search seed")
    p.add_argument("--cohort", choices=sorted(COHORT_SEEDS), default="confirm")
    p.add_argument("--seed", type=int, default=0, help="search seed")
    p.add_argument("--arms", default="shared,full,lth,retrain",
                   help="which parts to run: shared (continued control, random cells), full, lth, retrain")
    p.add_argument("--criteria", default="js-paper,js,sequential",
                   help="IAC-LTH criteria, each a timed arm (js-paper: the paper's rule, not calibrated)")
    p.add_argument("--random", type=int, default=3, help="random genotypes retrained (shared by the seeds)")
    p.add_argument("--epochs", type=int, default=200, help="full-search budget (the paper's 200)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="auto")
    p.add_argument("--work", type=Path, default=WORK, help="MLflow store, prepared cohort and checkpoints")
    p.add_argument("--design", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a field of the frozen design (trial runs only; every row records its design)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="folder of the results (one subfolder per cohort)")
    p.add_argument("--searches-from", type=Path, default=None, metavar="RESULTS",
                   help="reuse the baseline, searches and replays of this seed from another results folder whose "
                        "design differs only in the retraining fields (an amended retraining; same --work)")
    c = sub.add_parser("calibrate", help="replay the criteria's grids on the calibration full search and choose")
    c.add_argument("--seed", type=int, default=0, help="search seed of the calibration full search")
    c.add_argument("--work", type=Path, default=WORK)
    c.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    r = sub.add_parser("rebase", help="retrain a cohort's arms from the baseline trained again in a store that lost it")
    r.add_argument("--cohort", choices=sorted(COHORT_SEEDS), default="confirm")
    r.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    r.add_argument("--device", default="auto")
    r.add_argument("--work", type=Path, default=WORK)
    r.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    s = sub.add_parser("summary", help="tables, statistics and the figure of a cohort")
    s.add_argument("--cohort", choices=sorted(COHORT_SEEDS), default="confirm")
    s.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="folder of the results (one subfolder per cohort)")
    s.add_argument("--ni-margin", type=float, default=0.01, help="non-inferiority margin (Dice, 0.01 = 1 point)")
    s.add_argument("--superiority-margin", type=float, default=0.01,
                   help="how much the full-search cell must beat its controls by (Dice)")
    args = parser.parse_args()
    RESULTS = args.results
    if args.command == "run" and args.design:
        DESIGN = replace(DESIGN, **dict(_design_field(item) for item in args.design))
    if args.command == "run":
        run(args)
    elif args.command == "calibrate":
        calibrate(args)
    elif args.command == "rebase":
        rebase(args)
    else:
        summarize(args)


if __name__ == "__main__":
    main()
