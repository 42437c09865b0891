"""nnU-Net's U-Nets with the project's skip seam in their decoder.

dynamic-network-architectures' ``UNetDecoder`` concatenates, at every stage,
the transposed-conv output ``up`` with the encoder feature ``skips[-(s+2)]``.
:class:`IACUNetDecoder` keeps every module and parameter name of that decoder
and adds one skip module per level (``skip_modules``, the same seam as the
project's ``SkipUNet``): the decoder concatenates ``up`` with
``m_l(skips, up)`` instead. The plain skip (``identity``) has no parameters,
so a trained ``checkpoint_final.pth`` loads into it with ``strict=True`` and
the network computes exactly what nnU-Net's network computed.

:class:`IACPlainConvUNet` and :class:`IACResidualEncoderUNet` are nnU-Net's
``PlainConvUNet`` and ``ResidualEncoderUNet`` with that decoder and the
``SkipUNet`` contract (``skip_modules``, ``skip_channels``, ``up_channels``,
``replace_skips``, ``config``), so :class:`iac.nas.supernet.SearchNetwork`
and :func:`iac.nas.implant.implant` work on them unchanged. Given a
``genotype`` (its JSON text, as a plans file carries it), the discrete cell
of every level is implanted at construction: the retrained network and the
one ``nnUNetv2_predict`` rebuilds from the plans.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Mapping, Sequence

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim
from dynamic_network_architectures.building_blocks.unet_decoder import UNetDecoder
from dynamic_network_architectures.initialization.weight_init import InitWeights_He, init_last_bn_before_add_to_0
from torch import nn

from iac.models.skips import create_skip
from iac.nas.cell import DiscreteCell
from iac.nas.genotype import Genotype, GenotypeError
from iac.nas.implant import IACSkip, implant

__all__ = [
    "IACUNetDecoder",
    "IACPlainConvUNet",
    "IACResidualEncoderUNet",
    "NETWORK_CLASSES",
    "parse_genotype",
]

# Attribute marking modules of an implanted cell: nnU-Net's He initialisation
# (applied by ``get_network_from_plans``) leaves them as the project built them
# (zero-initialised output projection, PyTorch's default init of the cell).
_KEEP_INIT = "_iac_keep_init"
# He initialisation slope of nnU-Net's U-Nets (``InitWeights_He(1e-2)``).
_HE_NEG_SLOPE = 1e-2


class IACUNetDecoder(UNetDecoder):
    """``UNetDecoder`` whose skips pass through one skip module per level.

    Same arguments and parameter names as ``UNetDecoder``; adds
    ``skip_modules`` (level 0 = full resolution, the identity skip at first).
    Stage ``s`` of the decoder (0 = lowest resolution) serves level
    ``L - 1 - s`` with ``L = len(stages)``.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, n_conv_per_stage, deep_supervision: bool, **kwargs):
        super().__init__(encoder, num_classes, n_conv_per_stage, deep_supervision, **kwargs)
        dims = convert_conv_op_to_dim(encoder.conv_op)
        self.skip_channels = [int(c) for c in encoder.output_channels]  # every encoder level, bottleneck last
        self.up_channels = [int(c) for c in encoder.output_channels[:-1]]  # transposed-conv output per level
        self.skip_modules = nn.ModuleList(
            create_skip("identity", level, self.skip_channels, self.up_channels, dims)
            for level in range(len(self.stages))
        )

    def forward(self, skips: Sequence[torch.Tensor]):
        """Encoder features (``skips[-1]`` the bottleneck) -> logits, or a list of them under deep supervision."""
        n = len(self.stages)
        lres_input = skips[-1]
        seg_outputs = []
        for s in range(n):
            up = self.transpconvs[s](lres_input)  # (B, C_l, *S_l), l = n - 1 - s
            skip = self.skip_modules[n - 1 - s](skips, up)  # (B, C_l, *S_l), shaped like skips[l]
            x = self.stages[s](torch.cat((up, skip), 1))  # nnU-Net's order: upsampled first
            if self.deep_supervision:
                seg_outputs.append(self.seg_layers[s](x))
            elif s == n - 1:
                seg_outputs.append(self.seg_layers[-1](x))
            lres_input = x
        seg_outputs = seg_outputs[::-1]  # full resolution first
        return seg_outputs if self.deep_supervision else seg_outputs[0]


def parse_genotype(genotype: Genotype | Mapping[str, Any] | str | None) -> Genotype | None:
    """A genotype from its JSON text or dict (as a plans file holds it); None stays None.

    Raises:
        GenotypeError: the value is not a genotype of the project's search space.
    """
    if genotype is None or isinstance(genotype, Genotype):
        return genotype
    if isinstance(genotype, str) and not genotype.strip():
        return None
    try:
        return Genotype.from_json(genotype)
    except (json.JSONDecodeError, TypeError, KeyError) as exc:
        raise GenotypeError(f"genotype is not the JSON of an iac genotype: {exc}") from exc


class _SkipSeam:
    """The ``SkipUNet`` contract on top of an nnU-Net network with an :class:`IACUNetDecoder`."""

    decoder: IACUNetDecoder
    encoder: nn.Module

    @property
    def skip_modules(self) -> nn.ModuleList:
        """One skip module per level, called as ``m_l(skips, up_l)``."""
        return self.decoder.skip_modules

    @property
    def skip_channels(self) -> list[int]:
        """Channels of every encoder level (bottleneck last)."""
        return self.decoder.skip_channels

    @property
    def up_channels(self) -> list[int]:
        """Channels of the decoder's upsampled feature per level."""
        return self.decoder.up_channels

    @property
    def config(self) -> dict[str, Any]:
        """What :class:`iac.nas.supernet.SearchNetwork` reads (the spatial dimensions)."""
        return {"spatial_dims": convert_conv_op_to_dim(self.encoder.conv_op)}

    def replace_skips(self, modules: Sequence[nn.Module]) -> None:
        """Put ``modules`` (one per level) into the decoder's skip seam."""
        if len(modules) != len(self.decoder.skip_modules):
            raise ValueError(f"got {len(modules)} skip modules for {len(self.decoder.skip_modules)} levels")
        self.decoder.skip_modules = nn.ModuleList(modules)

    def _install(self, base: type, args: tuple, kwargs: dict, genotype) -> None:
        """Swap in :class:`IACUNetDecoder` (same parameter names) and implant ``genotype``'s cells.

        ``base`` is the nnU-Net class whose ``__init__`` got ``args``/``kwargs``; the
        decoder is rebuilt with the arguments that class hands to ``UNetDecoder``.
        """
        bound = inspect.signature(base.__init__).bind(self, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        n_conv = a["n_conv_per_stage_decoder"]
        extra = {"nonlin_first": a["nonlin_first"]} if "nonlin_first" in a else {}
        old = self.decoder
        self.decoder = IACUNetDecoder(self.encoder, a["num_classes"], n_conv, a["deep_supervision"], **extra)
        self.decoder.load_state_dict(old.state_dict())  # keep the weights the base class built
        self.genotype = parse_genotype(genotype)
        if self.genotype is not None:
            self._implant(self.genotype)

    def _implant(self, genotype: Genotype) -> None:
        dims = self.config["spatial_dims"]
        n_levels = len(self.decoder.skip_modules)
        if genotype.space.per_level and len(genotype.cells) != n_levels:
            raise GenotypeError(
                f"the genotype has {len(genotype.cells)} per-level cells; this network has {n_levels} skip levels"
            )

        def make_cell(level: int, skip_ch: int, up_ch: int) -> nn.Module:
            return DiscreteCell(genotype.cell(level), skip_ch, up_ch, genotype.space.cell_channels, dims,
                                n_inputs=genotype.space.n_inputs)

        implant(self, make_cell, dims)
        for skip in self.decoder.skip_modules:
            for module in skip.modules():
                setattr(module, _KEEP_INIT, True)

    def iac_skips(self) -> list[IACSkip]:
        """The implanted skip modules (empty without a genotype)."""
        return [m for m in self.decoder.skip_modules if isinstance(m, IACSkip)]


def _init_unless_cell(module: nn.Module, residual: bool) -> None:
    if getattr(module, _KEEP_INIT, False):
        return
    InitWeights_He(_HE_NEG_SLOPE)(module)
    if residual:
        init_last_bn_before_add_to_0(module)


class IACPlainConvUNet(_SkipSeam, PlainConvUNet):
    """nnU-Net's ``PlainConvUNet`` with the skip seam; parameter names unchanged.

    Takes every ``PlainConvUNet`` argument plus ``genotype`` (a genotype, its
    dict or JSON text; None = the plain skips, i.e. the baseline network).
    """

    def __init__(self, *args, genotype: Genotype | Mapping[str, Any] | str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._install(PlainConvUNet, args, kwargs, genotype)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net's He initialisation, except inside implanted cells."""
        _init_unless_cell(module, residual=False)


class IACResidualEncoderUNet(_SkipSeam, ResidualEncoderUNet):
    """nnU-Net's ``ResidualEncoderUNet`` (ResEnc plans) with the skip seam; parameter names unchanged."""

    def __init__(self, *args, genotype: Genotype | Mapping[str, Any] | str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._install(ResidualEncoderUNet, args, kwargs, genotype)

    @staticmethod
    def initialize(module: nn.Module) -> None:
        """nnU-Net's He initialisation (and zeroed last norm of residual blocks), except inside implanted cells."""
        _init_unless_cell(module, residual=True)


# nnU-Net's network class name -> the class with cells (what the plans command writes).
NETWORK_CLASSES = {
    "dynamic_network_architectures.architectures.unet.PlainConvUNet": "iac.nnunet.network.IACPlainConvUNet",
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet": "iac.nnunet.network.IACResidualEncoderUNet",
}
