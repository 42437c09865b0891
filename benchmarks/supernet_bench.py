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

and prints each one's parameter count and its ratio to ``plain``.

Usage::

    python benchmarks/supernet_bench.py [--size 64] [--batch 16] [--k 4] [--profile]

On shared CPU cores, pin one thread and repeat the run (take the median)::

    python benchmarks/supernet_bench.py --threads 1 --repeats 5 --size 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from iac.config import SearchConfig
from iac.models import create_backbone
from iac.nas import SearchNetwork, SearchSpace


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


def main() -> None:
    defaults = SearchConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", default=defaults.backbone.name)
    parser.add_argument("--preset", default=defaults.backbone.preset)
    parser.add_argument("--size", type=int, default=64, help="square input side")
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
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    space = SearchSpace.from_config(defaults)
    space = SearchSpace(**{**space.to_dict(), "k": args.k, "nodes": args.nodes, "cell_channels": args.cell_channels})
    device = torch.device(args.device)
    x = torch.randn(args.batch, 1, args.size, args.size, device=device)
    print(f"device={device} threads={torch.get_num_threads()} input={tuple(x.shape)} space={space.to_dict()}")

    plain, supernet = build(args, space)
    plain.to(device).train()
    supernet.to(device).train()
    rows = [("plain", plain, list(plain.parameters()), sum(p.numel() for p in plain.parameters()))]
    trainable = supernet.weight_parameters() + supernet.arch_parameters()
    rows.append(("supernet-all", supernet, trainable, supernet.param_count()))

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        step_time(supernet, x, trainable, 1)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            supernet(x).mean().backward()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))

    results = {}
    for name, model, params, count in rows:
        results[name] = (step_time(model, x, params, args.repeats), count)
    for label, decide in (("supernet-1op", False), ("supernet-decided", True)):
        _, pruned = build(args, space)
        prune_one_op(pruned, decide)
        pruned.to(device).train()
        params = pruned.weight_parameters() + pruned.arch_parameters()
        results[label] = (step_time(pruned, x, params, args.repeats), pruned.param_count())

    base = results["plain"][0]
    print(f"{'model':<18}{'ms/batch':>10}{'x plain':>9}{'params':>10}")
    for name, (seconds, count) in results.items():
        print(f"{name:<18}{seconds * 1e3:>10.1f}{seconds / base:>9.2f}{count:>10d}")


if __name__ == "__main__":
    main()
