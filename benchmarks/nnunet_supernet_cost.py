"""Per-iteration CPU cost of the nnU-Net supernet against plain nnU-Net training.

Arms (one after another, alternating which runs first in each round):

- ``plain``: one nnU-Net training iteration of the 2-D ``PlainConvUNet``
  (forward with deep supervision, summed loss over the heads, backward, SGD step);
- ``supernet``: one search iteration on the same network with a searchable cell
  in every skip (``SearchNetwork`` around ``IACPlainConvUNet``, frozen backbone,
  no deep supervision): the cell-weight step and the architecture step, as
  ``iac.nas.search.search_epoch`` runs them per batch pair.

Both use a cross-entropy loss on random data (the cost does not depend on the
values). Reports the median seconds per iteration of each arm and their ratio
per round.

    python benchmarks/nnunet_supernet_cost.py --rounds 3 --iters 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from iac.config import SearchConfig
from iac.nas.architect import Architect
from iac.nas.genotype import SearchSpace
from iac.nas.supernet import SearchNetwork
from iac.nnunet.network import IACPlainConvUNet


def network_kwargs(stages: int, base: int) -> dict:
    """A 2-D nnU-Net plan's PlainConvUNet arguments (features doubling up to 512)."""
    feats = [min(base * 2 ** s, 512) for s in range(stages)]
    return dict(input_channels=1, n_stages=stages, features_per_stage=feats, conv_op=nn.Conv2d,
                kernel_sizes=[[3, 3]] * stages, strides=[[1, 1]] + [[2, 2]] * (stages - 1),
                n_conv_per_stage=[2] * stages, num_classes=4, n_conv_per_stage_decoder=[2] * (stages - 1),
                conv_bias=True, norm_op=nn.InstanceNorm2d, norm_op_kwargs={"eps": 1e-5, "affine": True},
                nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stages", type=int, default=6)
    ap.add_argument("--base", type=int, default=32)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    kw = network_kwargs(args.stages, args.base)
    ce = nn.CrossEntropyLoss()
    x = torch.randn(args.batch, 1, args.patch, args.patch)
    y = torch.randint(0, 4, (args.batch, args.patch, args.patch))

    plain = IACPlainConvUNet(**kw, deep_supervision=True)  # identity skips: nnU-Net's network exactly
    p_opt = torch.optim.SGD(plain.parameters(), lr=1e-2, momentum=0.99, nesterov=True)

    def plain_iter() -> None:
        p_opt.zero_grad(set_to_none=True)
        outs = plain(x)
        loss = sum(ce(o, nn.functional.interpolate(y[:, None].float(), size=o.shape[2:], mode="nearest")[:, 0].long())
                   for o in outs)
        loss.backward()
        p_opt.step()

    cfg = SearchConfig()
    net = IACPlainConvUNet(**kw, deep_supervision=False)
    supernet = SearchNetwork(net, SearchSpace.from_config(cfg)).train()
    w_opt = torch.optim.AdamW(supernet.weight_parameters(), lr=cfg.w_lr, weight_decay=cfg.w_weight_decay)
    loss_fn = lambda logits, label: ce(logits, label)  # noqa: E731
    architect = Architect.from_config(supernet, loss_fn, cfg)

    def super_iter() -> None:
        w_opt.zero_grad(set_to_none=True)
        ce(supernet(x), y).backward()
        w_opt.step()
        architect.step(x, y)

    arms = {"plain": plain_iter, "supernet": super_iter}
    for fn in arms.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in arms}
    ratios = []
    for r in range(args.rounds):
        order = list(arms) if r % 2 == 0 else list(arms)[::-1]
        per = {}
        for name in order:
            t0 = time.perf_counter()
            for _ in range(args.iters):
                arms[name]()
            per[name] = (time.perf_counter() - t0) / args.iters
            times[name].append(per[name])
        ratios.append(per["supernet"] / per["plain"])
        print(f"round {r + 1}: plain {per['plain']:.3f} s/it, supernet {per['supernet']:.3f} s/it, "
              f"ratio {ratios[-1]:.2f} (first: {order[0]})")
    n_cells = sum(p.numel() for p in supernet.weight_parameters())
    print(f"network {kw['features_per_stage']}, patch {args.patch}x{args.patch}, batch {args.batch}, "
          f"{args.threads} threads; cell weights {n_cells}")
    print(f"median s/iteration: plain {statistics.median(times['plain']):.3f}, "
          f"supernet {statistics.median(times['supernet']):.3f}; ratio median {statistics.median(ratios):.2f} "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
