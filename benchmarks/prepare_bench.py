"""Benchmark of ``prepare``: time to prepare the default phantom, random slice reads per second.

Usage (from the project root)::

    python benchmarks/prepare_bench.py [--out DIR] [--workers N] [--reads N]

Prints one JSON object; the figures go to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from iac.config import PrepareConfig  # noqa: E402
from iac.data.dataset import SliceDataset  # noqa: E402
from iac.data.prepare import prepare_dataset  # noqa: E402
from iac.data.store import PreparedDataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="prepared folder (default: a temporary one)")
    parser.add_argument("--workers", type=int, default=PrepareConfig.workers)
    parser.add_argument("--reads", type=int, default=5000, help="random slice reads to time")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="prepare-bench-"))
    out = args.out or tmp / "phantom"
    try:
        start = time.perf_counter()
        result = prepare_dataset(PrepareConfig(out=out, workers=args.workers), progress=False)
        prepare_s = time.perf_counter() - start
        start = time.perf_counter()
        prepare_dataset(PrepareConfig(out=out, workers=args.workers), progress=False)
        reuse_s = time.perf_counter() - start

        train = SliceDataset(PreparedDataset(out), "train")
        order = np.random.default_rng(args.seed).integers(0, len(train), size=args.reads)
        train[0]  # open the first map outside the timing
        start = time.perf_counter()
        for i in order:
            train[int(i)]
        reads_per_s = args.reads / (time.perf_counter() - start)
        print(json.dumps({
            "prepare_seconds": round(prepare_s, 2),
            "reuse_seconds": round(reuse_s, 3),
            "slice_reads_per_second": round(reads_per_s),
            "counts": result.counts,
            "workers": args.workers,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        }, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
