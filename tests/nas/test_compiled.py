"""``compile_cells``: compiled and eager cells compute the same; without a compiler, one warning and eager."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from iac.nas import SearchNetwork
from iac.nas import compiled as compiled_mod
from iac.nas.compiled import compile_cells, compiler_available
from iac.nas.genotype import SearchSpace

pytestmark = pytest.mark.usefixtures("single_thread")

# The smallest space that still runs a pooling op, a conv op and the bypass (k > 1): compiling is slow on CPU.
TINY = SearchSpace(ops=("none", "skip_connect", "avg_pool_3x3", "dil_conv_3x3"), nodes=1, k=2, cell_channels=4)


def _pair(make_unet):
    torch.manual_seed(0)
    net = SearchNetwork(make_unet(), TINY).train()
    for p in net.arch_parameters():  # away from the near-uniform start, so the weights matter
        p.data.normal_()
    for skip in net.iac_skips():  # a zero projection would hide the cells from the output
        torch.nn.init.normal_(skip.proj.weight, std=0.1)
    return net, copy.deepcopy(net)


def _step(net, x):
    y = net(x)
    params = [p for p in net.parameters() if p.requires_grad]
    return y, torch.autograd.grad(y.square().mean(), params)


def _assert_same(a, b, tol=1e-4):
    (ya, ga), (yb, gb) = a, b
    assert torch.allclose(ya, yb, atol=tol, rtol=tol)
    for u, v in zip(ga, gb):
        assert torch.allclose(u, v, atol=tol, rtol=tol)


def test_compiled_cells_match_eager_also_after_pruning(make_unet, image):
    """The cells' forward and backward graphs as captured by torch.compile (the "aot_eager" backend: code
    generation for a whole cell takes minutes on CPU, see the next test for inductor itself)."""
    net, ref = _pair(make_unet)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fall-back to eager would hide the compiled path
        assert compile_cells(net, backend="aot_eager")
        assert compile_cells(net, backend="aot_eager")  # idempotent: one wrapper
        assert all(type(cell.__dict__["forward"]).__name__ == "_CompiledForward" for cell in net.cells())
        _assert_same(_step(net, image), _step(ref, image))
        for m in (net, ref):  # a pruning event: the compiled code is made again
            m.prune_ops(0, 0, ["dil_conv_3x3"])
        _assert_same(_step(net, image), _step(ref, image))
    for k, v in ref.state_dict().items():  # the same running statistics
        assert torch.allclose(net.state_dict()[k].float(), v.float(), atol=1e-4), k


def test_inductor_compiles_a_tiny_cell_part_to_the_same_values():
    """The C++ code generation the CPU backend needs works here (on a tiny part of a cell: a whole cell takes
    minutes to compile on CPU)."""
    from iac.nas.mixed_op import channel_shuffle

    ok, reason = compiler_available("cpu")
    if not ok:
        pytest.skip(f"no torch.compile here: {reason}")

    def part(x, w):  # the bypass-and-shuffle of a node, weighted
        return channel_shuffle(torch.cat([torch.relu(x[:, :2]) * w, x[:, 2:] * w], 1), 2)

    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    w = torch.tensor(0.7, requires_grad=True)
    y = torch.compile(part)(x, w)
    y_ref = part(x, w)
    assert torch.allclose(y, y_ref, atol=1e-6)
    g = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, (x, w), g), torch.autograd.grad(y_ref, (x, w), g)):
        assert torch.allclose(a, b, atol=1e-5)


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(make_unet, image, monkeypatch):
    def broken_compile(fn, *args, **kwargs):
        def run(*a, **k):
            raise RuntimeError("no working C++ compiler")

        return run

    monkeypatch.setattr(compiled_mod, "compiler_available", lambda device="cpu": (True, ""))
    monkeypatch.setattr(torch, "compile", broken_compile)
    net, ref = _pair(make_unet)
    assert compile_cells(net)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        first = _step(net, image)
        second = _step(net, image)
    runtime = [w for w in record if issubclass(w.category, RuntimeWarning)]
    assert len(runtime) == 1 and "no working C++ compiler" in str(runtime[0].message)
    _assert_same(first, _step(ref, image))
    _assert_same(second, _step(ref, image))


def test_without_a_cpu_compiler_the_cells_stay_eager(make_unet, monkeypatch):
    from torch._inductor import config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("no-such-compiler-iac",))
    ok, reason = compiler_available("cpu")
    assert not ok and "no-such-compiler-iac" in reason
    net, _ = _pair(make_unet)
    with pytest.warns(RuntimeWarning, match="run eagerly"):
        assert not compile_cells(net)
    assert all("forward" not in cell.__dict__ for cell in net.cells())
