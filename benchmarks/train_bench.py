"""Training throughput per backbone, data-wait share, and evaluation time per patient.

Usage (from the project root)::

    python benchmarks/train_bench.py [--data DIR] [--epochs 2] [--threads N]

On the default phantom (prepared into a temporary folder unless ``--data`` is
given) it trains each backbone (small preset, identity skips) for a few
epochs with the ``retrain`` defaults and reports the steady-state slices per
second and the share of step time spent waiting for the DataLoader (first
epoch excluded: it pays one-off start-up costs), then times patient-level
evaluation (predict every slice, restore the original grid, Dice + HD95).
Prints a Markdown table; the figures go to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from iac.config import PrepareConfig, TrainConfig  # noqa: E402
from iac.data.dataset import SliceDataset  # noqa: E402
from iac.data.prepare import prepare_dataset  # noqa: E402
from iac.data.store import PreparedDataset  # noqa: E402
from iac.eval.evaluate import evaluate_network  # noqa: E402
from iac.models import BACKBONES, create_backbone  # noqa: E402
from iac.train.loader import make_loader  # noqa: E402
from iac.train.steps import make_optimizer, run_epoch  # noqa: E402
from iac.train.losses import make_loss  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="prepared folder (default: prepare the default phantom)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per backbone (the first is not counted)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip", default="identity")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tmp = None
    if args.data is None:
        tmp = Path(tempfile.mkdtemp(prefix="train-bench-"))
        args.data = prepare_dataset(PrepareConfig(out=tmp / "phantom"), progress=False).root
    data = PreparedDataset(args.data)
    cfg = TrainConfig()
    rows = []
    for name in BACKBONES:
        torch.manual_seed(0)
        net = create_backbone(name, data.in_channels, data.num_classes, skip=args.skip)
        gen = torch.Generator().manual_seed(0)
        loader = make_loader(SliceDataset(data, "train"), cfg.batch_size, gen)
        opt = make_optimizer(net, cfg.lr, cfg.weight_decay)
        loss = make_loss()
        stats = [
            run_epoch(net, loader, loss, opt, device=torch.device("cpu"), epoch=e + 1, progress=False)
            for e in range(args.epochs)
        ]
        steady = stats[1:] or stats
        slices = sum(s.slices for s in steady)
        secs = sum(s.seconds for s in steady)
        wait = sum(s.data_seconds for s in steady)
        t0 = time.perf_counter()
        res = evaluate_network(net, data, "test", "cpu", progress=False)
        eval_secs = (time.perf_counter() - t0) / res.aggregates["n_patients"]
        rows.append((name, sum(p.numel() for p in net.parameters()), slices / secs, 100 * wait / secs, eval_secs))

    print(f"phantom {data.slice_size}x{data.slice_size}, {len(SliceDataset(data, 'train'))} training slices, "
          f"batch {cfg.batch_size}, {args.threads} thread(s), {platform.processor() or platform.machine()}")
    print("| backbone (small) | parameters | training slices/s | data wait | evaluation s/patient |")
    print("|---|---:|---:|---:|---:|")
    for name, n, sps, wait, ev in rows:
        print(f"| {name} | {n:,} | {sps:.0f} | {wait:.1f} % | {ev:.2f} |")
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
