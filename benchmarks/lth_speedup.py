"""The headline benchmark: IAC-LTH versus the 200-epoch full search.

Usage (from the project root)::

    python benchmarks/lth_speedup.py [--seed 0] [--epochs 200] [--size 32] [--out DIR]

On the default phantom cohort (34 patients; in-plane size shrunk to ``--size``
to fit a CPU, the search space left at its defaults: 8 operations, K=4,
4 nodes) it

1. trains a baseline U-Net (``--baseline-epochs``),
2. runs the full search for ``--epochs`` epochs (the paper's budget, 200),
3. runs IAC-LTH with the default stability settings (``--reference-run`` = 2),
4. takes the control arm from the full search itself: the genotype it would
   have derived had it stopped at the epoch where LTH stopped (recorded in its
   trajectory), with the search time spent up to that epoch (does LTH beat
   simply searching for fewer epochs?),
5. retrains the three cells from the baseline with the same budget
   (``--retrain-epochs``) and evaluates them on the test patients,

all as MLflow runs in ``<out>/mlflow.db``, then prints the wall-clock search
times (``search_seconds``, validation and checkpoints included, measured the
same way for all arms), their ratio, epochs run, mean epoch time before and
after pruning, genotype agreement, the mean test Dice of each arm and the
paired per-patient differences (Wilcoxon signed-rank).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/lth-benchmark"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=200, help="full-search budget (the paper's 200)")
    parser.add_argument("--size", type=int, default=32, help="phantom in-plane size (shrunk for CPUs)")
    parser.add_argument("--patients", type=int, default=34)
    parser.add_argument("--baseline-epochs", type=int, default=30)
    parser.add_argument("--retrain-epochs", type=int, default=10)
    parser.add_argument("--cell-channels", type=int, default=8, help="cell width (shrunk for CPUs)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{(args.out / 'mlflow.db').resolve()}"
    import mlflow
    import numpy as np
    from scipy.stats import wilcoxon

    from iac.commands.evaluate import run_evaluate
    from iac.commands.retrain import run_retrain
    from iac.commands.search import run_search_step
    from iac.nas.agreement import agreement
    from iac.config import EvalConfig, PrepareConfig, SearchConfig, StabilityConfig, TrainConfig
    from iac.data.prepare import prepare_dataset
    from iac.eval.per_case import load_per_case
    from iac.nas.genotype import Genotype
    from iac import registry

    mlflow.set_experiment(f"lth-benchmark-seed{args.seed}")
    prep = prepare_dataset(
        PrepareConfig(out=args.out / "phantom", phantom_patients=args.patients, phantom_size=args.size), progress=False
    )
    data = prep.root
    t0 = time.perf_counter()
    base = run_retrain(TrainConfig(data=data, epochs=args.baseline_epochs, seed=args.seed, device=args.device))
    scfg = SearchConfig(
        data=data, epochs=args.epochs, pretrained=base["model_uri"], seed=args.seed, cell_channels=args.cell_channels,
        device=args.device,
    )
    stab = StabilityConfig()
    full = run_search_step(scfg, "full", stab)
    lth = run_search_step(scfg, "lth", stab, reference_run=full["run_id"])
    # Control arm: the full search stopped where LTH stopped. Its trajectory records, per epoch, the genotype the
    # discretisation gives at that point and the cumulative search time (validation and checkpoints included).
    traj_path = mlflow.artifacts.download_artifacts(run_id=full["run_id"], artifact_path="trajectory.json")
    stop = json.loads(Path(traj_path).read_text())["epochs"][lth["epochs_run"] - 1]  # epochs count from 0
    control_genotype = Genotype.from_dict(stop["genotype"])
    control_geno = args.out / f"control-seed{args.seed}-genotype.json"
    control_geno.write_text(control_genotype.to_json())
    control = {
        "cell_uri": str(control_geno), "run_id": full["run_id"], "epochs_run": stop["epoch"] + 1,
        "search_seconds": stop["cum_seconds"],
    }

    arms = {"full": full, "lth": lth, "control": control}
    results = {}
    for name, out in arms.items():
        unet = run_retrain(
            TrainConfig(
                data=data, skip="iac", genotype=out["cell_uri"], pretrained=base["model_uri"],
                epochs=args.retrain_epochs, seed=args.seed, device=args.device,
            )
        )
        ev = run_evaluate(EvalConfig(model=unet["model_uri"], data=data, split="test", device=args.device))
        csv = mlflow.artifacts.download_artifacts(run_id=ev["run_id"], artifact_path="per_case.csv")
        mlflow.artifacts.download_artifacts(run_id=ev["run_id"], artifact_path="per_case.json", dst_path=str(Path(csv).parent))
        df, _ = load_per_case(csv)
        per_patient = df[df["label"] == "mean_fg"].groupby("patient")["dice"].mean()
        if name == "control":
            m = {"mean_epoch_seconds": control["search_seconds"] / control["epochs_run"]}
            genotype = control_genotype
        else:
            m = mlflow.get_run(out["run_id"]).data.metrics
            genotype = Genotype.from_json(registry.resolve(out["cell_uri"]).tags["genotype_json"])
        results[name] = {
            "search_seconds": out["search_seconds"],
            "epochs_run": out["epochs_run"],
            "before": m.get("mean_epoch_seconds_before_pruning", m.get("mean_epoch_seconds")),
            "after": m.get("mean_epoch_seconds_after_pruning"),
            "dice": float(per_patient.mean()),
            "per_patient": per_patient,
            "genotype": genotype,
        }

    full_r, lth_r, ctl_r = results["full"], results["lth"], results["control"]
    print(f"\nseed {args.seed}, phantom {args.patients} patients at {args.size}x{args.size}, total {time.perf_counter() - t0:.0f} s")
    print("| arm | search s | epochs | s/epoch before pruning | s/epoch after | test Dice |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        after = f"{r['after']:.2f}" if r["after"] else "-"
        print(f"| {name} | {r['search_seconds']:.0f} | {r['epochs_run']} | {r['before']:.2f} | {after} | {r['dice']:.4f} |")
    ratio = full_r["search_seconds"] / lth_r["search_seconds"]
    print(f"\nspeed-up full / LTH: {ratio:.2f}x")
    print(f"genotype agreement LTH vs full: {agreement(full_r['genotype'], lth_r['genotype']).jaccard:.2f}; "
          f"control vs full: {agreement(full_r['genotype'], ctl_r['genotype']).jaccard:.2f}")
    summary = {"seed": args.seed, "speedup": ratio}
    for other in ("full", "control"):
        d = (lth_r["per_patient"] - results[other]["per_patient"]).dropna()
        p = float(wilcoxon(d, zero_method="zsplit").pvalue) if np.any(d != 0) else 1.0
        print(f"LTH - {other}: mean paired Dice difference {d.mean():+.4f} (median {d.median():+.4f}), "
              f"n={len(d)}, Wilcoxon p={p:.3f}")
        summary[f"lth_minus_{other}"] = float(d.mean())
    for k, v in results.items():
        summary[k] = {
            "search_seconds": v["search_seconds"], "epochs_run": v["epochs_run"], "dice": v["dice"],
            "epoch_seconds_before": v["before"], "epoch_seconds_after": v["after"], "genotype": str(v["genotype"]),
            "per_patient_dice": {str(p): float(d) for p, d in v["per_patient"].items()},
        }
    summary.update({"threads": torch.get_num_threads(), "total_seconds": time.perf_counter() - t0})
    (args.out / f"summary-seed{args.seed}.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
