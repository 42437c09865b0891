"""U-Net backbones whose skip connections are pluggable modules (``SkipUNet``).

The encoder returns the list of features per level (``skips[0]`` at full
resolution ... ``skips[-1]`` the bottleneck). The decoder walks from deep to
shallow; at level ``l`` it upsamples to ``up_l`` (``up_channels[l]`` channels,
spatial size of ``skips[l]``), asks the level's skip module for
``s_l = skip_modules[l](skips, up_l)`` (shaped like ``skips[l]``), and applies
a conv block to ``cat([s_l, up_l])``. A final 1x1 conv gives the logits.

Backbones (``BACKBONES``) differ only in their conv blocks:

- ``unet``: nnU-Net-style double conv (conv, InstanceNorm, LeakyReLU, twice);
  downsampling by a stride-2 first conv (MONAI ``UnetBasicBlock``).
- ``resunet``: MONAI ``ResidualUnit`` (two conv subunits with a residual
  connection, InstanceNorm, PReLU), downsampling by stride 2.
- ``basicunet``: MONAI BasicUNet-like: max pooling, then two conv, BatchNorm,
  LeakyReLU(0.1) layers.

All three upsample with a stride-2 transposed conv (MONAI ``UpSample``) and
are written for any ``spatial_dims``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.networks.blocks import ResidualUnit, UnetBasicBlock, UpSample
from torch import nn

from iac.models.blocks import SCALE, DoubleConv, check_spatial_dims, conv1x1, lookup, pool
from iac.models.skips import SKIP_KINDS, create_skip

# --- block styles ---------------------------------------------------------------

# nnU-Net: affine InstanceNorm and LeakyReLU with slope 0.01.
_NNUNET_NORM = ("instance", {"affine": True})
_NNUNET_ACT = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})
# MONAI UNet's residual units: InstanceNorm and PReLU, two conv subunits.
_RES_NORM = "instance"
_RES_ACT = "prelu"
_RES_SUBUNITS = 2
# MONAI BasicUNet: LeakyReLU with slope 0.1; batch norm here (see module doc).
_BASIC_NORM = "batch"
_BASIC_ACT = ("leakyrelu", {"negative_slope": 0.1, "inplace": True})
_KERNEL = 3  # every feature conv is 3x3 (3x3x3)


def _unet_block(spatial_dims: int, in_channels: int, out_channels: int, down: bool) -> nn.Module:
    return UnetBasicBlock(
        spatial_dims,
        in_channels,
        out_channels,
        kernel_size=_KERNEL,
        stride=SCALE if down else 1,
        norm_name=_NNUNET_NORM,
        act_name=_NNUNET_ACT,
    )


def _resunet_block(spatial_dims: int, in_channels: int, out_channels: int, down: bool) -> nn.Module:
    return ResidualUnit(
        spatial_dims,
        in_channels,
        out_channels,
        strides=SCALE if down else 1,
        kernel_size=_KERNEL,
        subunits=_RES_SUBUNITS,
        act=_RES_ACT,
        norm=_RES_NORM,
    )


def _basicunet_block(spatial_dims: int, in_channels: int, out_channels: int, down: bool) -> nn.Module:
    conv = DoubleConv(spatial_dims, in_channels, out_channels, norm=_BASIC_NORM, act=_BASIC_ACT)
    return nn.Sequential(pool(spatial_dims), conv) if down else conv


@dataclass(frozen=True)
class BackboneSpec:
    """How one backbone builds its blocks.

    Attributes:
        block: ``(spatial_dims, in_channels, out_channels, down) -> nn.Module``;
            ``down=True`` halves the resolution (encoder levels below the first).
        description: one line for listings.
    """

    block: Callable[[int, int, int, bool], nn.Module]
    description: str


# Backbone name -> its blocks.
BACKBONES: dict[str, BackboneSpec] = {
    "unet": BackboneSpec(_unet_block, "plain U-Net, conv-InstanceNorm-LeakyReLU double convs (nnU-Net style)"),
    "resunet": BackboneSpec(_resunet_block, "residual U-Net, MONAI ResidualUnit blocks"),
    "basicunet": BackboneSpec(_basicunet_block, "MONAI BasicUNet-like, max pooling + conv-BatchNorm-LeakyReLU"),
}

# --- size presets -----------------------------------------------------------------

DEFAULT_PRESET = "small"
# Feature widths per encoder level; the number of entries is the depth (levels,
# bottleneck included). Inputs must be a multiple of 2 ** (depth - 1).
_WIDTHS: dict[str, tuple[int, ...]] = {
    # 4 levels (inputs a multiple of 8), about 0.1 M parameters: CPU runs, tests, the phantom.
    "small": (8, 16, 32, 64),
    # 5 levels (multiple of 16): a 2-D U-Net at half the classic width, for a single GPU.
    "base": (16, 32, 64, 128, 256),
    # 5 levels: the classic U-Net / 2-D nnU-Net widths (nnU-Net caps them at 512).
    "wide": (32, 64, 128, 256, 512),
}
# Backbone -> preset -> widths. The backbones share the table so that a preset
# compares backbones at equal width; a backbone may diverge here later.
PRESETS: dict[str, dict[str, tuple[int, ...]]] = {name: dict(_WIDTHS) for name in BACKBONES}
# A U-Net needs at least one skip level: an encoder level plus the bottleneck.
MIN_DEPTH = 2


def registry_backbone_name(name: str, preset: str = DEFAULT_PRESET) -> str:
    """Backbone part of registry names: ``"unet"`` for the default preset, else ``"unet-wide"``."""
    lookup("backbone", name, BACKBONES)
    lookup("preset", preset, PRESETS[name])
    return name if preset == DEFAULT_PRESET else f"{name}-{preset}"


# --- the network ------------------------------------------------------------------


class SkipUNet(nn.Module):
    """A U-Net whose skip connections are modules ``m_l(skips, up_l)``.

    Build it with ``create_backbone``; the constructor takes resolved widths.

    Args:
        name: backbone name (a key of ``BACKBONES``).
        in_channels: image channels.
        num_classes: output logits (background included).
        features: width of every level, shallow to deep (bottleneck last).
        spatial_dims: 2 for slices, 3 for volumes.
        skip: skip kind (a key of ``SKIP_KINDS``).
        skip_kwargs: options of the skip kind (JSON-able, stored in ``config``).
        preset: the preset the widths came from (recorded in ``config``).

    Attributes:
        skip_modules: one module per concatenated level ``0 .. depth - 2``.
        skip_channels: channels of ``skips[l]`` for every encoder level.
        up_channels: channels of ``up_l`` for every concatenated level.
        size_multiple: spatial sizes must be a multiple of this.
    """

    def __init__(
        self,
        name: str,
        in_channels: int,
        num_classes: int,
        features: Sequence[int],
        spatial_dims: int = 2,
        skip: str = "identity",
        skip_kwargs: dict[str, Any] | None = None,
        preset: str = DEFAULT_PRESET,
    ) -> None:
        super().__init__()
        spec = BACKBONES[lookup("backbone", name, BACKBONES)]
        check_spatial_dims(spatial_dims)
        for arg, value in (("in_channels", in_channels), ("num_classes", num_classes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive int, got {value!r}")
        features = [int(f) for f in features]
        if len(features) < MIN_DEPTH or min(features) < 1:
            raise ValueError(
                f"features must list at least {MIN_DEPTH} positive widths (shallow to deep), got {features}"
            )
        self.name = name
        self.preset = preset
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.spatial_dims = spatial_dims
        self.features = features
        self.depth = len(features)
        self.size_multiple = SCALE ** (self.depth - 1)
        self.skip_channels = list(features)
        self.up_channels = list(features[:-1])

        widths_in = [in_channels, *features[:-1]]
        self.encoder_blocks = nn.ModuleList(
            spec.block(spatial_dims, c_in, c_out, level > 0)
            for level, (c_in, c_out) in enumerate(zip(widths_in, features))
        )
        # ups[l]: decoder feature of level l + 1 -> up_l at the resolution of level l.
        self.ups = nn.ModuleList(
            UpSample(spatial_dims, features[lvl + 1], self.up_channels[lvl], scale_factor=SCALE, mode="deconv")
            for lvl in range(self.depth - 1)
        )
        self.decoder_blocks = nn.ModuleList(
            spec.block(spatial_dims, self.skip_channels[lvl] + self.up_channels[lvl], features[lvl], False)
            for lvl in range(self.depth - 1)
        )
        self.head = conv1x1(spatial_dims, features[0], num_classes)

        lookup("skip", skip, SKIP_KINDS)
        self.skip = skip
        self.skip_kwargs = copy.deepcopy(dict(skip_kwargs or {}))
        self.skip_modules = nn.ModuleList(
            create_skip(skip, lvl, self.skip_channels, self.up_channels, spatial_dims, **self.skip_kwargs)
            for lvl in range(self.depth - 1)
        )

    # --- description ---

    @property
    def config(self) -> dict[str, Any]:
        """JSON-able arguments of ``create_backbone`` that rebuild this architecture."""
        return {
            "name": self.name,
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "preset": self.preset,
            "spatial_dims": self.spatial_dims,
            "skip": self.skip,
            "skip_kwargs": copy.deepcopy(self.skip_kwargs),
            "features": list(self.features),
        }

    def replace_skips(
        self, modules: Sequence[nn.Module], kind: str | None = None, skip_kwargs: dict[str, Any] | None = None
    ) -> None:
        """Put new skip modules in the skip slots (the rest of the network is untouched).

        Args:
            modules: one module per concatenated level, each called as
                ``m(skips, up_l)`` and returning a tensor shaped like ``skips[l]``.
            kind: the skip kind that ``create_backbone`` would build these with,
                recorded in ``config``; ``None`` records ``"custom"`` (such a
                config cannot be rebuilt by ``create_backbone``).
            skip_kwargs: the options of ``kind``, recorded in ``config``.
        """
        modules = list(modules)
        if len(modules) != len(self.skip_modules):
            raise ValueError(f"expected {len(self.skip_modules)} skip modules (one per level), got {len(modules)}")
        for level, module in enumerate(modules):
            if not isinstance(module, nn.Module):
                raise TypeError(f"skip module of level {level} must be an nn.Module, got {type(module).__name__}")
        if kind is not None:
            lookup("skip", kind, SKIP_KINDS)
        self.skip_modules = nn.ModuleList(modules)
        self.skip = kind if kind is not None else "custom"
        self.skip_kwargs = copy.deepcopy(dict(skip_kwargs or {}))

    # --- parameter groups ---

    def skip_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the skip modules."""
        return self.skip_modules.parameters()

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter except those of the skip modules."""
        skip_ids = {id(p) for p in self.skip_modules.parameters()}
        return (p for p in self.parameters() if id(p) not in skip_ids)

    # --- forward ---

    def encoder(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features per level: ``skips[l]`` is (B, features[l], *S / 2**l)."""
        expected_dim = self.spatial_dims + 2
        if x.dim() != expected_dim or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (B, {self.in_channels}, {self.spatial_dims} spatial dims), got {tuple(x.shape)}"
            )
        bad = [s for s in x.shape[2:] if s % self.size_multiple]
        if bad:
            raise ValueError(
                f"spatial size {tuple(x.shape[2:])} must be a multiple of {self.size_multiple} "
                f"(2 ** (depth - 1) for depth {self.depth}); pad the input"
            )
        skips = []
        for block in self.encoder_blocks:
            x = block(x)  # (B, features[l], *S_l)
            skips.append(x)
        return skips

    def decoder(self, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits (B, num_classes, *S) from the encoder features."""
        if len(skips) != self.depth:
            raise ValueError(f"expected {self.depth} encoder features, got {len(skips)}")
        x = skips[-1]  # (B, features[-1], *S_bottom)
        for level in reversed(range(self.depth - 1)):
            up = self.ups[level](x)  # (B, up_channels[l], *S_l)
            if up.shape[2:] != skips[level].shape[2:]:
                raise ValueError(
                    f"level {level}: upsampled size {tuple(up.shape[2:])} differs from the skip's "
                    f"{tuple(skips[level].shape[2:])}; input sizes must be a multiple of {self.size_multiple}"
                )
            s = self.skip_modules[level](skips, up)  # (B, skip_channels[l], *S_l)
            if s.shape != skips[level].shape:
                raise RuntimeError(
                    f"skip module {type(self.skip_modules[level]).__name__} of level {level} returned "
                    f"{tuple(s.shape)}, expected the skip's shape {tuple(skips[level].shape)}"
                )
            x = self.decoder_blocks[level](torch.cat([s, up], dim=1))  # (B, features[l], *S_l)
        return self.head(x)  # (B, num_classes, *S)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes, *S) of an input (B, in_channels, *S)."""
        return self.decoder(self.encoder(x))


def create_backbone(
    name: str,
    in_channels: int,
    num_classes: int,
    preset: str = DEFAULT_PRESET,
    spatial_dims: int = 2,
    skip: str = "identity",
    skip_kwargs: dict[str, Any] | None = None,
    features: Sequence[int] | None = None,
) -> SkipUNet:
    """Build a ``SkipUNet`` by backbone name and size preset.

    Args:
        name: one of ``BACKBONES`` (``unet``, ``resunet``, ``basicunet``).
        in_channels: image channels.
        num_classes: output classes (background included).
        preset: size preset, a key of ``PRESETS[name]`` (``small``, ``base``, ``wide``).
        spatial_dims: 2 for slices, 3 for volumes.
        skip: skip kind, a key of ``SKIP_KINDS``.
        skip_kwargs: options of the skip kind.
        features: widths per level overriding the preset's.

    Returns:
        The network; ``create_backbone(**net.config)`` builds the same architecture.

    Raises:
        ValueError: unknown backbone, preset or skip (the valid names are
            listed), or invalid sizes.
    """
    lookup("backbone", name, BACKBONES)
    lookup("preset", preset, PRESETS[name])
    lookup("skip", skip, SKIP_KINDS)
    widths = PRESETS[name][preset] if features is None else features
    return SkipUNet(
        name,
        in_channels,
        num_classes,
        widths,
        spatial_dims=spatial_dims,
        skip=skip,
        skip_kwargs=skip_kwargs,
        preset=preset,
    )
