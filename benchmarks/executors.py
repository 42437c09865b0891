"""Wall time of ``main`` with the local and the Ray executor, on one tracking server.

Each arm runs the whole study in a fresh experiment (nothing reused) with the
same settings and one torch thread per step; the arms run one after another,
in alternating order over ``--repeats``, and their registered genotypes are
compared (they must be equal). Without ``--tracking-uri`` a throw-away
PostgreSQL cluster and ``iac server`` are started as in the tests
(``tests/serverkit.py``).

    python benchmarks/executors.py --budget smoke --seeds 0,1 --out benchmarks/results/executors-smoke.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))


def _arm(executor: str, budget: str, seeds: tuple[int, ...], data: Path, report: Path) -> dict:
    import mlflow

    from iac import registry
    from iac.commands.main import run_main
    from iac.config import MainConfig

    exp = mlflow.create_experiment(f"bench-{executor}-{budget}-{time.time_ns()}")
    mlflow.set_experiment(experiment_id=exp)
    t0 = time.perf_counter()
    out = run_main(MainConfig(budget=budget, seeds=seeds, data=data, report_dir=report, executor=executor, step_cpus=1))
    seconds = time.perf_counter() - t0
    genotypes = {k: registry.resolve(v["cell_uri"]).tags["genotype_json"] for k, v in out["searches"].items()}
    return {"executor": executor, "seconds": seconds, "genotypes": genotypes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="smoke")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--tracking-uri", default="")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import mlflow
    import torch

    torch.set_num_threads(1)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    work = Path(tempfile.mkdtemp(prefix="iac-bench-exec-"))
    pg = server = None
    uri = args.tracking_uri
    if not uri:
        from serverkit import Postgres, TrackingServer

        pg = Postgres().start()
        server = TrackingServer(pg.create_database("bench"), work / "artifacts").start()
        uri = server.url
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # The prepared folder is made once, before the arms: each arm's `prepare` step then reuses it.
    from iac.config import BUDGETS, PrepareConfig
    from iac.data.prepare import prepare_dataset

    b = BUDGETS[args.budget]
    prepare_dataset(PrepareConfig(out=work / "prepared", phantom_patients=b.phantom_patients, phantom_size=b.phantom_size),
                    progress=False)
    runs = []
    try:
        for r in range(args.repeats):
            order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
            for executor in order:
                res = _arm(executor, args.budget, seeds, work / "prepared", work / f"report-{executor}-{r}")
                print(f"{args.budget} {executor}: {res['seconds']:.0f} s", flush=True)
                runs.append({**res, "repeat": r})
    finally:
        if server:
            server.stop()
        if pg:
            pg.stop()
    local = [r for r in runs if r["executor"] == "local"]
    same = all(r["genotypes"] == local[0]["genotypes"] for r in runs)
    summary = {
        "budget": args.budget, "seeds": list(seeds), "cpus": os.cpu_count(), "load_1min_at_end": os.getloadavg()[0],
        "runs": runs, "genotypes_equal": same,
        # Which cells differ from the first local arm's (key <method>-<seed>).
        "differing_cells": sorted({k for r in runs for k, g in r["genotypes"].items() if g != local[0]["genotypes"].get(k)}),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
