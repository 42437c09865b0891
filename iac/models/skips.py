"""Skip modules: what a U-Net does with an encoder feature before concatenating it.

Every skip module sits in the same slot of a ``SkipUNet`` decoder. At level
``l`` the decoder calls ``m_l(skips, up_l)`` with the whole list of encoder
features (``skips[0]`` full resolution ... ``skips[-1]`` bottleneck) and the
decoder's upsampled feature ``up_l`` (spatial size of ``skips[l]``), and
concatenates the returned tensor, shaped like ``skips[l]``, with ``up_l``.

Kinds (``SKIP_KINDS``):

- ``identity``: the plain U-Net, ``skips[l]`` unchanged.
- ``attention``: the additive attention gate of Attention U-Net, gated by ``up_l``.
- ``residual``: MultiResUNet's ResPath, a chain of residual conv blocks whose
  length decreases with depth.
- ``dense``: UNet++-style nested dense skip fed by the deeper encoder features.
- ``iac``: an Implantable Adaptive Cell, built by ``iac.nas.implant.make_iac_skip``
  (imported only when asked for).

Factories share one signature,
``(level, skip_channels, up_channels, spatial_dims, **kwargs)``, where
``skip_channels`` and ``up_channels`` are the network's per-level lists
(``net.skip_channels``, ``net.up_channels``), not the counts of one level:
the dense skip needs the channels of the deeper levels.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence

import torch
from monai.networks.blocks import ADN
from torch import nn

from iac.models.blocks import DoubleConv, check_spatial_dims, conv_norm_act, lookup, resize_to

# Normalisation and activation of the baseline skip modules: their papers
# (Attention U-Net, MultiResUNet, UNet++) all use batch norm and ReLU.
DEFAULT_NORM = "batch"
DEFAULT_ACT = "relu"
# ResPath length at level 0; each deeper level is one block shorter, never
# under one (MultiResUNet: 4, 3, 2, 1 for its four skip levels).
RESPATH_MAX_LENGTH = 4
# Attention gate: intermediate channels are the skip's channels divided by this.
ATTENTION_REDUCTION = 2
# Module providing ``make_iac_skip`` for the ``iac`` kind (imported on first use).
_IAC_MODULE = "iac.nas.implant"


class SkipModule(nn.Module):
    """Base of the skip modules: knows its level, maps ``(skips, up)`` to a skip-shaped tensor."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def forward(self, skips: Sequence[torch.Tensor], up: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class IdentitySkip(SkipModule):
    """The plain U-Net skip: returns ``skips[level]`` unchanged."""

    def __init__(
        self, level: int, skip_channels: Sequence[int], up_channels: Sequence[int], spatial_dims: int
    ) -> None:
        super().__init__(level)

    def forward(self, skips: Sequence[torch.Tensor], up: torch.Tensor) -> torch.Tensor:
        return skips[self.level]


class AttentionGate(SkipModule):
    """Additive attention gate (Attention U-Net), gated by the decoder feature.

    ``alpha = sigmoid(psi(relu(W_x x + W_g g)))`` with ``x = skips[level]`` and
    ``g = up``; the output is ``x * alpha``. Because ``up`` already has the
    skip's resolution, no resampling of the coefficients is needed.

    Args:
        level: skip level this gate serves.
        skip_channels: channels of every encoder level.
        up_channels: channels of the decoder's upsampled feature per level.
        spatial_dims: number of spatial dimensions.
        inter_channels: channels of the joint embedding; default
            ``skip_channels[level] // ATTENTION_REDUCTION`` (at least 1).
        norm: MONAI norm of the 1x1 projections.
    """

    def __init__(
        self,
        level: int,
        skip_channels: Sequence[int],
        up_channels: Sequence[int],
        spatial_dims: int,
        inter_channels: int | None = None,
        norm: str | tuple | None = DEFAULT_NORM,
    ) -> None:
        super().__init__(level)
        c_x, c_g = skip_channels[level], up_channels[level]
        inter = inter_channels or max(c_x // ATTENTION_REDUCTION, 1)
        self.w_x = conv_norm_act(spatial_dims, c_x, inter, kernel_size=1, norm=norm, act=None)
        self.w_g = conv_norm_act(spatial_dims, c_g, inter, kernel_size=1, norm=norm, act=None)
        self.psi = conv_norm_act(spatial_dims, inter, 1, kernel_size=1, norm=norm, act=None)
        self.act = nn.ReLU()

    def coefficients(self, skips: Sequence[torch.Tensor], up: torch.Tensor) -> torch.Tensor:
        """Attention map in [0, 1], shape (B, 1, *S) of ``skips[level]``."""
        x = skips[self.level]  # (B, Cx, *S)
        q = self.act(self.w_x(x) + self.w_g(up))  # (B, inter, *S)
        return torch.sigmoid(self.psi(q))  # (B, 1, *S)

    def forward(self, skips: Sequence[torch.Tensor], up: torch.Tensor) -> torch.Tensor:
        return skips[self.level] * self.coefficients(skips, up)  # (B, Cx, *S)


class ResPathBlock(nn.Module):
    """One ResPath block: ``norm(act(conv3x3(x) + conv1x1(x)))`` at constant width."""

    def __init__(
        self,
        spatial_dims: int,
        channels: int,
        norm: str | tuple | None = DEFAULT_NORM,
        act: str | tuple | None = DEFAULT_ACT,
    ) -> None:
        super().__init__()
        self.conv = conv_norm_act(spatial_dims, channels, channels, norm=norm, act=act)
        self.shortcut = conv_norm_act(spatial_dims, channels, channels, kernel_size=1, norm=norm, act=None)
        # Activation then normalisation of the sum, as MultiResUNet orders them.
        self.post = ADN(ordering="AN", in_channels=channels, act=act, norm=norm, norm_dim=spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.conv(x) + self.shortcut(x))  # (B, C, *S)


class ResPath(SkipModule):
    """MultiResUNet ResPath: residual conv blocks on the skip, fewer at deeper levels.

    Args:
        level: skip level.
        skip_channels: channels of every encoder level.
        up_channels: channels of the decoder's upsampled feature per level (unused).
        spatial_dims: number of spatial dimensions.
        length: number of blocks; default ``max(max_length - level, 1)``.
        max_length: length at level 0 when ``length`` is not given.
        norm: MONAI norm name.
        act: MONAI activation name.
    """

    def __init__(
        self,
        level: int,
        skip_channels: Sequence[int],
        up_channels: Sequence[int],
        spatial_dims: int,
        length: int | None = None,
        max_length: int = RESPATH_MAX_LENGTH,
        norm: str | tuple | None = DEFAULT_NORM,
        act: str | tuple | None = DEFAULT_ACT,
    ) -> None:
        super().__init__(level)
        n = length if length is not None else max(max_length - level, 1)
        if n < 1:
            raise ValueError(f"ResPath length must be at least 1, got {n}")
        c = skip_channels[level]
        self.blocks = nn.Sequential(*(ResPathBlock(spatial_dims, c, norm, act) for _ in range(n)))

    def forward(self, skips: Sequence[torch.Tensor], up: torch.Tensor) -> torch.Tensor:
        return self.blocks(skips[self.level])  # (B, C, *S)


class DenseSkip(SkipModule):
    """UNet++-style nested dense skip built from the deeper encoder features.

    Node 0 is ``skips[level]``. Node ``j`` (1..n) applies a double conv to the
    concatenation of every earlier node and ``skips[level + j]``, projected to
    the skip's width by a 1x1 conv and resized to the skip's resolution. The
    last node is returned, so the decoder sees features that went through the
    nested dense pathway, as in UNet++'s ``X^{l, n}``.

    Args:
        level: skip level.
        skip_channels: channels of every encoder level (the deeper ones are read).
        up_channels: channels of the decoder's upsampled feature per level (unused).
        spatial_dims: number of spatial dimensions.
        max_steps: use at most this many deeper features (default: all of them).
        norm: MONAI norm name.
        act: MONAI activation name.
    """

    def __init__(
        self,
        level: int,
        skip_channels: Sequence[int],
        up_channels: Sequence[int],
        spatial_dims: int,
        max_steps: int | None = None,
        norm: str | tuple | None = DEFAULT_NORM,
        act: str | tuple | None = DEFAULT_ACT,
    ) -> None:
        super().__init__(level)
        deeper = list(skip_channels[level + 1 :])
        if not deeper:
            raise ValueError(
                f"dense skip at level {level} needs deeper encoder levels; "
                f"skip_channels has only {len(skip_channels)} entries"
            )
        if max_steps is not None:
            if max_steps < 1:
                raise ValueError(f"max_steps must be at least 1, got {max_steps}")
            deeper = deeper[:max_steps]
        c = skip_channels[level]
        self.projections = nn.ModuleList(
            conv_norm_act(spatial_dims, cd, c, kernel_size=1, norm=norm, act=act) for cd in deeper
        )
        # Node j sees nodes 0..j-1 and the projected deeper feature: (j + 1) * c channels.
        self.nodes = nn.ModuleList(
            DoubleConv(spatial_dims, (j + 1) * c, c, norm=norm, act=act) for j in range(1, len(deeper) + 1)
        )

    def forward(self, skips: Sequence[torch.Tensor], up: torch.Tensor) -> torch.Tensor:
        nodes = [skips[self.level]]  # each (B, C, *S)
        for j, (project, node) in enumerate(zip(self.projections, self.nodes), start=1):
            deeper = resize_to(project(skips[self.level + j]), nodes[0])  # (B, C, *S)
            nodes.append(node(torch.cat([*nodes, deeper], dim=1)))  # (B, C, *S)
        return nodes[-1]


def _make_iac(
    level: int, skip_channels: Sequence[int], up_channels: Sequence[int], spatial_dims: int, **kwargs
) -> nn.Module:
    """Build an Implantable Adaptive Cell through ``iac.nas.implant`` (imported lazily)."""
    try:
        implant = importlib.import_module(_IAC_MODULE)
    except ImportError as err:
        raise ImportError(
            f"skip kind 'iac' is provided by iac.nas.implant.make_iac_skip, which could not be imported: {err}"
        ) from err
    factory = getattr(implant, "make_iac_skip", None)
    if factory is None:
        raise ImportError("skip kind 'iac' needs iac.nas.implant.make_iac_skip, which is not defined")
    return factory(level, skip_channels, up_channels, spatial_dims, **kwargs)


# Skip kind -> factory ``(level, skip_channels, up_channels, spatial_dims, **kwargs) -> nn.Module``.
SKIP_KINDS: dict[str, Callable[..., nn.Module]] = {
    "identity": IdentitySkip,
    "attention": AttentionGate,
    "residual": ResPath,
    "dense": DenseSkip,
    "iac": _make_iac,
}


def create_skip(
    kind: str,
    level: int,
    skip_channels: Sequence[int],
    up_channels: Sequence[int],
    spatial_dims: int,
    **kwargs,
) -> nn.Module:
    """Build the skip module of one level.

    Args:
        kind: one of ``SKIP_KINDS``.
        level: the level it serves, ``0 <= level < len(up_channels)``.
        skip_channels: channels of every encoder level (``net.skip_channels``).
        up_channels: channels of the upsampled decoder feature of every
            concatenated level (``net.up_channels``).
        spatial_dims: number of spatial dimensions.
        **kwargs: options of that kind (see its class).

    Returns:
        A module called as ``m(skips, up) -> Tensor`` shaped like ``skips[level]``.

    Raises:
        ValueError: unknown kind (the valid ones are listed) or a level out of range.
        TypeError: channel counts given as a single number instead of per-level lists.
    """
    factory = SKIP_KINDS[lookup("skip", kind, SKIP_KINDS)]
    check_spatial_dims(spatial_dims)
    for arg, value in (("skip_channels", skip_channels), ("up_channels", up_channels)):
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise TypeError(f"{arg} must be the per-level list of channel counts (net.{arg}), got {value!r}")
    n_levels = min(len(up_channels), len(skip_channels) - 1)
    if not isinstance(level, int) or not 0 <= level < n_levels:
        raise ValueError(f"level must be an int in [0, {n_levels}), got {level!r}")
    return factory(level, list(skip_channels), list(up_channels), spatial_dims, **kwargs)
