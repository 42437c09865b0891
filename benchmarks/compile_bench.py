"""Is compiling the search cells worth it? Compile time per pruning event against the step time saved.

For the benchmark configuration (the default search space, batch 16, one
input size) it measures, in one process:

- the eager step (forward + backward of the supernet, median of ``--repeats``);
- the first compiled step (compile + step) and the compiled step, for the
  full supernet and again after one pruning event (one operation per edge:
  the cells' modules change, so the compiled code is made again);
- per state: compile time = first compiled step - compiled step, the saving
  per step = eager - compiled, and the break-even number of epochs =
  compile time / (saving per step x ``--steps-per-epoch``), i.e. how many
  search epochs between two pruning events repay one compilation (none when
  the compiled step is not faster).

Usage (idle cores; the figures go to ``docs/benchmarks.md``)::

    python benchmarks/compile_bench.py --threads 1 --size 64 --repeats 5 [--steps-per-epoch 20] [--json out.json]

It exits with a message where no compiler works here
(:func:`iac.nas.compiled.compiler_available`).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iac.config import SearchConfig
from iac.models import create_backbone
from iac.nas import SearchNetwork, SearchSpace
from iac.nas.compiled import compile_cells, compiler_available


def _step(model: torch.nn.Module, x: torch.Tensor) -> float:
    for p in model.parameters():
        p.grad = None
    t0 = time.perf_counter()
    model(x).float().mean().backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def _prune_one_op(net: SearchNetwork) -> None:
    candidates = [op for op in net.space.ops if op != "none"]
    for arch in range(net.n_archs):
        for e in range(len(net.space.edges())):
            net.prune_ops(arch, e, [candidates[e % len(candidates)]])


def measure(eager: SearchNetwork, compiled: SearchNetwork, x: torch.Tensor, repeats: int, steps: int) -> dict:
    """Eager and compiled step times of two copies of one network, and the compile cost."""
    _step(eager, x)  # warm-up
    first = _step(compiled, x)  # compiles
    _step(compiled, x)
    t_eager, t_comp = [], []
    for r in range(repeats):  # interleaved, the order reversed every other round
        pair = [(eager, t_eager), (compiled, t_comp)]
        for model, out in pair if r % 2 == 0 else pair[::-1]:
            out.append(_step(model, x))
    e, c = statistics.median(t_eager), statistics.median(t_comp)
    compile_s = max(first - c, 0.0)
    saving = e - c
    return {
        "eager_s": e,
        "compiled_s": c,
        "first_compiled_step_s": first,
        "compile_s": compile_s,
        "saving_per_step_s": saving,
        "break_even_epochs": compile_s / (saving * steps) if saving > 0 else None,
    }


def main() -> None:
    defaults = SearchConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64, help="square input side")
    parser.add_argument("--batch", type=int, default=defaults.batch_size)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps-per-epoch", type=int, default=20, help="weight+architecture steps of one search epoch")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ok, reason = compiler_available(args.device)
    if not ok:
        sys.exit(f"compile_bench: {reason}")
    device = torch.device(args.device)
    torch.manual_seed(0)
    space = SearchSpace.from_config(defaults)
    eager = SearchNetwork(create_backbone(defaults.backbone.name, 1, 4, preset=defaults.backbone.preset), space)
    eager = eager.to(device).train()
    compiled = copy.deepcopy(eager)
    compile_cells(compiled)
    x = torch.randn(args.batch, 1, args.size, args.size, device=device)
    print(f"device={device} threads={torch.get_num_threads()} batch={args.batch} size={args.size} "
          f"repeats={args.repeats} steps/epoch={args.steps_per_epoch}")
    rows = {"all ops": measure(eager, compiled, x, args.repeats, args.steps_per_epoch)}
    for net in (eager, compiled):  # a pruning event: the compiled cells are compiled again
        _prune_one_op(net)
    rows["one op per edge (after a pruning event)"] = measure(eager, compiled, x, args.repeats, args.steps_per_epoch)
    print("| state | eager s/step | compiled s/step | compile s | saved s/step | break-even epochs |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        be = "never" if r["break_even_epochs"] is None else f"{r['break_even_epochs']:.1f}"
        print(f"| {name} | {r['eager_s']:.3f} | {r['compiled_s']:.3f} | {r['compile_s']:.1f} | "
              f"{r['saving_per_step_s']:.3f} | {be} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
