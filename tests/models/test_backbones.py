"""Shape, gradient, rebuild and error checks of the SkipUNet backbones."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn

from iac.models import BACKBONES, PRESETS, SKIP_KINDS, create_backbone, registry_backbone_name

BATCH = 2
SIZE = 32  # a multiple of 2 ** (depth - 1) for every preset
IN_CHANNELS = 1
NUM_CLASSES = 3
TINY_3D = (4, 8, 16)  # widths of the 3-D checks
SIZE_3D = 8
BASELINE_SKIPS = ("identity", "attention", "residual", "dense")

# Every backbone x baseline skip: [name, skip].
TEST_CASES = [list(case) for case in itertools.product(BACKBONES, BASELINE_SKIPS)]

# (kwargs of create_backbone, the names the error must list).
ILL_CASES = [
    [{"name": "unt"}, "valid: unet, resunet, basicunet — did you mean 'unet'?"],
    [{"name": "unet", "skip": "atention"}, "valid: identity, attention, residual, dense, iac"],
    [{"name": "unet", "preset": "huge"}, "valid: small, base, wide"],
    [{"name": "unet", "features": (8,)}, "at least 2 positive widths"],
    [{"name": "unet", "features": (8, 0)}, "at least 2 positive widths"],
    [{"name": "unet", "spatial_dims": 4}, "spatial_dims must be one of 1, 2, 3"],
    [{"name": "unet", "in_channels": 0}, "in_channels must be a positive int"],
]


def _build(name: str, skip: str = "identity", **kwargs) -> nn.Module:
    kwargs.setdefault("in_channels", IN_CHANNELS)
    kwargs.setdefault("num_classes", NUM_CLASSES)
    return create_backbone(name, skip=skip, **kwargs)


@pytest.mark.parametrize("name, skip", TEST_CASES)
def test_forward_backward(name, skip):
    torch.manual_seed(0)
    net = _build(name, skip)
    x = torch.randn(BATCH, IN_CHANNELS, SIZE, SIZE)
    y = net(x)  # (B, num_classes, H, W)
    assert y.shape == (BATCH, NUM_CLASSES, SIZE, SIZE)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    for pname, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("name, skip", TEST_CASES)
def test_config_rebuilds_architecture(name, skip):
    net = _build(name, skip)
    config = json.loads(json.dumps(net.config))  # JSON-able and round-trips
    rebuilt = create_backbone(**config)
    assert rebuilt.config == net.config
    shapes = {k: v.shape for k, v in net.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    rebuilt.load_state_dict(net.state_dict())


@pytest.mark.parametrize("name, skip", TEST_CASES)
def test_attributes(name, skip):
    net = _build(name, skip)
    depth = len(PRESETS[name]["small"])
    assert len(net.skip_modules) == depth - 1
    assert net.skip_channels == list(PRESETS[name]["small"])
    assert len(net.up_channels) == depth - 1
    assert (net.spatial_dims, net.num_classes, net.in_channels) == (2, NUM_CLASSES, IN_CHANNELS)
    skips = net.encoder(torch.randn(BATCH, IN_CHANNELS, SIZE, SIZE))
    assert [s.shape[1] for s in skips] == net.skip_channels
    assert [s.shape[-1] for s in skips] == [SIZE // 2**level for level in range(depth)]
    assert net.decoder(skips).shape == (BATCH, NUM_CLASSES, SIZE, SIZE)


@pytest.mark.parametrize("kwargs, message", ILL_CASES)
def test_ill_arguments(kwargs, message):
    kwargs = {"in_channels": IN_CHANNELS, "num_classes": NUM_CLASSES, **kwargs}
    with pytest.raises(ValueError, match=message):
        create_backbone(**kwargs)


@pytest.mark.parametrize("shape", [(BATCH, IN_CHANNELS, SIZE + 4, SIZE), (BATCH, IN_CHANNELS + 1, SIZE, SIZE), (BATCH, SIZE, SIZE)])
def test_bad_input_shape(shape):
    net = _build("unet")
    with pytest.raises(ValueError, match="multiple of 8|expected input"):
        net(torch.randn(*shape))


@pytest.mark.parametrize("name, skip", [[n, s] for n in BACKBONES for s in ("attention", "dense")])
def test_forward_3d(name, skip):
    net = _build(name, skip, spatial_dims=3, features=TINY_3D)
    x = torch.randn(BATCH, IN_CHANNELS, SIZE_3D, SIZE_3D, SIZE_3D)
    y = net(x)
    assert y.shape == (BATCH, NUM_CLASSES, SIZE_3D, SIZE_3D, SIZE_3D)
    y.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("name", list(BACKBONES))
def test_determinism(name):
    x = torch.randn(BATCH, IN_CHANNELS, SIZE, SIZE)
    outs = []
    for _ in range(2):
        torch.manual_seed(1)
        net = _build(name, "dense").eval()
        with torch.no_grad():
            outs.append((net.state_dict(), net(x)))
    (sd_a, y_a), (sd_b, y_b) = outs
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert torch.equal(y_a, y_b)


def test_parameter_groups_partition_parameters():
    net = _build("unet", "attention")
    backbone = {id(p) for p in net.backbone_parameters()}
    skip = {id(p) for p in net.skip_parameters()}
    assert skip and backbone and not backbone & skip
    assert backbone | skip == {id(p) for p in net.parameters()}
    assert not list(_build("unet").skip_parameters())


def test_replace_skips_with_modules_of_a_fresh_network():
    torch.manual_seed(0)
    net = _build("resunet")
    backbone_state = {k: v.clone() for k, v in net.state_dict().items()}
    donor = _build("resunet", "attention", skip_kwargs={"inter_channels": 4})
    net.replace_skips(list(donor.skip_modules), kind="attention", skip_kwargs={"inter_channels": 4})
    assert net.config == donor.config
    assert all(torch.equal(net.state_dict()[k], v) for k, v in backbone_state.items())
    assert net(torch.randn(BATCH, IN_CHANNELS, SIZE, SIZE)).shape == (BATCH, NUM_CLASSES, SIZE, SIZE)
    rebuilt = create_backbone(**net.config)
    rebuilt.load_state_dict(net.state_dict())


def test_replace_skips_checks_its_input():
    net = _build("unet")
    with pytest.raises(ValueError, match="expected 3 skip modules"):
        net.replace_skips([nn.Identity()])
    with pytest.raises(TypeError, match="must be an nn.Module"):
        net.replace_skips([None] * len(net.skip_modules))
    with pytest.raises(ValueError, match="unknown skip"):
        net.replace_skips(list(net.skip_modules), kind="gate")
    net.replace_skips(list(net.skip_modules))
    assert net.config["skip"] == "custom"


class _WrongShape(nn.Module):
    def forward(self, skips, up):
        return up[:, :1]


def test_skip_module_of_wrong_shape_is_reported():
    net = _build("unet")
    net.replace_skips([_WrongShape() for _ in net.skip_modules])
    with pytest.raises(RuntimeError, match="_WrongShape of level 2"):
        net(torch.randn(BATCH, IN_CHANNELS, SIZE, SIZE))


def test_presets_and_registry_names():
    for name, presets in PRESETS.items():
        assert set(presets) == {"small", "base", "wide"}
        widths = [presets[p] for p in ("small", "base", "wide")]
        assert all(a[0] < b[0] for a, b in zip(widths, widths[1:]))
    assert set(SKIP_KINDS) == {"identity", "attention", "residual", "dense", "iac"}
    assert registry_backbone_name("unet", "small") == "unet"
    assert registry_backbone_name("unet", "wide") == "unet-wide"
    assert registry_backbone_name("basicunet", "base") == "basicunet-base"
    with pytest.raises(ValueError, match="valid: small, base, wide"):
        registry_backbone_name("unet", "larg")
    with pytest.raises(ValueError, match="did you mean 'resunet'"):
        registry_backbone_name("resnet", "small")
