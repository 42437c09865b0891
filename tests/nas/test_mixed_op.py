"""Partial-channel mixed op: shapes, the bypass, the shuffle, and pruning by mask."""

from __future__ import annotations

import pytest
import torch

from iac.config import DARTS_OPS
from iac.nas.mixed_op import MixedOp, channel_shuffle

pytestmark = pytest.mark.usefixtures("single_thread")

C, K = 8, 4


def _weights(n: int) -> torch.Tensor:
    return torch.softmax(torch.randn(n), 0).requires_grad_()


def test_shape_and_gradients():
    torch.manual_seed(0)
    op = MixedOp(C, DARTS_OPS, K)
    x = torch.randn(2, C, 8, 8, requires_grad=True)
    w = _weights(len(DARTS_OPS))
    y = op(x, w)
    assert y.shape == x.shape
    (y * torch.randn_like(y)).sum().backward()
    assert w.grad is not None and torch.count_nonzero(w.grad[1:]) == len(DARTS_OPS) - 1
    assert w.grad[0] == 0  # `none` contributes zeros
    for name, p in op.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def test_bypass_channels_pass_unchanged_after_the_shuffle():
    torch.manual_seed(0)
    op = MixedOp(C, ("none",), K)  # the mixed slice becomes zeros
    x = torch.randn(2, C, 4, 4)
    y = op(x, torch.ones(1))
    expected = channel_shuffle(torch.cat([torch.zeros_like(x[:, : C // K]), x[:, C // K :]], 1), K)
    assert torch.equal(y, expected)


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    assert torch.equal(channel_shuffle(x, 1), x)


def test_only_masked_ops_are_built():
    op = MixedOp(C, ("skip_connect", "sep_conv_3x3"), K)
    assert list(op.ops) == ["skip_connect", "sep_conv_3x3"]


def test_keep_reuses_modules_and_keeps_order():
    torch.manual_seed(0)
    op = MixedOp(C, DARTS_OPS, K)
    small = op.keep(["dil_conv_3x3", "sep_conv_5x5"])
    assert small.op_names == ("sep_conv_5x5", "dil_conv_3x3")
    assert small.ops["sep_conv_5x5"] is op.ops["sep_conv_5x5"]
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in op.parameters())
    x = torch.randn(2, C, 8, 8)
    full_w = torch.zeros(len(DARTS_OPS))
    full_w[DARTS_OPS.index("sep_conv_5x5")] = 0.3
    full_w[DARTS_OPS.index("dil_conv_3x3")] = 0.7
    op.eval(), small.eval()
    assert torch.allclose(op(x, full_w), small(x, torch.tensor([0.3, 0.7])), atol=1e-6)


@pytest.mark.parametrize(
    "args, match",
    [((7, DARTS_OPS, 4), "divisible"), ((8, ("conv_9x9",), 4), "unknown operation")],
)
def test_bad_arguments_are_refused(args, match):
    with pytest.raises(ValueError, match=match):
        MixedOp(*args)


def test_keep_refuses_missing_op_and_wrong_weights():
    op = MixedOp(C, ("skip_connect", "avg_pool_3x3"), K)
    with pytest.raises(ValueError, match="only has"):
        op.keep(["sep_conv_3x3"])
    with pytest.raises(ValueError, match="do not fit"):
        op(torch.randn(1, C, 4, 4), torch.ones(3))


def test_shared_memo_gives_the_same_result_and_gradients():
    torch.manual_seed(0)
    a, b = MixedOp(C, DARTS_OPS, K), MixedOp(C, DARTS_OPS, K)
    x = torch.randn(2, C, 8, 8, requires_grad=True)
    w = torch.softmax(torch.randn(len(DARTS_OPS)), 0)
    plain = a(x, w) + 2 * b(x, w)
    (g_plain,) = torch.autograd.grad(plain.square().sum(), x)
    memo = {}
    shared = a(x, w, memo) + 2 * b(x, w, memo)
    assert set(memo) == {"relu", "max_pool_3x3", "avg_pool_3x3"}
    (g_shared,) = torch.autograd.grad(shared.square().sum(), x)
    assert torch.allclose(plain, shared, atol=1e-6) and torch.allclose(g_plain, g_shared, atol=1e-5)
