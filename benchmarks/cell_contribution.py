"""How much an implanted cell adds to its skip connection in a retrained U-Net.

Usage (from the project root)::

    python benchmarks/cell_contribution.py --store outputs/lth-v2/confirm/mlflow.db \\
        --data outputs/lth-v2/confirm/data models:/iac-unet-phantom-unet/14 ...
    python benchmarks/cell_contribution.py --store ... --data ... --arms benchmarks/results/.../arms.jsonl

For each registered U-Net with IAC skips it runs the middle slices of the last
``--patients`` test cases of the prepared data through the network and reports, per skip level,
``||proj(cell(skip, up))|| / ||inner(skip)||`` (the cell's share of what the
decoder receives on that skip) and the mean absolute weight of the
zero-initialised output projection ``proj``. Rows go to ``--out`` as JSON lines.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def contributions(net: torch.nn.Module, x: torch.Tensor) -> list[dict]:
    """Per IAC skip: the cell's output norm relative to the skip's own, on the batch ``x``."""
    from iac.nas.implant import IACSkip

    rows: list[dict] = []

    def hook(mod, inp, _out):
        skips, up = inp[0], (inp[1] if len(inp) > 1 else None)
        plain, cell = mod.inner(skips, up), mod.proj(mod.cell(skips[mod.level], up))
        rows.append({"level": mod.level, "ratio": float(cell.norm() / plain.norm()),
                     "proj_weight_mean_abs": float(mod.proj.weight.abs().mean())})

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, IACSkip)]
    if not handles:
        raise SystemExit("the model has no IAC skips (it was not retrained with a cell)")
    with torch.no_grad():
        net(x)
    for h in handles:
        h.remove()
    return sorted(rows, key=lambda r: r["level"])


def search_supernet(run_id: str) -> torch.nn.Module:
    """The supernet of a finished search run, from its last checkpoint (masks applied)."""
    import mlflow

    from iac import registry
    from iac.nas.genotype import SearchSpace
    from iac.nas.supernet import SearchNetwork
    from iac.train.checkpoint import load_checkpoint

    pretrained = mlflow.get_run(run_id).data.tags.get("pretrained")
    if not pretrained:
        raise SystemExit(f"--search-run {run_id}: the run has no `pretrained` tag (not a search run?)")
    unet, _, _ = registry.load_unet(pretrained, device="cpu")
    traj = json.loads(Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="trajectory.json")).read_text())
    net = SearchNetwork(unet, SearchSpace.from_dict(traj["space"]))
    state = load_checkpoint(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="checkpoints/last.pt"))
    net.apply_masks(state["masks"])
    net.load_state_dict(state["model"])
    return net.eval()


def main() -> None:
    import mlflow

    from iac.commands.predict import load_predictor

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="registered U-Nets, models:/<name>/<version>")
    ap.add_argument("--arms", type=Path, default=None,
                    help="also every retrained cell of this lth_speedup arms.jsonl (rows with a genotype or a search's cell)")
    ap.add_argument("--store", type=Path, required=True, help="the MLflow SQLite store holding them")
    ap.add_argument("--data", type=Path, required=True, help="the prepared data the models were trained on")
    ap.add_argument("--patients", type=int, default=16, help="last N test cases used")
    ap.add_argument("--slices", type=int, default=8, help="middle slices per case")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/cell_contribution.jsonl"))
    ap.add_argument("--search-run", action="append", default=[], metavar="RUN_ID",
                    help="also the supernet of this finished search run (its last checkpoint)")
    args = ap.parse_args()
    labels = {m: m for m in args.models}
    labels.update({f"search:{r}": f"search run {r}" for r in args.search_run})
    if args.arms is not None:
        if not args.arms.is_file():
            raise SystemExit(f"--arms {args.arms}: no such file (expected an lth_speedup arms.jsonl)")
        for line in args.arms.read_text().splitlines():
            r = json.loads(line) if line.strip() else {}
            if r.get("model_uri") and r.get("kind") in ("cell", "random", "control-truncated"):
                labels.setdefault(r["model_uri"], f"{r['arm']}@{r.get('seed')}/t{r.get('train_seed', 0)}")
    if not labels:
        raise SystemExit("no models: name them or give --arms")
    if not args.store.is_file():
        raise SystemExit(f"--store {args.store}: no such file (expected an MLflow SQLite store)")
    from iac.data.store import PreparedDataset

    data = PreparedDataset(args.data)
    cases = data.cases("test")[-args.patients:]
    if not cases:
        raise SystemExit(f"--data {args.data}: the prepared data has no test cases")
    vols = []
    for c in cases:
        v = data.image(c.case_id)  # (C, Z, Y, X)
        mid, half = v.shape[1] // 2, args.slices // 2
        vols.append(np.asarray(v[:, max(0, mid - half): mid + half]).transpose(1, 0, 2, 3))
    x = torch.from_numpy(np.concatenate(vols)).float()
    uri = f"sqlite:///{args.store.resolve()}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    torch.set_num_threads(2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        for model, label in labels.items():
            if model.startswith("search:"):
                net = search_supernet(model.removeprefix("search:"))
            else:
                net = load_predictor(model, "cpu")[0].unwrap_python_model().net.eval()
            row = {"model": model, "label": label, "store": str(args.store), "slices": int(x.shape[0]),
                   "levels": contributions(net, x)}
            f.write(json.dumps(row) + "\n")
            print(label, model, " ".join(f"level {r['level']}: {100 * r['ratio']:.2f} %" for r in row["levels"]))


if __name__ == "__main__":
    main()
