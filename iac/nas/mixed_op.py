"""PC-DARTS partial-channel mixed operation of one edge.

Only ``C // k`` channels of the edge input go through the candidate
operations; the others bypass them, and a channel shuffle mixes the two parts
so that successive edges see different channels (PC-DARTS). The mixed op is
built from a mask, the tuple of surviving operation names: pruned operations
have no module and cost nothing. :meth:`MixedOp.keep` narrows the mask and
reuses the surviving modules, so their weights are kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from iac.nas.operations import (
    OPS,
    DilConv,
    Pool,
    SepConv,
    check_op_names,
    depthwise,
    depthwise2d_backward,
    depthwise2d_forward,
)

__all__ = ["MixedOp", "channel_shuffle", "batch_norm_group", "conv_norm", "source_node_outputs"]


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


def _stacked_stats(bns: Sequence[nn.Module]) -> tuple[torch.Tensor, torch.Tensor]:
    """The modules' running means and variances as one (n*c,) pair, a copy the training norm may update."""
    if len(bns) == 1:
        return bns[0].running_mean.clone(), bns[0].running_var.clone()
    return torch.cat([bn.running_mean for bn in bns]), torch.cat([bn.running_var for bn in bns])


@torch.no_grad()
def _store_stats(bns: Sequence[nn.Module], mean: torch.Tensor, var: torch.Tensor, shared: bool) -> None:
    """Write updated statistics back per module: ``shared``, one batch's (c,) statistics blended into every
    module with its momentum; otherwise each module's chunk of the (n*c,) running statistics, copied."""
    if shared:
        for bn in bns:
            bn.running_mean.mul_(1 - bn.momentum).add_(mean, alpha=bn.momentum)
            bn.running_var.mul_(1 - bn.momentum).add_(var, alpha=bn.momentum)
            bn.num_batches_tracked.add_(1)
        return
    for bn, m, v in zip(bns, mean.chunk(len(bns)), var.chunk(len(bns))):
        bn.running_mean.copy_(m)
        bn.running_var.copy_(v)
        bn.num_batches_tracked.add_(1)


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
        _store_stats(bns, mean, var, shared=True)
        return y
    if n == 1 and weight is None:
        return first(x)
    mean, var = _stacked_stats(bns)
    y = F.batch_norm(x, mean, var, weight, None, True, momentum, eps)
    _store_stats(bns, mean, var, shared=False)
    return y


def _grouped_dw(x: torch.Tensor, dws: Sequence[nn.Module], shared: bool = False) -> torch.Tensor:
    """Per group ``g`` of ``c`` channels of ``x`` (B, n*c, *S): ``dws[g](x_g)``, concatenated: (B, n*c, *S).

    With ``shared``, ``x`` is (B, c, *S), the same input for every group.
    """
    n = len(dws)
    dw = dws[0]
    w = torch.cat([m.weight for m in dws]) if n > 1 else dw.weight
    return depthwise(x, w, dw.padding[0], dw.dilation[0], repeats=n if shared else 1)


def _grouped_pw(h: torch.Tensor, pw: torch.Tensor) -> torch.Tensor:
    """Per group ``g`` of ``h`` (B, n*c, *S): the 1x1 conv ``pw[g]`` (n, c, c), as one batched product."""
    b, spatial = h.shape[0], h.shape[2:]
    n = pw.shape[0]
    y = torch.einsum("eoi,bein->beon", pw, h.reshape(b, n, pw.shape[2], -1))
    return y.reshape(b, n * pw.shape[1], *spatial)


# Memory against time (training mode). KEEP_INPUTS_ONLY: the conv, pool and projection stages keep only
# their inputs for the backward pass and make the rest again there (_ConvNorm, _PoolNorm); about a third of
# the activations of the separate calls, for about 15 % more step time (provisional, docs/benchmarks.md).
# RECOMPUTE_DEPTHWISE (with it): the depthwise outputs are made again too instead of kept (no measurable
# extra time). Both change memory and time only, not the result beyond float rounding.
KEEP_INPUTS_ONLY = True
RECOMPUTE_DEPTHWISE = True


@contextlib.contextmanager
def keep_inputs_only(enabled: bool) -> Iterator[None]:
    """Within the block, the search cells' stages keep only their inputs for the backward pass (or not).

    The search's ``recompute_backward`` setting: read when a forward pass
    builds its graph, so the backward pass of that graph follows it too.
    """
    global KEEP_INPUTS_ONLY
    previous, KEEP_INPUTS_ONLY = KEEP_INPUTS_ONLY, bool(enabled)
    try:
        yield
    finally:
        KEEP_INPUTS_ONLY = previous


class _ConvNorm(torch.autograd.Function):
    """[2-D depthwise conv ->] grouped 1x1 conv -> batch-statistics norm (optional per-channel scale) [-> ReLU].

    The same computation as :func:`_grouped_dw`, :func:`_grouped_pw`,
    :func:`batch_norm_group` and ``torch.relu`` in a row, but only the
    input is kept for the backward pass: the depthwise conv's output (the 1x1
    conv's input) and the 1x1 conv's output (the norm's input) are made again
    there, and the ReLU's mask from them. Autograd would keep both, and with
    the ReLU also its output: per separable conv one activation is kept
    instead of five (its second stage's input), per dilated conv none
    instead of two (the input is the node's shared ReLU). The price is one
    more depthwise conv and 1x1 product per stage in the backward pass.

    Without a depthwise weight the input is the 1x1 conv's input. Training
    mode only (batch statistics); the running statistics ``mean`` and
    ``var`` (concatenated buffers) are updated in place in the forward pass,
    as ``F.batch_norm`` does.
    """

    @staticmethod
    def forward(ctx, x, dw, pw, weight, mean, var, momentum: float, eps: float, relu: bool,
                padding: int, dilation: int, repeats: int):
        h = x if dw is None else depthwise2d_forward(x, dw, padding, dilation, repeats)  # (B, n*c, *S)
        p = _grouped_pw(h, pw)
        del h
        y, save_mean, save_invstd = torch.ops.aten.native_batch_norm(p, weight, None, mean, var, True, momentum, eps)
        del p
        if relu:
            y = torch.relu_(y)
        ctx.save_for_backward(x, dw, pw, weight, save_mean, save_invstd)
        ctx.eps, ctx.relu, ctx.has_weight = eps, relu, weight is not None
        ctx.padding, ctx.dilation, ctx.repeats = padding, dilation, repeats
        return y

    @staticmethod
    def backward(ctx, grad):
        x, dw, pw, weight, save_mean, save_invstd = ctx.saved_tensors
        need_x, need_dw, need_pw, need_weight = ctx.needs_input_grad[:4]
        with torch.no_grad():
            h = x if dw is None else depthwise2d_forward(x, dw, ctx.padding, ctx.dilation, ctx.repeats)
            p = _grouped_pw(h, pw)  # made again: (B, n*c, *S)
            if ctx.relu:  # the output was relu(norm(p)): pass the gradient where norm(p) > 0
                shape = (1, -1) + (1,) * (p.dim() - 2)
                pre = (p - save_mean.view(shape)) * save_invstd.view(shape)
                if weight is not None:
                    pre = pre * weight.view(shape)
                grad = grad * (pre > 0)
                del pre
            grad_p, grad_weight, _ = torch.ops.aten.native_batch_norm_backward(
                grad.contiguous(), p, weight, None, None, save_mean, save_invstd, True, ctx.eps,
                [True, ctx.has_weight and need_weight, False],
            )
            del p, grad
            b, n, c = h.shape[0], pw.shape[0], pw.shape[2]
            gp = grad_p.reshape(b, n, pw.shape[1], -1)
            grad_pw = torch.einsum("beon,bein->eoi", gp, h.reshape(b, n, c, -1)) if need_pw else None
            del h
            grad_h = None
            if need_x or need_dw:
                grad_h = torch.einsum("eoi,beon->bein", pw, gp).reshape(b, n * c, *grad_p.shape[2:])
            del gp, grad_p
            grad_x = grad_dw = None
            if dw is None:
                grad_x = grad_h
            elif need_x or need_dw:
                grad_x, grad_dw = depthwise2d_backward(
                    x, dw, grad_h, ctx.padding, ctx.dilation, ctx.repeats, need_x, need_dw
                )
        return (grad_x, grad_dw, grad_pw, grad_weight if need_weight else None,
                None, None, None, None, None, None, None, None)


def conv_norm(
    x: torch.Tensor,
    dws: Sequence[nn.Module] | None,
    pws: Sequence[nn.Module],
    bns: Sequence[nn.Module],
    scale: torch.Tensor | None = None,
    relu: bool = False,
    shared: bool = False,
) -> torch.Tensor:
    """``relu?(batch_norm_group(pw(dw(x)), bns, scale=scale))`` per group of channels: (B, n*c, *S).

    Args:
        x: (B, n*c, *S), or with ``shared`` (B, c, *S) for every group.
        dws: the groups' depthwise convs, or None (no depthwise conv).
        pws: the groups' 1x1 convs (c_in -> c_out channels each).
        bns: the groups' non-affine norms.
        scale: optional (n,) factors, as in :func:`batch_norm_group`.
        relu: end with a ReLU.
        shared: ``x`` is one group's input, given to every group.

    In training mode with batch statistics, without autocast, on 2-D inputs,
    it runs as :class:`_ConvNorm` (only ``x`` is kept for the backward
    pass); otherwise as the separate calls. Same result up to float rounding.
    """
    n = len(pws)
    pw = torch.stack([m.weight.flatten(1) for m in pws])  # (n, c_out, c_in)
    first = bns[0]
    fused = (
        KEEP_INPUTS_ONLY
        and first.training
        and _shared_norm_ok(bns)
        and not torch.is_autocast_enabled(x.device.type)
        and x.dtype == first.running_mean.dtype
        and (dws is None or x.dim() == 4)
    )
    if not fused:
        h = x if dws is None else _grouped_dw(x, dws, shared)
        y = batch_norm_group(_grouped_pw(h, pw), bns, scale=scale)
        return torch.relu(y) if relu else y
    if dws is not None and not RECOMPUTE_DEPTHWISE:  # keep the depthwise output instead of making it again
        x, dws, shared = _grouped_dw(x, dws, shared), None, False
    dw_w, padding, dilation = None, 0, 1
    if dws is not None:
        dw_w = torch.cat([m.weight for m in dws]) if n > 1 else dws[0].weight
        padding, dilation = dws[0].padding[0], dws[0].dilation[0]
    repeats = n if shared and dws is not None else 1
    c_out = pw.shape[1]
    weight = None
    if scale is not None:  # (n,) -> (n*c,): one factor per channel of its module
        weight = scale.to(first.running_mean.dtype).repeat_interleave(c_out)
    mean, var = _stacked_stats(bns)
    y = _ConvNorm.apply(x, dw_w, pw, weight, mean, var, first.momentum, first.eps, relu, padding, dilation, repeats)
    _store_stats(bns, mean, var, shared=False)
    return y


class _PoolNorm(torch.autograd.Function):
    """``coef[e] * norm(pool(x))`` for every edge ``e`` of a node: (B, c, *S) -> (B, n, c, *S).

    One pooling and one batch-statistics norm shared by the node's edges
    (with batch statistics every edge's norm gives the same output), weighted
    per edge. Only ``x`` (a slice of the node's state, kept anyway) is kept
    for the backward pass: the pooled tensor, and for max pooling its argmax
    indices, are made again there. Autograd would keep the pooled tensor,
    the max pooling's input copy and indices, and the norm's output for the
    weights' gradient.
    """

    @staticmethod
    def forward(ctx, x, coef, mean, var, pool: nn.Module, eps: float):
        pooled = pool.pooled(x)
        # momentum 1: `mean` and `var` receive this batch's mean and unbiased variance.
        y, save_mean, save_invstd = torch.ops.aten.native_batch_norm(pooled, None, None, mean, var, True, 1.0, eps)
        del pooled
        ctx.save_for_backward(x, coef, save_mean, save_invstd)
        ctx.pool, ctx.eps = pool, eps
        out = coef.view(1, -1, *([1] * (y.dim() - 1))) * y.unsqueeze(1)  # (B, n, c, *S)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, coef, save_mean, save_invstd = ctx.saved_tensors
        with torch.enable_grad():
            xd = x.detach().requires_grad_(ctx.needs_input_grad[0])
            pooled = ctx.pool.pooled(xd)  # made again
        with torch.no_grad():
            shape = (1, -1) + (1,) * (pooled.dim() - 2)
            y = (pooled.detach() - save_mean.view(shape)) * save_invstd.view(shape)  # (B, c, *S)
            grad_coef = None
            if ctx.needs_input_grad[1]:
                grad_coef = (grad * y.unsqueeze(1)).transpose(0, 1).reshape(grad.shape[1], -1).sum(1)
            del y
            grad_y = torch.einsum("e,be...->b...", coef.to(grad.dtype), grad)
        grad_x = None
        if ctx.needs_input_grad[0]:
            with torch.no_grad():
                grad_pooled, _, _ = torch.ops.aten.native_batch_norm_backward(
                    grad_y.contiguous(), pooled.detach(), None, None, None, save_mean, save_invstd, True, ctx.eps,
                    [True, False, False],
                )
            (grad_x,) = torch.autograd.grad(pooled, xd, grad_pooled)
        return grad_x, grad_coef, None, None, None, None


def _pool_norm(xs: torch.Tensor, pool: Pool, bns: Sequence[nn.Module], coef: torch.Tensor) -> torch.Tensor | None:
    """``coef[e] * bns[e](pool.pooled(xs))`` per edge as one :class:`_PoolNorm`: (B, n, c, *S).

    None where it does not apply (evaluation mode, autocast, unusual norm
    settings); the caller then takes the separate calls.
    """
    first = bns[0]
    if not (
        KEEP_INPUTS_ONLY
        and first.training
        and _shared_norm_ok(bns)
        and not torch.is_autocast_enabled(xs.device.type)
        and xs.dtype == first.running_mean.dtype == coef.dtype
    ):
        return None
    c = xs.shape[1]
    mean = torch.zeros(c, dtype=xs.dtype, device=xs.device)
    var = torch.ones(c, dtype=xs.dtype, device=xs.device)
    term = _PoolNorm.apply(xs, coef, mean, var, pool, first.eps)
    _store_stats(bns, mean, var, shared=True)
    return term


def _conv_ops(r: torch.Tensor, ops: Sequence[nn.Module], scale: torch.Tensor | None = None) -> torch.Tensor:
    """``scale[m] * ops[m].forward_activated(r)`` of every op (all SepConv or all DilConv of one size): (B, n*c, *S).

    Each op ends in a non-affine norm, so its weight ``scale[m]`` (None: 1)
    is that norm's affine scale (:func:`batch_norm_group`). Each depthwise
    and 1x1 conv pair runs together with the norm after it (:func:`conv_norm`).
    """
    if isinstance(ops[0], SepConv):
        h = conv_norm(r, [op.dw1 for op in ops], [op.pw1 for op in ops], [op.bn1 for op in ops],
                       relu=True, shared=True)
        return conv_norm(h, [op.dw2 for op in ops], [op.pw2 for op in ops], [op.bn2 for op in ops], scale=scale)
    return conv_norm(r, [op.dw for op in ops], [op.pw for op in ops], [op.bn for op in ops], scale=scale, shared=True)


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
        elif isinstance(mods[0], Pool) and (y := _pool_norm(xs, mods[0], [op.bn for op in mods], coef)) is not None:
            coef = None  # weighted already: (B, len(idx), c, *S)
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
