"""Peak memory of one training step: plain U-Net versus the search supernet.

Usage (from the project root)::

    python benchmarks/search_memory.py [--size 64] [--batch 16] [--k 4]

Each variant runs in a fresh process (so peaks do not mix) that builds the
model, runs one forward and backward pass of a batch, and reports the growth
of its peak resident set size over the state right after building the model
(CPU; the peak is reset there through ``/proc/self/clear_refs`` on Linux), or ``torch.cuda.max_memory_allocated`` on a GPU. Prints a Markdown
table; the figures go to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("plain", "supernet-all", "supernet-1op")


_PEAK_RESET = False


def _status_bytes(key: str) -> int | None:
    """``key`` (e.g. VmRSS, VmHWM) of /proc/self/status in bytes; None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's peak resident set to the current one (Linux ``clear_refs`` 5).

    ``ru_maxrss`` cannot be used in a child of a large process: Linux keeps the
    parent's peak across ``exec``, so the growth would read as zero.
    """
    global _PEAK_RESET
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    _PEAK_RESET = _status_bytes("VmHWM") is not None
    return _PEAK_RESET


def _child(variant: str, size: int, batch: int, k: int, device: str) -> dict:
    import resource

    import torch

    sys.path.insert(0, str(ROOT))
    from iac.config import DARTS_OPS, SearchConfig
    from iac.models import create_backbone
    from iac.nas import SearchNetwork, SearchSpace

    torch.manual_seed(0)
    net = create_backbone("unet", 1, 4)
    model = net
    if variant != "plain":
        cfg = SearchConfig()
        space = SearchSpace(ops=DARTS_OPS, nodes=cfg.nodes, n_inputs=2, steps_per_node=cfg.steps_per_node, k=k,
                            cell_channels=cfg.cell_channels, per_level=False)
        model = SearchNetwork(net, space)
        if variant == "supernet-1op":
            real = [op for op in DARTS_OPS if op != "none"]
            for e in range(len(space.edges())):
                model.prune_ops(0, e, [real[e % len(real)]])
    model = model.to(device).train()
    x = torch.randn(batch, 1, size, size, device=device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    elif _reset_peak_rss():  # Linux: the peak of this process's own memory, from here on
        base = _status_bytes("VmRSS")
    else:  # ru_maxrss: also counts a parent's peak inherited across exec
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model(x).mean().backward()
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() - base
    elif _status_bytes("VmHWM") is not None and _PEAK_RESET:
        peak = _status_bytes("VmHWM") - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"variant": variant, "peak_mib": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.size, args.batch, args.k, args.device)))
        return
    rows = []
    for v in VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, "--child", v, "--size", str(args.size), "--batch", str(args.batch), "--k", str(args.k),
             "--device", args.device],
            capture_output=True, text=True, check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    plain = rows[0]["peak_mib"]
    print(f"one forward+backward step, batch {args.batch}, {args.size}x{args.size}, K={args.k}, {args.device}")
    print("| model | peak memory growth (MiB) | x plain |")
    print("|---|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['peak_mib']:.0f} | {r['peak_mib'] / plain:.1f} |")


if __name__ == "__main__":
    main()
