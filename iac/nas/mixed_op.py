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
import torch.nn.functional as F
from torch import nn

from iac.nas.operations import OPS, DilConv, Pool, SepConv, check_op_names, depthwise

__all__ = ["MixedOp", "channel_shuffle", "batch_norm_group", "source_node_outputs"]


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
                    memo[name] = op.pooled(xs)
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


# Batched evaluation of all edges leaving one node ---------------------------------
#
# The edges leaving a node all read the same channel slice. In
# :func:`source_node_outputs` every operation kind is evaluated once for all
# those edges together: the depthwise convs of the edges as one grouped conv
# (the edges' channels concatenated), the pointwise convs as one batched
# matrix product, the norms as one norm over the concatenated channels (a
# non-affine BatchNorm normalises each channel on its own, so this is the
# same as one norm per edge; running statistics are written back to each
# edge's module). A pooling op's norm sees the same input on every edge, so
# with batch statistics (training) its output is the same on every edge and is
# computed once. The result equals the per-edge :meth:`MixedOp.forward` up to
# float rounding, with the same parameters and buffers.


def _shared_norm_ok(bns: Sequence[nn.Module]) -> bool:
    first = bns[0]
    return all(
        isinstance(bn, nn.modules.batchnorm._BatchNorm)
        and not bn.affine
        and bn.track_running_stats
        and bn.running_mean is not None
        and bn.momentum is not None
        and bn.momentum == first.momentum
        and bn.eps == first.eps
        and bn.training == first.training
        for bn in bns
    )


def batch_norm_group(
    x: torch.Tensor, bns: Sequence[nn.Module], shared: bool = False, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply non-affine BatchNorms ``bns`` (each over ``c`` channels) at once.

    Args:
        x: (B, n*c, *S) with module ``m`` owning channels ``[m*c, (m+1)*c)``;
            with ``shared``, (B, c, *S) given to every module.
        bns: the modules; their running statistics are updated as if each had
            been called on its own input.
        shared: every module normalises the same ``x``.
        scale: optional (n,) factors, module ``m``'s output times ``scale[m]``
            (not with ``shared``). They are the norm's affine weight in one
            call, so the product is neither a separate pass nor a saved
            tensor; equal to ``scale[m] * bn_m(x_m)`` up to float rounding.

    Returns:
        (B, n*c, *S); with ``shared`` in training mode (batch statistics, the
        same output for every module) just (B, c, *S).
    """
    n = len(bns)
    if shared and scale is not None:
        raise ValueError("batch_norm_group: `scale` applies to separate inputs, not a shared one")
    if not _shared_norm_ok(bns):  # unusual settings: one call per module
        parts = [x] * n if shared else x.chunk(n, dim=1)
        if scale is not None:
            return torch.cat([scale[m] * bn(part) for m, (bn, part) in enumerate(zip(bns, parts))], dim=1)
        return torch.cat([bn(part) for bn, part in zip(bns, parts)], dim=1)
    first = bns[0]
    momentum, eps = first.momentum, first.eps
    weight = None
    if scale is not None:  # (n,) -> (n*c,): one factor per channel of its module
        weight = scale.to(first.running_mean.dtype).repeat_interleave(x.shape[1] // n)
    if not first.training:  # running statistics, per module
        if shared and n > 1:
            x = x.repeat(1, n, *([1] * (x.dim() - 2)))
        mean = torch.cat([bn.running_mean for bn in bns]) if n > 1 else first.running_mean
        var = torch.cat([bn.running_var for bn in bns]) if n > 1 else first.running_var
        return F.batch_norm(x, mean, var, weight, None, False, 0.0, eps)
    if shared:
        c = x.shape[1]
        # momentum 1: the buffers receive this batch's mean and unbiased variance.
        mean = torch.zeros(c, dtype=first.running_mean.dtype, device=x.device)
        var = torch.ones(c, dtype=first.running_var.dtype, device=x.device)
        y = F.batch_norm(x, mean, var, None, None, True, 1.0, eps)
        with torch.no_grad():
            for bn in bns:
                bn.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
                bn.running_var.mul_(1 - momentum).add_(var, alpha=momentum)
                bn.num_batches_tracked.add_(1)
        return y
    if n == 1 and weight is None:
        return first(x)
    mean = torch.cat([bn.running_mean for bn in bns]) if n > 1 else first.running_mean.clone()
    var = torch.cat([bn.running_var for bn in bns]) if n > 1 else first.running_var.clone()
    y = F.batch_norm(x, mean, var, weight, None, True, momentum, eps)
    with torch.no_grad():
        for bn, m, v in zip(bns, mean.chunk(n), var.chunk(n)):
            bn.running_mean.copy_(m)
            bn.running_var.copy_(v)
            bn.num_batches_tracked.add_(1)
    return y


def _grouped_dw_pw(
    x: torch.Tensor, dws: Sequence[nn.Module], pws: Sequence[nn.Module], shared: bool = False
) -> torch.Tensor:
    """Per group ``g`` of ``c`` channels of ``x`` (B, n*c, *S): ``pws[g](dws[g](x_g))``, concatenated.

    With ``shared``, ``x`` is (B, c, *S), the same input for every group.
    """
    n = len(dws)
    dw = dws[0]
    w = torch.cat([m.weight for m in dws]) if n > 1 else dw.weight
    h = depthwise(x, w, dw.padding[0], dw.dilation[0], repeats=n if shared else 1)  # (B, n*c, *S)
    b, spatial = h.shape[0], h.shape[2:]
    pw = torch.stack([m.weight.flatten(1) for m in pws])  # (n, c, c)
    h = torch.einsum("eoi,bein->beon", pw, h.reshape(b, n, pw.shape[2], -1))
    return h.reshape(b, n * pw.shape[1], *spatial)


def _conv_ops(r: torch.Tensor, ops: Sequence[nn.Module], scale: torch.Tensor | None = None) -> torch.Tensor:
    """``scale[m] * ops[m].forward_activated(r)`` of every op (all SepConv or all DilConv of one size): (B, n*c, *S).

    Each op ends in a non-affine norm, so its weight ``scale[m]`` (None: 1)
    is that norm's affine scale (:func:`batch_norm_group`).
    """
    if isinstance(ops[0], SepConv):
        h = _grouped_dw_pw(r, [op.dw1 for op in ops], [op.pw1 for op in ops], shared=True)
        h = torch.relu(batch_norm_group(h, [op.bn1 for op in ops]))
        h = _grouped_dw_pw(h, [op.dw2 for op in ops], [op.pw2 for op in ops])
        return batch_norm_group(h, [op.bn2 for op in ops], scale=scale)
    h = _grouped_dw_pw(r, [op.dw for op in ops], [op.pw for op in ops], shared=True)
    return batch_norm_group(h, [op.bn for op in ops], scale=scale)


def source_node_outputs(
    x: torch.Tensor, edges: Sequence[tuple["MixedOp", torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """The weighted mixed slices of all edges leaving one node, without bypass and shuffle.

    Args:
        x: (B, C, *S) the source node's feature.
        edges: per outgoing edge ``(mixed_op, op_weights, edge_weight)``; all
            mixed ops share ``C`` and ``k``.

    Returns:
        (B, n_edges, C // k, *S): for edge ``e``, ``edge_weight * sum_o
        op_weights[o] * op_o(x[:, :C // k])``, i.e. the first ``C // k``
        channels of ``edge_weight * mixed_op(x, op_weights)`` before the
        channel shuffle (the bypass part is ``edge_weight * x[:, C // k:]``).
    """
    first = edges[0][0]
    c = first.C // first.k
    xs = x[:, :c]
    n = len(edges)
    for mixed, w, _ in edges:
        if w.shape != (len(mixed.op_names),):
            raise ValueError(
                f"weights of shape {tuple(w.shape)} do not fit the {len(mixed.op_names)} operations "
                f"{list(mixed.op_names)}"
            )
    names = [name for name in OPS if name != "none" and any(name in m.op_names for m, _, _ in edges)]
    relu = None
    out = None
    for name in names:
        idx = [e for e, (m, _, _) in enumerate(edges) if name in m.op_names]
        mods = [edges[e][0].ops[name] for e in idx]
        coef = torch.stack([edges[e][2] * edges[e][1][edges[e][0].op_names.index(name)] for e in idx])
        if name == "skip_connect":
            y = xs.unsqueeze(1)  # (B, 1, c, *S), the same for every edge
        elif isinstance(mods[0], Pool):
            y = batch_norm_group(mods[0].pooled(xs), [op.bn for op in mods], shared=True)
            y = y.unflatten(1, (-1, c))  # (B, 1 or len(idx), c, *S)
        elif isinstance(mods[0], (SepConv, DilConv)):
            if relu is None:
                relu = torch.relu(xs)
            y = _conv_ops(relu, mods, scale=coef).unflatten(1, (len(idx), c))  # weighted already
            coef = None
        else:  # an operation without a batched form
            y = torch.stack([op(xs) for op in mods], dim=1)
        term = y if coef is None else coef.view(1, -1, *([1] * (y.dim() - 2))) * y  # (B, len(idx), c, *S)
        if len(idx) == n:
            # In place: `out` is a sum no backward reads (norm outputs and products are not saved).
            out = term if out is None else out.add_(term)
        else:
            if out is None:  # in the terms' dtype: under autocast it may differ from the input's
                out = term.new_zeros((xs.shape[0], n, *xs.shape[1:]))
            out = out.index_add(1, torch.tensor(idx, device=x.device), term.to(out.dtype))
    if out is None:  # only `none` survives on every edge
        out = xs.new_zeros((xs.shape[0], n, *xs.shape[1:]))
    return out
