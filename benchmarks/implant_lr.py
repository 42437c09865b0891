"""Choose the implanted cells' learning-rate scale on the calibration cohort (the retraining amendment).

Usage (from the project root, after the calibration cohort's baseline and full search)::

    python benchmarks/implant_lr.py                 # scales 1, 3, 10, 30 in turn
    python benchmarks/implant_lr.py --scales 1,10   # others

For each scale, in increasing order, it retrains on the calibration cohort
(``phantom_seed`` 101) the continued control, the three random cells and the
seed-0 full-search cell, one training seed each, with
``TrainConfig.implant_lr_scale`` at that scale (``lth_speedup.py run
--searches-from``: the baseline and the search are reused, not run again), into
``benchmarks/results/implant_lr/x<scale>/``; then it measures how much each
retrained cell adds to its skip (``cell_contribution.py``, on the cohort's test
slices). The rule, written down in docs/benchmarks.md ("Retraining amendment")
before any of these runs: the chosen scale is the smallest at which the median
share of the cells' output in the skip norm (four cells, three levels) is at
least :data:`MIN_SHARE` and the four cells' mean test Dice is at most
:data:`MAX_DICE_LOSS` below their mean at scale 1. It stops at the first scale
that qualifies and writes ``choice.json`` and ``choice.md`` next to the runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = Path("benchmarks/results/implant_lr")
WORK = Path("outputs/lth-v2")
SOURCE = Path("benchmarks/results/lth_speedup_v2")
MIN_SHARE = 0.10  # the cell acts: its output at least a tenth of the skip's norm (median)
MAX_DICE_LOSS = 0.005  # and the cells lose at most half a point of test Dice against scale 1
CELL_KINDS = ("cell", "random")


def scale_figures(rows: list[dict[str, Any]], contributions: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median share and mean test Dice of one scale's retrained cells (the continued control left out)."""
    cells = [r for r in rows if r.get("kind") in CELL_KINDS]
    if not cells:
        raise SystemExit("no retrained cell among the rows")
    missing = [r["model_uri"] for r in cells if r["model_uri"] not in contributions]
    if missing:
        raise SystemExit(f"no contribution measured for {', '.join(missing)}")
    shares = [lv["ratio"] for r in cells for lv in contributions[r["model_uri"]]]
    return {
        "cells": [r["arm"] for r in cells],
        "median_share": statistics.median(shares),
        "shares": shares,
        "mean_test_dice": statistics.fmean(r["test_dice"] for r in cells),
        "test_dice": {r["arm"]: r["test_dice"] for r in cells},
        "continued_test_dice": next((r["test_dice"] for r in rows if r["arm"] == "continued"), None),
    }


def qualifies(figures: dict[str, Any], reference: dict[str, Any]) -> bool:
    """The rule for one scale, ``reference`` being scale 1's figures."""
    return (figures["median_share"] >= MIN_SHARE
            and figures["mean_test_dice"] >= reference["mean_test_dice"] - MAX_DICE_LOSS)


def choose(by_scale: dict[float, dict[str, Any]]) -> float | None:
    """The smallest qualifying scale (None: none does); needs scale 1 as the reference."""
    if 1.0 not in by_scale:
        raise ValueError("the rule compares with scale 1, which is missing")
    for scale in sorted(by_scale):
        if qualifies(by_scale[scale], by_scale[1.0]):
            return scale
    return None


def _folder(scale: float) -> Path:
    return OUT / f"x{scale:g}"


def _measured(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Per model URI, the levels ``cell_contribution.py`` wrote to ``path`` (empty when not measured yet)."""
    if not path.is_file():
        return {}
    return {r["model"]: r["levels"] for r in map(json.loads, path.read_text().splitlines()) if r}


def run_scale(scale: float, threads: int) -> dict[str, Any]:
    """Retrain and measure one scale (finished arms and measurements are reused)."""
    folder = _folder(scale)
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "lth_speedup.py"), "run", "--cohort", "calibrate", "--seed", "0",
         "--arms", "shared,retrain", "--criteria", "", "--threads", str(threads), "--work", str(WORK),
         "--searches-from", str(SOURCE), "--results", str(folder),
         "--design", f"implant_lr_scale={scale}", "--design", "retrain_seeds=1"],
        check=True,
    )
    rows = [json.loads(line) for line in (folder / "calibrate" / "arms.jsonl").read_text().splitlines() if line.strip()]
    measured = folder / "contribution.jsonl"
    done = _measured(measured)
    if any(r.get("kind") in CELL_KINDS and r["model_uri"] not in done for r in rows):
        measured.unlink(missing_ok=True)
        subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "cell_contribution.py"),
             "--store", str(WORK / "calibrate" / "mlflow.db"), "--data", str(WORK / "calibrate" / "data"),
             "--arms", str(folder / "calibrate" / "arms.jsonl"), "--out", str(measured)],
            check=True,
        )
        done = _measured(measured)
    return scale_figures(rows, done)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="1,3,10,30", help="scales tried in increasing order (1 is always run)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    scales = sorted({1.0, *(float(s) for s in args.scales.split(",") if s)})
    by_scale: dict[float, dict[str, Any]] = {}
    chosen = None
    for scale in scales:
        by_scale[scale] = run_scale(scale, args.threads)
        f = by_scale[scale]
        print(f"scale {scale:g}: median share {100 * f['median_share']:.1f} %, cells' mean test Dice "
              f"{f['mean_test_dice']:.4f}", flush=True)
        chosen = choose(by_scale)
        if chosen is not None:
            break
    out = {"rule": {"min_share": MIN_SHARE, "max_dice_loss": MAX_DICE_LOSS}, "chosen": chosen,
           "scales": {f"{s:g}": f for s, f in by_scale.items()}}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "choice.json").write_text(json.dumps(out, indent=1))
    lines = ["| scale | median share of the skip norm | cells' mean test Dice | continued control | per cell |",
             "|---:|---:|---:|---:|---|"]
    for s, f in by_scale.items():
        cells = ", ".join(f"{a} {d:.4f}" for a, d in f["test_dice"].items())
        cont = f"{f['continued_test_dice']:.4f}" if f["continued_test_dice"] is not None else "—"
        lines.append(f"| {s:g} | {100 * f['median_share']:.1f} % | {f['mean_test_dice']:.4f} | {cont} | {cells} |")
    lines += ["", f"Chosen scale: {chosen:g}" if chosen is not None else "No scale qualifies."]
    (OUT / "choice.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
