"""PC-DARTS partial-channel mixed operation of one edge.

Only ``C // k`` channels of the edge input go through the candidate
operations; the others bypass them, and a channel shuffle mixes the two parts
so that successive edges see different channels (PC-DARTS). The mixed op is
built from a mask, the tuple of surviving operation names: pruned operations
have no module and cost nothing. :meth:`MixedOp.keep` narrows the mask and
reuses the surviving modules, so their weights are kept.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from iac.nas.operations import OPS, DilConv, Pool, SepConv, check_op_names

__all__ = ["MixedOp", "channel_shuffle"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` equal channel groups: (B, g*c, *S) -> (B, c*g, *S)."""
    if groups == 1:
        return x
    b, c = x.shape[:2]
    spatial = x.shape[2:]
    x = x.view(b, groups, c // groups, *spatial).transpose(1, 2)
    return x.reshape(b, c, *spatial)


class MixedOp(nn.Module):
    """Weighted sum of the surviving candidate operations on a channel slice.

    Args:
        C: channels of the edge input (the cell width).
        op_names: surviving operations, a subset of :data:`OPS` in the search
            space's canonical order; ``weights`` in :meth:`forward` follow it.
        k: PC-DARTS partial-channel ratio; ``C`` must be divisible by it.
        spatial_dims: 2 for slices, 3 for volumes.
    """

    def __init__(self, C: int, op_names: Sequence[str], k: int, spatial_dims: int = 2):
        super().__init__()
        if k < 1 or C % k:
            raise ValueError(f"cell width C={C} is not divisible by the partial-channel ratio k={k}")
        self.C = C
        self.k = k
        self.spatial_dims = spatial_dims
        self.op_names = check_op_names(op_names, "MixedOp op_names")
        self.ops = nn.ModuleDict({name: OPS[name](C // k, spatial_dims) for name in self.op_names})

    def keep(self, op_names: Sequence[str]) -> "MixedOp":
        """A mixed op with only ``op_names``, sharing this one's op modules.

        Names keep this op's order whatever order they are given in.

        Raises:
            ValueError: a name is not among the current operations, or none is given.
        """
        wanted = set(check_op_names(op_names, "keep"))
        missing = wanted.difference(self.op_names)
        if missing:
            raise ValueError(f"cannot keep {sorted(missing)}: this edge only has {list(self.op_names)}")
        kept = tuple(n for n in self.op_names if n in wanted)
        new = MixedOp.__new__(MixedOp)
        nn.Module.__init__(new)
        new.C, new.k, new.spatial_dims, new.op_names = self.C, self.k, self.spatial_dims, kept
        new.ops = nn.ModuleDict({n: self.ops[n] for n in kept})
        new.train(self.training)
        return new

    def forward(self, x: torch.Tensor, weights: torch.Tensor, memo: dict | None = None) -> torch.Tensor:
        """Mix the operations on the first ``C // k`` channels.

        Args:
            x: (B, C, *S) edge input.
            weights: (len(op_names),) operation weights, softmax(alpha) over the
                surviving operations.
            memo: optional dict shared by the edges leaving the same node: the
                parameter-free parts every edge computes identically from the
                same channel slice (the convs' leading ReLU, the raw pools)
                are computed once and reused. The result is the same.

        Returns:
            (B, C, *S): shuffled concatenation of the mixed slice and the bypass.
        """
        if weights.shape != (len(self.op_names),):
            raise ValueError(
                f"weights of shape {tuple(weights.shape)} do not fit the {len(self.op_names)} operations "
                f"{list(self.op_names)}"
            )
        memo = {} if memo is None else memo
        c = self.C // self.k
        xs = x[:, :c]  # (B, C/k, *S) through the operations
        out = None
        for i, name in enumerate(self.op_names):
            if name == "none":  # zeros: adds nothing, and its weight gets no gradient from it
                continue
            op = self.ops[name]
            if isinstance(op, (SepConv, DilConv)):
                if "relu" not in memo:
                    memo["relu"] = torch.relu(xs)
                y = op.forward_activated(memo["relu"])
            elif isinstance(op, Pool):
                if name not in memo:
                    memo[name] = op.pool(xs)
                y = op.bn(memo[name])
            else:
                y = op(xs)
            y = weights[i] * y
            out = y if out is None else out + y
        if out is None:  # only `none` survives
            out = torch.zeros_like(xs)
        if self.k == 1:
            return out
        return channel_shuffle(torch.cat([out, x[:, c:]], dim=1), self.k)
