"""Candidate operations of the IAC search space (DARTS names).

Every operation maps ``C`` channels to ``C`` channels at the same resolution
(stride 1), so any of them can sit on any edge of a cell. ``OPS[name](C,
spatial_dims)`` builds one; ``spatial_dims`` picks the 1-, 2- or 3-D conv,
pool and norm classes, so the same cell works on slices and volumes.

Normalisation is ``BatchNorm`` with ``affine=False`` inside the operations, as
in DARTS: the architecture weights scale each operation's output, and a learnt
affine would compete with them. Pooling operations are followed by the same
norm (DARTS adds it in the mixed op; here it belongs to the operation, so the
discrete cell gets it too).

The sub-modules carry fixed names (``dw1``, ``pw1``, ``bn1``, ...) so that the
mixed op can evaluate several operations of one edge together
(:mod:`iac.nas.mixed_op`) while each operation keeps its own parameters.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "OPS",
    "Zero",
    "Pool",
    "SepConv",
    "DilConv",
    "conv_class",
    "norm_class",
    "check_op_names",
    "depthwise",
    "depthwise2d_forward",
    "depthwise2d_backward",
    "depthwise_conv",
    "pointwise_conv",
]

# Dilation of the ``dil_conv_*`` operations (DARTS).
DIL_CONV_DILATION = 2
# Pooling window of the ``*_pool_3x3`` operations.
POOL_SIZE = 3

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_AVGPOOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}


def _check_dims(spatial_dims: int) -> int:
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims={spatial_dims!r} is not supported; use one of {sorted(_CONV)}")
    return spatial_dims


def conv_class(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv1d/2d/3d`` for ``spatial_dims``."""
    return _CONV[_check_dims(spatial_dims)]


def norm_class(spatial_dims: int) -> type[nn.Module]:
    """``nn.BatchNorm1d/2d/3d`` for ``spatial_dims``."""
    return _BN[_check_dims(spatial_dims)]


def _norm(C: int, spatial_dims: int) -> nn.Module:
    return norm_class(spatial_dims)(C, affine=False)


# Tensor rank -> channels-last memory format.
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def _dw_layout(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``x`` in the layout oneDNN runs a 2-D depthwise conv fastest in on CPU, for few channels.

    Measured (AVX2, 4-16 channels): 3x3 kernels (dilated or not) run about
    twice as fast channels-last, 5x5 kernels slightly faster in the default
    layout. Only speed depends on this choice.
    """
    if kernel_size <= 3:
        return x.contiguous(memory_format=torch.channels_last)
    return x.contiguous()


def depthwise2d_forward(x: torch.Tensor, weight: torch.Tensor, padding: int, dilation: int,
                        repeats: int = 1) -> torch.Tensor:
    """The forward of :class:`_DepthwiseConv2d` without autograd: (B, C, H, W) -> (B, repeats*C, H, W), contiguous."""
    k = weight.shape[-1]
    xr = x.repeat(1, repeats, 1, 1) if repeats > 1 else x
    y = F.conv2d(_dw_layout(xr, k), weight, padding=padding, dilation=dilation, groups=weight.shape[0])
    return y.contiguous()


def depthwise2d_backward(
    x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, padding: int, dilation: int, repeats: int,
    need_x: bool = True, need_w: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Input and weight gradients of :func:`depthwise2d_forward` for the output gradient ``grad``.

    See :class:`_DepthwiseConv2d`; a gradient not asked for is None.
    """
    pad, dil, n = padding, dilation, repeats
    b, c = x.shape[0], weight.shape[0]  # c: channels of the (repeated) input
    k = weight.shape[-1]
    # Under autocast the forward ran in a lower precision than the saved
    # float32 x and weight, and the backward runs outside autocast: compute
    # in the output gradient's dtype, return each gradient in its input's.
    dt = grad.dtype
    grad_x = grad_w = None
    if need_x:
        grad_x = F.conv2d(
            _dw_layout(grad, k), weight.flip(-1, -2).to(dt), padding=pad, dilation=dil, groups=c
        ).contiguous()
        if n > 1:  # (B, n*C, *S) -> (B, C, *S): the copies' gradients add up
            grad_x = grad_x.view(b, n, c // n, *grad_x.shape[2:]).sum(1)
        grad_x = grad_x.to(x.dtype)
    if need_w:
        xr = x.repeat(1, n, 1, 1) if n > 1 else x
        xp = F.pad(xr.to(dt).contiguous(), (pad, pad, pad, pad))
        inp = xp.transpose(0, 1).reshape(1, c * b, *xp.shape[2:])
        ker = grad.transpose(0, 1).reshape(c * b, 1, *grad.shape[2:])
        grad_w = F.conv2d(inp, ker, stride=dil, groups=c * b).view(c, b, k, k).sum(1).unsqueeze(1)
        grad_w = grad_w.to(weight.dtype)
    return grad_x, grad_w


class _DepthwiseConv2d(torch.autograd.Function):
    """2-D depthwise conv, stride 1, "same" zero padding, no bias, with a cheaper backward.

    The forward is ``F.conv2d(x, w, padding, dilation, groups=C)``. oneDNN's
    own backward for depthwise convs on few channels is several times slower
    than its forward on CPU (worst for dilated kernels), so the backward is
    written with forward convolutions instead; the gradients are the same up
    to float rounding:

    - input gradient: the conv of the output gradient with the flipped kernel
      (stride 1 and symmetric padding, so the transposed conv is a conv);
    - weight gradient: per channel, the correlation of the padded input with
      the output gradient, i.e. a depthwise conv over (channel, sample) pairs
      with the output gradient as a (H, W) kernel and the dilation as stride,
      then summed over the samples.

    With ``repeats`` n > 1 the conv runs on ``x.repeat(1, n, 1, 1)`` (one copy
    per edge of a node) but only ``x`` is saved: the copy is made again in the
    backward pass, and the input gradient is summed over the copies.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: int, dilation: int,
                repeats: int = 1) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.dilation, ctx.repeats = padding, dilation, repeats
        return depthwise2d_forward(x, weight, padding, dilation, repeats)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x, grad_w = depthwise2d_backward(
            x, weight, grad, ctx.padding, ctx.dilation, ctx.repeats, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        return grad_x, grad_w, None, None, None


_CONV_FN = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}


def depthwise(x: torch.Tensor, weight: torch.Tensor, padding: int, dilation: int, repeats: int = 1) -> torch.Tensor:
    """Depthwise conv of ``x.repeat(1, repeats, ...)`` (B, repeats*C, *S) with ``weight`` (repeats*C, 1, k, ...).

    Stride 1, no bias; ``padding`` must keep the resolution
    (``dilation * (k - 1) // 2``, k odd). 2-D inputs use
    :class:`_DepthwiseConv2d` (same result, faster backward, and only ``x``
    is kept for the backward pass, not its copies).
    """
    if x.dim() == 4:
        return _DepthwiseConv2d.apply(x, weight, padding, dilation, repeats)
    if repeats > 1:
        x = x.repeat(1, repeats, *([1] * (x.dim() - 2)))
    return _CONV_FN[x.dim()](x, weight, padding=padding, dilation=dilation, groups=x.shape[1])


def depthwise_conv(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a depthwise, stride-1, "same"-padded, bias-free conv module (2-D: fast backward)."""
    if x.dim() != 4 or not _is_plain_depthwise_2d(conv, x.shape[1]):
        return conv(x)
    return _DepthwiseConv2d.apply(x, conv.weight, conv.padding[0], conv.dilation[0])


def _is_plain_depthwise_2d(conv: nn.Module, channels: int) -> bool:
    if not isinstance(conv, nn.Conv2d) or conv.bias is not None or conv.groups != channels:
        return False
    k, d, p = conv.kernel_size, conv.dilation, conv.padding
    return (
        conv.weight.shape[1] == 1
        and k[0] == k[1]
        and d[0] == d[1]
        and p == (d[0] * (k[0] - 1) // 2,) * 2
        and k[0] % 2 == 1
        and conv.stride == (1, 1)
        and conv.padding_mode == "zeros"
    )


def pointwise_conv(conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` for a 1x1 (1x1x1), stride-1, ungrouped conv module, as a matrix product.

    oneDNN runs 1x1 convs on few channels far slower than the equivalent
    product of the (C_out, C_in) weight with the (B, C_in, H*W) input, forward
    and backward; the result is the same up to float rounding.
    """
    if (
        conv.groups != 1
        or any(k != 1 for k in conv.kernel_size)
        or any(s != 1 for s in conv.stride)
        or any(p != 0 for p in conv.padding)
        or x.dim() != conv.weight.dim()
    ):
        return conv(x)
    w = conv.weight.view(conv.weight.shape[0], conv.weight.shape[1])
    y = torch.einsum("oi,bin->bon", w, x.flatten(2)).view(x.shape[0], w.shape[0], *x.shape[2:])
    if conv.bias is not None:
        y = y + conv.bias.view(1, -1, *([1] * (x.dim() - 2)))
    return y


def _dw_pw(dw: nn.Module, pw: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``pw(dw(x))`` in the default layout."""
    if x.dim() == 4:
        return pointwise_conv(pw, depthwise_conv(dw, x))
    fmt = _CHANNELS_LAST.get(x.dim())
    if fmt is None:
        return pw(dw(x))
    return pw(dw(x.contiguous(memory_format=fmt))).contiguous()


class Zero(nn.Module):
    """The ``none`` operation: an edge that contributes nothing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class Pool(nn.Module):
    """Max or average pooling (window 3, stride 1) followed by a non-affine norm."""

    def __init__(self, C: int, kind: str, spatial_dims: int):
        super().__init__()
        if kind == "max":
            self.pool = _MAXPOOL[_check_dims(spatial_dims)](POOL_SIZE, stride=1, padding=POOL_SIZE // 2)
        elif kind == "avg":
            self.pool = _AVGPOOL[_check_dims(spatial_dims)](
                POOL_SIZE, stride=1, padding=POOL_SIZE // 2, count_include_pad=False
            )
        else:
            raise ValueError(f"pool kind {kind!r} is not one of 'max', 'avg'")
        self.bn = _norm(C, spatial_dims)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """``self.pool(x)``, computed the cheaper way on CPU.

        2-D average pooling runs as separable sums (same result up to float
        rounding, several times cheaper); 2-D max pooling runs on a
        channels-last copy, whose kernel is about twice as fast for few
        channels and gives bit-identical values and gradients, ties included
        (the window is scanned in the same order and the first maximum wins).
        """
        if x.dim() == 4 and isinstance(self.pool, nn.AvgPool2d):
            return _avg_pool_3x3_2d(x)
        if x.dim() == 4 and isinstance(self.pool, nn.MaxPool2d) and x.device.type == "cpu":
            return self.pool(x.contiguous(memory_format=torch.channels_last)).contiguous()
        return self.pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pooled(x))


def _avg_pool_3x3_2d(x: torch.Tensor) -> torch.Tensor:
    """3x3 average pooling, stride 1, padding 1, padded cells not counted: (B, C, H, W) -> same.

    Row sums then column sums of the zero-padded input, divided by the number
    of in-image cells of each window.
    """
    h, w = x.shape[2:]
    p = F.pad(x, (1, 1, 1, 1))
    rows = p[:, :, :, :-2] + p[:, :, :, 1:-1] + p[:, :, :, 2:]  # (B, C, H+2, W)
    sums = rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]  # (B, C, H, W)
    ones = x.new_ones(1, 1, h + 2, w + 2)
    ones[..., 0, :] = ones[..., -1, :] = 0
    ones[..., :, 0] = ones[..., :, -1] = 0
    r = ones[..., :, :-2] + ones[..., :, 1:-1] + ones[..., :, 2:]
    count = r[..., :-2, :] + r[..., 1:-1, :] + r[..., 2:, :]  # (1, 1, H, W)
    return sums / count


class DilConv(nn.Module):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> norm (DARTS ``DilConv``)."""

    def __init__(self, C: int, kernel_size: int, dilation: int, spatial_dims: int):
        super().__init__()
        conv = conv_class(spatial_dims)
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.padding = dilation * (kernel_size - 1) // 2  # keeps the resolution
        self.dw = conv(C, C, kernel_size, padding=self.padding, dilation=dilation, groups=C, bias=False)
        self.pw = conv(C, C, 1, bias=False)
        self.bn = _norm(C, spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_activated(torch.relu(x))

    def forward_activated(self, r: torch.Tensor) -> torch.Tensor:
        """The op after its leading ReLU, given ``r = relu(x)`` (shared by a mixed op)."""
        return self.bn(_dw_pw(self.dw, self.pw, r))


class SepConv(nn.Module):
    """Two stacked ReLU -> depthwise -> pointwise -> norm stages (DARTS ``SepConv``)."""

    def __init__(self, C: int, kernel_size: int, spatial_dims: int):
        super().__init__()
        conv = conv_class(spatial_dims)
        self.kernel_size = kernel_size
        self.dilation = 1
        self.padding = kernel_size // 2
        self.dw1 = conv(C, C, kernel_size, padding=self.padding, groups=C, bias=False)
        self.pw1 = conv(C, C, 1, bias=False)
        self.bn1 = _norm(C, spatial_dims)
        self.dw2 = conv(C, C, kernel_size, padding=self.padding, groups=C, bias=False)
        self.pw2 = conv(C, C, 1, bias=False)
        self.bn2 = _norm(C, spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_activated(torch.relu(x))

    def forward_activated(self, r: torch.Tensor) -> torch.Tensor:
        """The op after its leading ReLU, given ``r = relu(x)`` (shared by a mixed op)."""
        x = self.bn1(_dw_pw(self.dw1, self.pw1, r))
        return self.bn2(_dw_pw(self.dw2, self.pw2, torch.relu(x)))


OPS: dict[str, Callable[[int, int], nn.Module]] = {
    "none": lambda C, dims: Zero(),
    "skip_connect": lambda C, dims: nn.Identity(),
    "max_pool_3x3": lambda C, dims: Pool(C, "max", dims),
    "avg_pool_3x3": lambda C, dims: Pool(C, "avg", dims),
    "sep_conv_3x3": lambda C, dims: SepConv(C, 3, dims),
    "sep_conv_5x5": lambda C, dims: SepConv(C, 5, dims),
    "dil_conv_3x3": lambda C, dims: DilConv(C, 3, DIL_CONV_DILATION, dims),
    "dil_conv_5x5": lambda C, dims: DilConv(C, 5, DIL_CONV_DILATION, dims),
}


def check_op_names(names, what: str = "ops") -> tuple[str, ...]:
    """Return ``names`` as a tuple, raising if one is not in :data:`OPS` or repeats."""
    names = tuple(names)
    if not names:
        raise ValueError(f"{what} is empty; choose among {list(OPS)}")
    for name in names:
        if name not in OPS:
            raise ValueError(f"{what}: unknown operation {name!r}; known operations are {list(OPS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} repeats an operation: {list(names)}")
    return names
