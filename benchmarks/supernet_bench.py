"""Cost of the search supernet against the plain U-Net (forward + backward per batch).

Measures, on the current device, the median time of one training step's
forward and backward pass for:

- ``plain``: the plain U-Net (all weights trained);
- ``supernet-all``: the same U-Net, frozen, with a search cell holding every
  operation at every skip level (what a search epoch runs);
- ``supernet-1op``: the supernet pruned to one operation per edge (the
  operations cycle through the non-``none`` candidates, so each kind appears);
- ``supernet-decided``: one operation per edge and ``steps_per_node`` edges per
  node, the state an IAC-LTH search ends in;
- ``supernet-all-autograd``: ``supernet-all`` with
  ``iac.nas.mixed_op.KEEP_INPUTS_ONLY`` off (autograd keeps every
  intermediate instead of making it again in the backward pass), the time
  that recomputation costs;

at every ``--sizes`` (default 32 and 64 px), with the arms interleaved (one
step of each per round, the order reversed every other round) so that the
ratios to ``plain`` come from one run under the same load. It then measures
what autograd saves for the backward pass of one step of each model (exact,
in process), and the peak memory of one step of ``plain``, ``supernet-all``
and ``supernet-1op`` at each size, each in a fresh process
(``benchmarks/search_memory.py``: growth of the peak resident set on CPU,
``torch.cuda.max_memory_allocated`` on a GPU), and prints one table.

Usage::

    python benchmarks/supernet_bench.py [--sizes 32 64] [--batch 16] [--k 4] [--profile] [--json out.json]

The figures in ``docs/benchmarks.md`` come from one thread on idle cores::

    python benchmarks/supernet_bench.py --threads 1 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from iac.config import SearchConfig
from iac.models import create_backbone
from iac.nas import SearchNetwork, SearchSpace, mixed_op

MEMORY_SCRIPT = Path(__file__).resolve().parent / "search_memory.py"


def step_time(model: torch.nn.Module, x: torch.Tensor, params: list[torch.nn.Parameter], repeats: int) -> float:
    """Median seconds of ``loss = model(x).mean(); loss.backward()``."""
    times = []
    for it in range(repeats + 2):  # two warm-up passes
        for p in params:
            p.grad = None
        t0 = time.perf_counter()
        model(x).float().mean().backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        if it >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build(args: argparse.Namespace, space: SearchSpace) -> tuple[torch.nn.Module, SearchNetwork]:
    torch.manual_seed(args.seed)
    plain = create_backbone(args.backbone, 1, args.classes, preset=args.preset)
    torch.manual_seed(args.seed)
    supernet = SearchNetwork(create_backbone(args.backbone, 1, args.classes, preset=args.preset), space)
    return plain, supernet


def prune_one_op(net: SearchNetwork, decide_edges: bool) -> None:
    """One operation per edge (cycling through the candidates); optionally fixed node inputs."""
    candidates = [op for op in net.space.ops if op != "none"]
    for arch in range(net.n_archs):
        for e in range(len(net.space.edges())):
            net.prune_ops(arch, e, [candidates[e % len(candidates)]])
        if decide_edges:
            for j in net.space.node_ids:
                net.prune_edges(arch, j, net.space.node_edges(j)[: net.space.steps_per_node])


def interleaved_times(models: dict[str, tuple[torch.nn.Module, list]], x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds of one step of each model, the arms interleaved (order reversed every other round)."""
    names = list(models)
    for name in names:  # two warm-up steps each
        for _ in range(2):
            models[name][0](x).float().mean().backward()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            model, params = models[name]
            for p in params:
                p.grad = None
            t0 = time.perf_counter()
            model(x).float().mean().backward()
            if x.is_cuda:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


class KeepAll(torch.nn.Module):
    """``net`` with ``iac.nas.mixed_op.KEEP_INPUTS_ONLY`` off during its forward pass (read there only)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        previous, mixed_op.KEEP_INPUTS_ONLY = mixed_op.KEEP_INPUTS_ONLY, False
        try:
            return self.net(x)
        finally:
            mixed_op.KEEP_INPUTS_ONLY = previous


def saved_mib(model: torch.nn.Module, x: torch.Tensor) -> float:
    """MiB of the distinct storages autograd saves for the backward pass of one step.

    What a step holds at the turn from forward to backward, counted exactly
    (whatever the allocator or the load), so it also resolves small inputs
    where the resident-set growth of ``search_memory.py`` is zero.
    """
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(x).float().mean()
    loss.backward()
    return sum(seen.values()) / 2**20


def peak_memory(size: int, args: argparse.Namespace) -> dict[str, float]:
    """Peak step memory (MiB) per variant of ``search_memory.py``, each in a fresh process."""
    out = {}
    for variant in ("plain", "supernet-all", "supernet-1op"):
        res = subprocess.run(
            [sys.executable, str(MEMORY_SCRIPT), "--child", variant, "--size", str(size), "--batch", str(args.batch),
             "--k", str(args.k), "--device", args.device],
            capture_output=True, text=True, check=True,
        )
        out[variant] = json.loads(res.stdout.strip().splitlines()[-1])["peak_mib"]
    return out


def main() -> None:
    defaults = SearchConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default=defaults.backbone.name)
    parser.add_argument("--preset", default=defaults.backbone.preset)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="square input sides")
    parser.add_argument("--batch", type=int, default=defaults.batch_size)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--k", type=int, default=defaults.k)
    parser.add_argument("--nodes", type=int, default=defaults.nodes)
    parser.add_argument("--cell-channels", type=int, default=defaults.cell_channels)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="intra-op CPU threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="print the top operators of the full supernet")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    space = SearchSpace.from_config(defaults)
    space = SearchSpace(**{**space.to_dict(), "k": args.k, "nodes": args.nodes, "cell_channels": args.cell_channels})
    device = torch.device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch} sizes={args.sizes} "
          f"repeats={args.repeats} space={space.to_dict()}")

    plain, supernet = build(args, space)
    models: dict[str, tuple[torch.nn.Module, list]] = {
        "plain": (plain, list(plain.parameters())),
        "supernet-all": (supernet, supernet.weight_parameters() + supernet.arch_parameters()),
    }
    counts = {"plain": sum(p.numel() for p in plain.parameters()), "supernet-all": supernet.param_count()}
    for label, decide in (("supernet-1op", False), ("supernet-decided", True)):
        _, pruned = build(args, space)
        prune_one_op(pruned, decide)
        models[label] = (pruned, pruned.weight_parameters() + pruned.arch_parameters())
        counts[label] = pruned.param_count()
    _, autograd_net = build(args, space)
    models["supernet-all-autograd"] = (KeepAll(autograd_net),
                                       autograd_net.weight_parameters() + autograd_net.arch_parameters())
    counts["supernet-all-autograd"] = autograd_net.param_count()
    for model, _ in models.values():
        model.to(device).train()

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        x = torch.randn(args.batch, 1, args.sizes[-1], args.sizes[-1], device=device)
        trainable = models["supernet-all"][1]
        step_time(supernet, x, trainable, 1)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            supernet(x).mean().backward()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))

    results = []
    for size in args.sizes:
        x = torch.randn(args.batch, 1, size, size, device=device)
        times = interleaved_times(models, x, args.repeats)
        saved = {name: saved_mib(model, x) for name, (model, _) in models.items()}
        memory = {} if args.no_memory else peak_memory(size, args)
        for name, seconds in times.items():
            row = {"size": size, "model": name, "ms": seconds * 1e3, "x_plain": seconds / times["plain"],
                   "params": counts[name], "saved_mib": saved[name], "x_plain_saved": saved[name] / saved["plain"],
                   "peak_mib": memory.get(name), "x_plain_peak": None}
            if row["peak_mib"] is not None and memory["plain"] > 0:  # 0: below the resident set's resolution
                row["x_plain_peak"] = row["peak_mib"] / memory["plain"]
            results.append(row)

    def num(v, fmt):
        return format(v, fmt) if v is not None else "-"

    print("| px | model | ms/batch | x plain | params | saved for backward MiB | x plain | peak step MiB | x plain |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['size']} | {r['model']} | {r['ms']:.1f} | {r['x_plain']:.2f} | {r['params']} | "
              f"{r['saved_mib']:.0f} | {r['x_plain_saved']:.2f} | {num(r['peak_mib'], '.0f')} | "
              f"{num(r['x_plain_peak'], '.2f')} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": results}, indent=2))


if __name__ == "__main__":
    main()
