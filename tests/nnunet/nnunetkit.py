"""Tiny nnU-Net networks for the nnU-Net tests (2 shared CPU cores)."""

from __future__ import annotations

import torch
from torch import nn

from iac.nas.genotype import CellGenotype, Genotype, SearchSpace

CLASSES = 3
IMAGE = 16  # input side, a multiple of 2 ** (stages - 1)

# PlainConvUNet / ResidualEncoderUNet arguments, as a 2-D nnU-Net plan would give them (narrowed).
PLAIN_KWARGS = dict(
    input_channels=1, n_stages=3, features_per_stage=[4, 8, 16], conv_op=nn.Conv2d,
    kernel_sizes=[[3, 3]] * 3, strides=[[1, 1], [2, 2], [2, 2]], n_conv_per_stage=[2, 2, 2],
    num_classes=CLASSES, n_conv_per_stage_decoder=[2, 2], conv_bias=True, norm_op=nn.InstanceNorm2d,
    norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
)
RESENC_KWARGS = dict(
    input_channels=1, n_stages=3, features_per_stage=[4, 8, 16], conv_op=nn.Conv2d,
    kernel_sizes=[[3, 3]] * 3, strides=[[1, 1], [2, 2], [2, 2]], n_blocks_per_stage=[1, 2, 2],
    num_classes=CLASSES, n_conv_per_stage_decoder=[1, 1], conv_bias=True, norm_op=nn.InstanceNorm2d,
    norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
)

SPACE = SearchSpace(nodes=2, cell_channels=4)
GENOTYPE = Genotype(
    SPACE,
    (CellGenotype(((("sep_conv_3x3", 0), ("skip_connect", 1)), (("dil_conv_3x3", 2), ("max_pool_3x3", 0)))),),
)


def trained_like(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give every parameter and buffer non-trivial values, as training would (zero-init norms included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return net
