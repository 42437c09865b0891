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


# Tensor rank -> channels-last memory format. Depthwise convolutions on few
# channels run much faster channels-last on CPU, while BatchNorm and pooling on
# few channels are faster in the default layout: only the convs switch.
_CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def _dw_pw(dw: nn.Module, pw: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``pw(dw(x))`` computed channels-last, returned in the default layout."""
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.pool(x))


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
