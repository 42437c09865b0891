"""Tiny U-Nets and search spaces for the NAS tests.

``make_unet`` builds the project's ``SkipUNet`` through
``iac.models.create_backbone``; when that is unavailable it falls back to a
small stand-in following the same contract (``encoder`` returning the skips,
``skip_modules`` called as ``m(skips, up)``, ``skip_channels``,
``up_channels``, ``decoder(skips)``), with BatchNorm so buffers exist.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from iac.nas.genotype import SearchSpace

# Tiny sizes: 2 shared CPU cores.
FEATURES = (8, 16, 32)  # 3 levels, 2 skip levels
IMAGE = 16  # input side (multiple of 2 ** (levels - 1))
BATCH = 2
CLASSES = 3


class _IdentitySkip(nn.Module):
    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def forward(self, skips, up):
        return skips[self.level]


class StandInUNet(nn.Module):
    """A small U-Net with the SkipUNet contract (BatchNorm, transposed-conv upsampling)."""

    def __init__(self, in_channels: int = 1, num_classes: int = CLASSES, features=FEATURES, spatial_dims: int = 2):
        super().__init__()
        self.config = {"spatial_dims": spatial_dims}
        self.skip_channels = list(features)
        self.up_channels = list(features[:-1])

        def block(c_in, c_out, stride):
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.ReLU())

        widths_in = [in_channels, *features[:-1]]
        self.encoder_blocks = nn.ModuleList(
            block(c_in, c_out, 1 if level == 0 else 2) for level, (c_in, c_out) in enumerate(zip(widths_in, features))
        )
        self.ups = nn.ModuleList(nn.ConvTranspose2d(features[l + 1], features[l], 2, 2) for l in range(len(features) - 1))
        self.decoder_blocks = nn.ModuleList(block(2 * features[l], features[l], 1) for l in range(len(features) - 1))
        self.head = nn.Conv2d(features[0], num_classes, 1)
        self.skip_modules = nn.ModuleList(_IdentitySkip(l) for l in range(len(features) - 1))

    def encoder(self, x):
        skips = []
        for blk in self.encoder_blocks:
            x = blk(x)
            skips.append(x)
        return skips

    def decoder(self, skips):
        x = skips[-1]
        for l in reversed(range(len(self.skip_modules))):
            up = self.ups[l](x)
            x = self.decoder_blocks[l](torch.cat([self.skip_modules[l](skips, up), up], dim=1))
        return self.head(x)

    def replace_skips(self, modules):
        self.skip_modules = nn.ModuleList(modules)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def _build(name: str = "basicunet") -> nn.Module:
    try:
        from iac.models import create_backbone
    except ImportError:
        return StandInUNet()
    return create_backbone(name, 1, CLASSES, features=FEATURES)


@pytest.fixture
def make_unet():
    """``make_unet(name="basicunet", seed=0)``: a tiny trained-looking U-Net (eval BN stats set)."""

    def make(name: str = "basicunet", seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        net = _build(name)
        # Non-trivial BatchNorm statistics, as in a trained network.
        net.train()
        with torch.no_grad():
            net(torch.randn(4, 1, IMAGE, IMAGE))
        return net.eval()

    return make


@pytest.fixture
def space() -> SearchSpace:
    """The default operations and nodes at a tiny width."""
    return SearchSpace(cell_channels=8, k=4)


@pytest.fixture
def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(BATCH, 1, IMAGE, IMAGE)


@pytest.fixture(scope="session")
def tiny_phantom(tmp_path_factory):
    """A prepared 6-patient phantom at 32x32 (real prepare, real store), shared by the search tests."""
    from iac.config import PrepareConfig
    from iac.data.prepare import prepare_dataset
    from iac.data.store import PreparedDataset

    out = tmp_path_factory.mktemp("tiny_phantom") / "prepared"
    prepare_dataset(PrepareConfig(out=out, phantom_patients=6, phantom_size=32, workers=1), progress=False)
    return PreparedDataset(out)
