"""Skip modules: output shapes, kind-specific behaviour, lazy ``iac`` resolution."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from iac.models import create_backbone, create_skip
from iac.models.skips import AttentionGate, ResPath

BATCH = 2
SIZE = 32
BASELINE_SKIPS = ("identity", "attention", "residual", "dense")
TINY_3D = (4, 8, 16)
SIZE_3D = 8


def _features(spatial_dims: int = 2, features=None):
    """Encoder skips and per-level up features of a small unet."""
    torch.manual_seed(0)
    net = create_backbone("unet", 1, 2, spatial_dims=spatial_dims, features=features)
    size = SIZE if spatial_dims == 2 else SIZE_3D
    skips = net.encoder(torch.randn(BATCH, 1, *([size] * spatial_dims)))
    ups = [torch.randn(BATCH, c, *skips[level].shape[2:]) for level, c in enumerate(net.up_channels)]
    return net, skips, ups


# [kind, spatial_dims, features]
TEST_CASES = [[kind, 2, None] for kind in BASELINE_SKIPS] + [[kind, 3, TINY_3D] for kind in BASELINE_SKIPS]


@pytest.mark.parametrize("kind, spatial_dims, features", TEST_CASES)
def test_output_matches_skip_shape(kind, spatial_dims, features):
    net, skips, ups = _features(spatial_dims, features)
    for level, up in enumerate(ups):
        module = create_skip(kind, level, net.skip_channels, net.up_channels, spatial_dims)
        assert module(skips, up).shape == skips[level].shape


def test_identity_returns_the_skip():
    net, skips, ups = _features()
    assert create_skip("identity", 1, net.skip_channels, net.up_channels, 2)(skips, ups[1]) is skips[1]


def test_attention_coefficients_are_a_gate():
    net, skips, ups = _features()
    gate = create_skip("attention", 0, net.skip_channels, net.up_channels, 2)
    assert isinstance(gate, AttentionGate)
    alpha = gate.coefficients(skips, ups[0])
    assert alpha.shape == (BATCH, 1, SIZE, SIZE)
    assert ((alpha >= 0) & (alpha <= 1)).all()
    torch.testing.assert_close(gate(skips, ups[0]), skips[0] * alpha)


def test_respath_shortens_with_depth():
    net, _, _ = _features()
    lengths = [
        len(create_skip("residual", level, net.skip_channels, net.up_channels, 2).blocks)
        for level in range(len(net.up_channels))
    ]
    assert lengths == [4, 3, 2]
    path = create_skip("residual", 0, net.skip_channels, net.up_channels, 2, length=1)
    assert isinstance(path, ResPath) and len(path.blocks) == 1


def test_dense_skip_reads_the_deeper_skips():
    net, skips, ups = _features()
    dense = create_skip("dense", 0, net.skip_channels, net.up_channels, 2).eval()
    assert len(dense.nodes) == len(skips) - 1
    with torch.no_grad():
        before = dense(skips, ups[0])
        changed = [*skips[:-1], skips[-1] + 1.0]
        assert not torch.allclose(before, dense(changed, ups[0]))
    limited = create_skip("dense", 0, net.skip_channels, net.up_channels, 2, max_steps=1)
    assert len(limited.nodes) == 1


ILL_CASES = [
    [("gate", 0, [8, 16], [8], 2), ValueError, "unknown skip 'gate'; valid: identity, attention, residual, dense, iac"],
    [("attention", 1, [8, 16], [8], 2), ValueError, r"level must be an int in \[0, 1\)"],
    [("attention", 0, 8, 8, 2), TypeError, "per-level list"],
    [("dense", 0, [8, 16], [8], 5), ValueError, "spatial_dims"],
]


@pytest.mark.parametrize("args, error, message", ILL_CASES)
def test_ill_arguments(args, error, message):
    with pytest.raises(error, match=message):
        create_skip(*args)


def test_iac_kind_is_resolved_lazily(monkeypatch):
    calls = []

    def make_iac_skip(level, skip_channels, up_channels, spatial_dims, **kwargs):
        calls.append((level, skip_channels, up_channels, spatial_dims, kwargs))
        return create_skip("identity", level, skip_channels, up_channels, spatial_dims)

    fake = types.ModuleType("iac.nas.implant")
    fake.make_iac_skip = make_iac_skip
    monkeypatch.setitem(sys.modules, "iac.nas.implant", fake)
    net = create_backbone("unet", 1, 2, skip="iac", skip_kwargs={"genotype": {"cells": []}})
    assert len(calls) == len(net.skip_modules)
    assert calls[0] == (0, net.skip_channels, net.up_channels, 2, {"genotype": {"cells": []}})
    assert create_backbone(**net.config).config == net.config


def test_iac_kind_without_implant_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "iac.nas.implant", None)
    with pytest.raises(ImportError, match="iac.nas.implant.make_iac_skip"):
        create_skip("iac", 0, [8, 16], [8], 2)
    empty = types.ModuleType("iac.nas.implant")
    monkeypatch.setitem(sys.modules, "iac.nas.implant", empty)
    with pytest.raises(ImportError, match="make_iac_skip, which is not defined"):
        create_skip("iac", 0, [8, 16], [8], 2)
