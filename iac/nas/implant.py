"""Implanting cells into the skip connections of a trained U-Net.

The U-Net's decoder calls one skip module per level, ``m_l(skips, up_l)``.
:class:`IACSkip` wraps the original module and adds the cell's output through
a zero-initialised 1x1 projection, so right after implantation the network
computes exactly what it computed before. A consequence worth knowing: at that
point every gradient upstream of the projection (cell weights, alpha, beta) is
exactly zero; only the projection's own weight gets a gradient, and the first
weight step moves it off zero.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from iac.nas.cell import DiscreteCell
from iac.nas.genotype import Genotype
from iac.nas.operations import conv_class

__all__ = ["IACSkip", "IdentityInner", "make_iac_skip", "implant"]


class IdentityInner(nn.Module):
    """The plain skip: returns ``skips[level]`` unchanged."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def forward(self, skips: Sequence[torch.Tensor], up: torch.Tensor | None = None) -> torch.Tensor:
        return skips[self.level]


class IACSkip(nn.Module):
    """``inner(skips, up) + proj(cell(skips[level], up))`` with ``proj`` zero-initialised.

    Args:
        inner: the original skip module of this level (kept, e.g. frozen).
        cell: called as ``cell(skip, up) -> (B, skip_ch, *S)``.
        skip_ch: channels of ``skips[level]``.
        level: the skip level this module serves.
        spatial_dims: 2 for slices, 3 for volumes.
    """

    def __init__(self, inner: nn.Module, cell: nn.Module, skip_ch: int, level: int, spatial_dims: int = 2):
        super().__init__()
        self.inner = inner
        self.cell = cell
        self.level = level
        self.proj = conv_class(spatial_dims)(skip_ch, skip_ch, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, skips: Sequence[torch.Tensor], up: torch.Tensor | None = None) -> torch.Tensor:
        """``skips[level]`` (B, skip_ch, *S), ``up`` (B, up_ch, *S) -> (B, skip_ch, *S)."""
        return self.inner(skips, up) + self.proj(self.cell(skips[self.level], up))


def _channels(value: int | Sequence[int] | None, level: int, name: str) -> int | None:
    if value is None or isinstance(value, int):
        return value
    if not 0 <= level < len(value):
        raise ValueError(f"{name}={list(value)} has no entry for level {level}")
    return int(value[level])


def make_iac_skip(
    level: int,
    skip_channels: int | Sequence[int],
    up_channels: int | Sequence[int] | None,
    spatial_dims: int,
    genotype: Genotype | Mapping[str, Any] | str,
    cell_channels: int | None = None,
    inner: nn.Module | None = None,
) -> IACSkip:
    """A skip module carrying the discrete cell of ``genotype`` for ``level``.

    Used by ``create_skip("iac", ...)`` and by retraining with a found cell.

    Args:
        level: skip level (0 = full resolution).
        skip_channels: channels of the skip feature, or the per-level list.
        up_channels: channels of the decoder feature, or the per-level list.
        spatial_dims: 2 for slices, 3 for volumes.
        genotype: a :class:`Genotype`, its JSON dict, or its JSON text.
        cell_channels: cell width; defaults to the genotype's search space.
        inner: the original skip module; defaults to the identity skip.
    """
    if not isinstance(genotype, Genotype):
        genotype = Genotype.from_json(genotype)
    skip_ch = _channels(skip_channels, level, "skip_channels")
    up_ch = _channels(up_channels, level, "up_channels")
    width = genotype.space.cell_channels if cell_channels is None else cell_channels
    cell = DiscreteCell(genotype.cell(level), skip_ch, up_ch, width, spatial_dims, n_inputs=genotype.space.n_inputs)
    return IACSkip(inner if inner is not None else IdentityInner(level), cell, skip_ch, level, spatial_dims)


def implant(unet: nn.Module, make_cell: Callable[[int, int, int], nn.Module], spatial_dims: int | None = None) -> nn.Module:
    """Wrap every skip module ``m_l`` of ``unet`` as ``IACSkip(m_l, make_cell(l, skip_ch, up_ch))``.

    The original modules stay inside as ``inner``; the U-Net is changed in place
    and returned.

    Args:
        unet: a U-Net with ``skip_modules``, ``skip_channels``, ``up_channels``.
        make_cell: ``(level, skip_ch, up_ch) -> cell`` called as ``cell(skip, up)``.
        spatial_dims: defaults to ``unet.config["spatial_dims"]`` or 2.
    """
    for attr in ("skip_modules", "skip_channels", "up_channels"):
        if not hasattr(unet, attr):
            raise TypeError(f"{type(unet).__name__} has no `{attr}`; implant needs a SkipUNet-like network")
    if spatial_dims is None:
        spatial_dims = int(getattr(unet, "config", {}).get("spatial_dims", 2))
    modules = []
    for level, inner in enumerate(unet.skip_modules):
        skip_ch, up_ch = int(unet.skip_channels[level]), int(unet.up_channels[level])
        cell = make_cell(level, skip_ch, up_ch)
        modules.append(IACSkip(inner, cell, skip_ch, level, spatial_dims))
    if hasattr(unet, "replace_skips"):
        unet.replace_skips(modules)
    else:
        unet.skip_modules = nn.ModuleList(modules)
    return unet
