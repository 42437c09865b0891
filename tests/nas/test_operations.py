"""Every candidate operation: shape, resolution and gradient flow."""

from __future__ import annotations

import pytest
import torch

from iac.config import DARTS_OPS
from iac.nas.operations import OPS, check_op_names

pytestmark = pytest.mark.usefixtures("single_thread")

C = 4


def test_registry_has_the_darts_names_in_canonical_order():
    assert tuple(OPS) == DARTS_OPS


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_op_keeps_shape_and_passes_gradients(name, spatial_dims):
    torch.manual_seed(0)
    op = OPS[name](C, spatial_dims)
    side = 8 if spatial_dims == 2 else 4
    x = torch.randn(2, C, *([side] * spatial_dims), requires_grad=True)
    y = op(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    if name == "none":
        assert torch.count_nonzero(y) == 0 and not y.requires_grad
        return
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) > 0
    for pname, p in op.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, pname


def test_norms_are_not_affine():
    for name in OPS:
        for module in OPS[name](C, 2).modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                assert not module.affine


@pytest.mark.parametrize("bad", [["conv_7x7"], [], ["skip_connect", "skip_connect"]])
def test_bad_op_names_are_refused(bad):
    with pytest.raises(ValueError, match="operation|empty|repeats"):
        check_op_names(bad)


def test_unsupported_spatial_dims_is_refused():
    with pytest.raises(ValueError, match="spatial_dims"):
        OPS["sep_conv_3x3"](C, 4)
