"""Oracle round trips: the Dice a perfect prediction keeps on the way back to the original grid.

Prepares the phantom at its native 1.5 mm and at coarser target spacings (so
that every case is finer than the prepared grid), and scores the three
oracles of :mod:`iac.eval.oracle` on every case: the soft oracle (the one-hot
reference carried linearly to the prepared grid, restored as probabilities)
and the stored hard label map restored by nearest neighbour (the old way) and
as one-hot probabilities.

Usage (from the project root)::

    python benchmarks/restore_oracle.py [--patients 34] [--sizes 64 128] [--spacings 1.9 2.1 2.5 3.0]

Prints one JSON object (per phantom size and target spacing: cases, finer
cases, mean and minimum Dice of each oracle over the finer cases); the
figures go to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iac.config import PrepareConfig  # noqa: E402
from iac.data.prepare import prepare_dataset  # noqa: E402
from iac.data.store import PreparedDataset  # noqa: E402
from iac.eval.oracle import ORACLES, round_trip_scores  # noqa: E402


def summarise(scores) -> dict:
    """Case counts and, over the finer cases, each oracle's mean and minimum Dice."""
    finer = scores[scores["finer"]]
    out = {"cases": int(len(scores)), "finer_cases": int(len(finer)), "ratio": round(float(scores["ratio"].min()), 3)}
    for name in ORACLES:
        if len(finer):
            out[name] = {"mean": round(float(finer[name].mean()), 4), "min": round(float(finer[name].min()), 4)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=PrepareConfig.phantom_patients)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="phantom matrix sides (1.5 mm pixels)")
    parser.add_argument("--spacings", type=float, nargs="+", default=[1.9, 2.1, 2.5, 3.0], help="target spacings (mm)")
    parser.add_argument("--workers", type=int, default=PrepareConfig.workers)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="restore-oracle-"))
    results = {}
    try:
        for size in args.sizes:
            for spacing in args.spacings:
                out = tmp / f"phantom-{size}-{spacing}"
                cfg = PrepareConfig(
                    out=out, phantom_patients=args.patients, phantom_size=size, spacing=spacing, workers=args.workers
                )
                prepare_dataset(cfg, progress=False)
                results[f"size {size}, target {spacing} mm"] = summarise(round_trip_scores(PreparedDataset(out)))
                shutil.rmtree(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"native_spacing_mm": 1.5, "patients": args.patients, "results": results}, indent=1))


if __name__ == "__main__":
    main()
