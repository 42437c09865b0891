"""Kill a search at random moments and measure how much work each resume lost.

Usage (from the project root)::

    python benchmarks/kill_resume.py [--kills 10] [--epochs 12] [--method full] [--seed 0] [--out DIR]

On a small phantom (``--patients``, ``--size``) it trains a baseline U-Net,
runs one uninterrupted search as the reference (its wall time ``T``), then
starts the same search again and kills it with ``SIGKILL`` at ``--kills``
random moments: each process is killed a uniformly drawn
``U(--low, --high) x T`` seconds after it starts, and the next one resumes the
killed run (``--resume <run>``), until the kills are spent and a last resume
runs to the end. For every kill it reports:

- ``wall_s``: how long the killed process ran;
- ``saved_s``: the search time its checkpoints added (``cum_seconds`` of the
  newest checkpoint on the chain after the kill minus before the process);
- ``lost_s = wall_s - saved_s``: work the next resume does again (the part of
  the epoch in progress, plus start-up, download and validation overhead);
- ``epochs_saved``: epochs the process checkpointed.

It also checks that the final genotype equals the reference's (the search is
deterministic on CPU). Everything runs in ``<out>/mlflow.db``; the table goes
to ``<out>/kill_resume.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _env(out: Path, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "IAC_FAULT"}
    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    env.update({"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri, "MLFLOW_EXPERIMENT_NAME": "kill-resume",
                "MLFLOW_DISABLE_TELEMETRY": "true", "OMP_NUM_THREADS": str(threads),
                "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")})
    return env


def _runs(step: str) -> list[str]:
    """The experiment's runs of ``step``, newest first."""
    import mlflow

    exp = mlflow.get_experiment_by_name("kill-resume")
    runs = mlflow.search_runs([exp.experiment_id], filter_string=f"tags.step = '{step}'", output_format="list",
                              order_by=["attributes.start_time DESC"])
    return [r.info.run_id for r in runs]


def _new_run(step: str, seen: set[str]) -> str | None:
    """The newest run of ``step`` not in ``seen`` (None: the process was killed before it started its run)."""
    return next((r for r in _runs(step) if r not in seen), None)


def _launch(args: list[str], env: dict[str, str], kill_after: float | None) -> tuple[int, float]:
    """Run ``python -m iac.cli <args>``; kill it after ``kill_after`` s. Returns (exit code, wall seconds)."""
    t0 = time.perf_counter()
    with open(env["IAC_BENCH_LOG"], "a") as log:
        proc = subprocess.Popen([sys.executable, "-m", "iac.cli", *args], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    return proc.returncode, time.perf_counter() - t0


def _saved(run_id: str | None) -> tuple[int, float]:
    """(epoch, cum_seconds) of the newest checkpoint on ``run_id``'s resume chain ((0, 0) without one)."""
    from iac.commands.resume import find_resume_point

    if run_id is None:
        return 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        point = find_resume_point(run_id, Path(tmp), echo=lambda line: None)
        if point.state is None:
            return 0, 0.0
        return int(point.state["epoch"]), float(point.state["cum_seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/kill-resume"))
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--method", choices=("full", "lth"), default="full")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0, help="search seed")
    parser.add_argument("--kill-seed", type=int, default=1, help="seed of the kill moments")
    parser.add_argument("--low", type=float, default=0.1, help="earliest kill, as a share of the reference time")
    parser.add_argument("--high", type=float, default=0.5, help="latest kill, as a share of the reference time")
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    env = _env(args.out, args.threads)
    env["IAC_BENCH_LOG"] = str((args.out / "steps.log").resolve())
    os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_DISABLE_TELEMETRY")})
    import mlflow

    from iac.commands.store import open_store
    from iac.config import PrepareConfig
    from iac.data.prepare import prepare_dataset

    open_store()
    if mlflow.get_experiment_by_name("kill-resume") is None:
        mlflow.create_experiment("kill-resume", artifact_location=(args.out / "artifacts").resolve().as_uri())
    data = prepare_dataset(PrepareConfig(out=args.out / "prepared", phantom_patients=args.patients,
                                         phantom_size=args.size, workers=1), progress=False).root
    step = f"search_{args.method}"
    # The baseline and the uninterrupted reference are kept in <out>/reference.json and reused by a rerun.
    ref_file = args.out / f"reference-{args.method}-{args.epochs}-s{args.seed}.json"
    if ref_file.is_file():
        saved = json.loads(ref_file.read_text())
        base, ref, ref_wall = saved["baseline"], saved["run"], saved["wall_s"]
    else:
        code, _ = _launch(["retrain", "--data", str(data), "--epochs", "3", "--seed", str(args.seed)], env, None)
        assert code == 0, f"baseline failed (see {env['IAC_BENCH_LOG']})"
        base = json.loads(mlflow.get_run(_runs("retrain")[0]).data.tags["iac_outputs"])["model_uri"]
    search = [step, "--data", str(data), "--pretrained", base, "--epochs", str(args.epochs),
              "--warmup-epochs", str(max(1, args.epochs // 4)), "--seed", str(args.seed),
              "--cell-channels", "8", "--check-every", "5"]
    if not ref_file.is_file():
        code, ref_wall = _launch(search, env, None)
        assert code == 0, f"reference search failed (see {env['IAC_BENCH_LOG']})"
        ref = _runs(step)[0]
        ref_file.write_text(json.dumps({"baseline": base, "run": ref, "wall_s": ref_wall}))
    print(f"reference {step}: {ref_wall:.1f} s wall, run {ref}")

    rng = random.Random(args.kill_seed)
    rows, previous = [], None
    for k in range(args.kills):
        before = _saved(previous)
        delay = rng.uniform(args.low, args.high) * ref_wall
        resume = ["--resume", previous] if previous else []
        seen = set(_runs(step))
        code, wall = _launch([*search, *resume], env, delay)
        run = _new_run(step, seen)
        if code == 0:
            print(f"kill {k + 1}: the search finished before its kill at {delay:.1f} s")
            previous = run
            break
        # Killed before it started its run: nothing saved, and the next resume names the same run.
        after = _saved(run) if run else before
        run = run or previous
        row = {"kill": k + 1, "kill_at_s": round(delay, 2), "wall_s": round(wall, 2), "run_started": run != previous,
               "epochs_saved": after[0] - before[0], "epoch_after": after[0],
               "saved_s": round(after[1] - before[1], 2), "lost_s": round(wall - (after[1] - before[1]), 2)}
        rows.append(row)
        print(json.dumps(row))
        previous = run
    final = mlflow.get_run(previous) if previous else None
    if final is None or final.info.status != "FINISHED":
        code, _ = _launch([*search, *(["--resume", previous] if previous else [])], env, None)
        assert code == 0, f"the last resume failed (see {env['IAC_BENCH_LOG']})"
        final = mlflow.get_run(_runs(step)[0])
    same = final.data.tags.get("genotype") == mlflow.get_run(ref).data.tags.get("genotype")
    lost = [r["lost_s"] for r in rows]
    summary = {
        "reference_wall_s": round(ref_wall, 2), "epochs": args.epochs, "method": args.method, "kills": len(rows),
        "lost_s_median": round(statistics.median(lost), 2) if lost else None,
        "lost_s_max": round(max(lost), 2) if lost else None,
        "lost_s_total": round(sum(lost), 2),
        "mean_epoch_s": round(mlflow.get_run(ref).data.metrics["search_seconds"] / args.epochs, 2),
        "same_genotype_as_reference": same,
    }
    (args.out / "kill_resume.json").write_text(json.dumps({"summary": summary, "kills": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
