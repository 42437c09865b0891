"""Small building blocks shared by the backbones and the skip modules.

Everything here is written for any ``spatial_dims`` (1, 2 or 3) on top of
MONAI's dimension-generic layers, so the 2-D networks of the paper become 3-D
by changing one argument.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn

# Spatial dimensions MONAI's convolution, norm and pooling factories support.
SPATIAL_DIMS = (1, 2, 3)
# Interpolation mode of a smooth resize, by number of spatial dimensions.
_LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}
# How many close matches a "did you mean" hint offers at most.
_MAX_SUGGESTIONS = 1
# Every U-Net level halves the resolution of the one above it.
SCALE = 2


def lookup(what: str, name: str, valid: Iterable[str]) -> str:
    """Return ``name`` if it is one of ``valid``, else raise a helpful error.

    Args:
        what: what the name designates, used in the message ("backbone").
        name: the name asked for.
        valid: the accepted names, in the order the message lists them.

    Returns:
        ``name`` unchanged.

    Raises:
        ValueError: ``name`` is not valid; the message lists the valid names and
            the closest one ("unknown backbone 'unt'; valid: unet, resunet,
            basicunet — did you mean 'unet'?").
    """
    valid = list(valid)
    if isinstance(name, str) and name in valid:
        return name
    msg = f"unknown {what} {name!r}; valid: {', '.join(valid)}"
    close = difflib.get_close_matches(str(name), valid, n=_MAX_SUGGESTIONS)
    if close:
        msg += f" — did you mean {close[0]!r}?"
    raise ValueError(msg)


def check_spatial_dims(spatial_dims: int) -> int:
    """Validate ``spatial_dims`` (1, 2 or 3) and return it."""
    if spatial_dims not in SPATIAL_DIMS:
        raise ValueError(
            f"spatial_dims must be one of {', '.join(map(str, SPATIAL_DIMS))}, got {spatial_dims!r}"
        )
    return spatial_dims


def conv_norm_act(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    *,
    kernel_size: int = 3,
    strides: int = 1,
    norm: str | tuple | None = "batch",
    act: str | tuple | None = "relu",
) -> Convolution:
    """One convolution followed by normalisation and activation (MONAI ``Convolution``).

    Convolutions feeding a normalisation layer carry no bias (the norm's shift
    replaces it); ``norm=None`` keeps the bias.
    """
    return Convolution(
        spatial_dims,
        in_channels,
        out_channels,
        strides=strides,
        kernel_size=kernel_size,
        act=act,
        norm=norm,
        bias=norm is None,
    )


def conv1x1(spatial_dims: int, in_channels: int, out_channels: int, bias: bool = True) -> Convolution:
    """A plain pointwise convolution (no norm, no activation)."""
    return Convolution(
        spatial_dims, in_channels, out_channels, kernel_size=1, conv_only=True, bias=bias
    )


def resize_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Linearly resize ``x`` (B, C, *S) to the spatial size of ``like`` (B, C', *S')."""
    size = like.shape[2:]
    if x.shape[2:] == size:
        return x
    return F.interpolate(x, size=size, mode=_LINEAR_MODE[x.dim() - 2], align_corners=False)


class DoubleConv(nn.Sequential):
    """Two ``conv_norm_act`` layers; the first may downsample with a stride.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        out_channels: output channels of both convolutions.
        strides: stride of the first convolution (2 halves the resolution).
        norm: MONAI norm name or ``(name, kwargs)``.
        act: MONAI activation name or ``(name, kwargs)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        strides: int = 1,
        norm: str | tuple | None = "batch",
        act: str | tuple | None = "relu",
    ) -> None:
        super().__init__(
            conv_norm_act(spatial_dims, in_channels, out_channels, strides=strides, norm=norm, act=act),
            conv_norm_act(spatial_dims, out_channels, out_channels, norm=norm, act=act),
        )


def pool(spatial_dims: int) -> nn.Module:
    """Max pooling that halves every spatial dimension."""
    cls = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims]
    return cls(kernel_size=SCALE)
