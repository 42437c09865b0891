"""The fast paths compute what the straightforward ones compute.

References here use the modules' own ``nn.Conv``/``nn.BatchNorm``/pool calls
and one :class:`MixedOp`-style sum per edge, with the shuffle applied per edge;
the optimised code (custom depthwise backward, 1x1 convs as matrix products,
separable average pooling, edges of one source node batched, nodes assembled
once) must match them in outputs, gradients and BatchNorm running statistics.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from iac.config import DARTS_OPS
from iac.nas.cell import SearchCell
from iac.nas.genotype import SearchSpace, edge_key
from iac.nas.mixed_op import MixedOp, channel_shuffle
from iac.nas.operations import OPS, DilConv, Pool, SepConv, depthwise, pointwise_conv

pytestmark = pytest.mark.usefixtures("single_thread")

TOL = dict(atol=1e-4, rtol=1e-4)


def _ref_op(op, x):
    """An operation computed with plain module calls."""
    if isinstance(op, SepConv):
        h = op.bn1(op.pw1(op.dw1(torch.relu(x))))
        return op.bn2(op.pw2(op.dw2(torch.relu(h))))
    if isinstance(op, DilConv):
        return op.bn(op.pw(op.dw(torch.relu(x))))
    if isinstance(op, Pool):
        return op.bn(op.pool(x))
    return op(x)


def _ref_mixed(mixed, x, w):
    c = mixed.C // mixed.k
    out = sum(w[i] * _ref_op(mixed.ops[n], x[:, :c]) for i, n in enumerate(mixed.op_names) if n != "none")
    if isinstance(out, int):
        out = torch.zeros_like(x[:, :c])
    return channel_shuffle(torch.cat([out, x[:, c:]], 1), mixed.k) if mixed.k > 1 else out


def _ref_cell(cell, skip, up, op_w, edge_w):
    states = [proj(t) for proj, t in zip(cell.inputs, (skip, up))]
    e = 0
    for j in cell.space.node_ids:
        node = 0
        for i in range(j):
            key = edge_key(i, j)
            if key in cell.edges:
                node = node + edge_w[e] * _ref_mixed(cell.edges[key], states[i], op_w[e])
            e += 1
        states.append(node)
    return cell.output(torch.cat(states[cell.space.n_inputs :], 1))


def _buffers(module):
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("repeats", [1, 3])
@pytest.mark.parametrize("k,d", [(3, 1), (5, 1), (3, 2), (5, 2)])
def test_depthwise_matches_conv2d(k, d, repeats):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 9, 8, requires_grad=True)
    w = torch.randn(5 * repeats, 1, k, k, requires_grad=True)
    pad = d * (k - 1) // 2
    g = torch.randn(3, 5 * repeats, 9, 8)
    ref = F.conv2d(x.repeat(1, repeats, 1, 1), w, padding=pad, dilation=d, groups=5 * repeats)
    ref_grads = torch.autograd.grad(ref, (x, w), g)
    out = depthwise(x, w, pad, d, repeats=repeats)
    grads = torch.autograd.grad(out, (x, w), g)
    assert torch.allclose(out, ref, **TOL)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, **TOL)


@pytest.mark.parametrize("dims", [2, 3])
def test_pointwise_and_avg_pool_match_modules(dims):
    torch.manual_seed(0)
    conv = OPS["sep_conv_3x3"](4, dims).pw1
    x = torch.randn(2, 4, *([5] * dims), requires_grad=True)
    assert torch.allclose(pointwise_conv(conv, x), conv(x), **TOL)
    pool = OPS["avg_pool_3x3"](4, dims)
    assert torch.allclose(pool.pooled(x), pool.pool(x), **TOL)
    (g1,) = torch.autograd.grad(pool.pooled(x).square().sum(), x)
    (g2,) = torch.autograd.grad(pool.pool(x).square().sum(), x)
    assert torch.allclose(g1, g2, **TOL)


def test_max_pool_is_bit_identical_to_the_module_with_ties():
    pool = OPS["max_pool_3x3"](4, 2)
    torch.manual_seed(0)
    x = torch.randint(0, 3, (2, 4, 9, 9)).float().requires_grad_()  # many ties in every window
    g = torch.randn(2, 4, 9, 9)
    fast, ref = pool.pooled(x), pool.pool(x)
    assert torch.equal(fast, ref) and fast.is_contiguous()
    (g1,) = torch.autograd.grad(fast, x, g)
    (g2,) = torch.autograd.grad(ref, x, g)
    assert torch.equal(g1, g2)


@pytest.mark.parametrize("name", list(OPS))
def test_each_op_matches_its_plain_form(name):
    torch.manual_seed(0)
    op = OPS[name](4, 2)
    ref = copy.deepcopy(op)
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    y, y_ref = op(x), _ref_op(ref, x)
    assert torch.allclose(y, y_ref, **TOL)
    if name == "none":
        return
    g = torch.randn_like(y)
    params, ref_params = list(op.parameters()), list(ref.parameters())
    grads = torch.autograd.grad(y, [x, *params], g)
    ref_grads = torch.autograd.grad(y_ref, [x, *ref_params], g)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, **TOL)


def _cell_case(space, prune):
    torch.manual_seed(0)
    cell = SearchCell(space, 6, 5 if space.n_inputs == 2 else None, 2)
    g = torch.Generator().manual_seed(1)
    op_w, edge_w = [], []
    for e, (i, j) in enumerate(space.edges()):
        key = edge_key(i, j)
        if prune and e % 3 == 1:
            cell.edges[key] = cell.edges[key].keep([space.ops[(e % (len(space.ops) - 1)) + 1]])
        if prune and e == 2:
            cell.edges[key] = cell.edges[key].keep(["none"])
        n = len(cell.edges[key].op_names)
        op_w.append(torch.softmax(torch.randn(n, generator=g), 0).requires_grad_())
        edge_w.append(torch.rand((), generator=g).requires_grad_())
    if prune:
        del cell.edges[edge_key(*space.edges()[-1])]
        op_w[-1] = edge_w[-1] = None
    return cell, op_w, edge_w


@pytest.mark.parametrize(
    "space, prune, train",
    [
        (SearchSpace(cell_channels=8, k=4, nodes=3), False, True),
        (SearchSpace(cell_channels=8, k=4, nodes=3), True, True),
        (SearchSpace(cell_channels=8, k=4, nodes=3), False, False),
        (SearchSpace(cell_channels=4, k=1, nodes=2, n_inputs=1), False, True),
    ],
)
@pytest.mark.parametrize("keep_inputs_only, recompute_depthwise", [(True, True), (True, False), (False, False)])
def test_search_cell_matches_per_edge_reference(space, prune, train, keep_inputs_only, recompute_depthwise,
                                                monkeypatch):
    import iac.nas.mixed_op as mixed_op

    monkeypatch.setattr(mixed_op, "KEEP_INPUTS_ONLY", keep_inputs_only)
    monkeypatch.setattr(mixed_op, "RECOMPUTE_DEPTHWISE", recompute_depthwise)
    cell, op_w, edge_w = _cell_case(space, prune)
    ref = copy.deepcopy(cell)
    cell.train(train), ref.train(train)
    skip = torch.randn(3, 6, 8, 8, requires_grad=True)
    up = torch.randn(3, 5, 8, 8) if space.n_inputs == 2 else None
    y = cell(skip, up, op_w, edge_w)
    y_ref = _ref_cell(ref, skip, up, op_w, edge_w)
    assert torch.allclose(y, y_ref, **TOL)
    g = torch.randn_like(y)
    arch = [t for t in (*op_w, *edge_w) if t is not None]
    grads = torch.autograd.grad(y, [skip, *arch, *cell.parameters()], g, allow_unused=True)
    ref_grads = torch.autograd.grad(y_ref, [skip, *arch, *ref.parameters()], g, allow_unused=True)
    for a, b in zip(grads, ref_grads):  # None: a `none`-only edge's weight is unused by both
        assert (a is None and b is None) or torch.allclose(a, b, **TOL)
    ref_buf = _buffers(ref)
    for k, v in _buffers(cell).items():
        assert torch.allclose(v, ref_buf[k], **TOL), k
    assert list(cell.state_dict()) == list(ref.state_dict())


def test_mixed_op_forward_still_matches_reference():
    torch.manual_seed(0)
    op = MixedOp(8, DARTS_OPS, 4).train()
    ref = copy.deepcopy(op)
    x = torch.randn(2, 8, 6, 6)
    w = torch.softmax(torch.randn(len(DARTS_OPS)), 0)
    assert torch.allclose(op(x, w), _ref_mixed(ref, x, w), **TOL)


@pytest.mark.parametrize("prune", [False, True])
def test_search_cell_under_autocast_is_as_accurate_as_plain_modules(prune):
    """Mixed precision (CPU bfloat16 here; float16 on CUDA) runs through every fast path, pruned edges too,
    keeps float32 gradients, and loses no more precision than the plain modules under the same autocast."""
    space = SearchSpace(cell_channels=8, k=4, nodes=3)
    cell, op_w, edge_w = _cell_case(space, prune)
    ref_amp, ref = copy.deepcopy(cell), copy.deepcopy(cell)
    skip = torch.randn(3, 6, 8, 8, requires_grad=True)
    up = torch.randn(3, 5, 8, 8)
    g = torch.randn(3, 6, 8, 8, generator=torch.Generator().manual_seed(2))
    arch = [t for t in (*op_w, *edge_w) if t is not None]

    def run(fn, module, amp):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            y = fn(module, skip, up, op_w, edge_w)
        grads = torch.autograd.grad((y.float() * g).sum(), [skip, *arch, *module.parameters()], allow_unused=True)
        return y, grads

    y, grads = run(lambda m, *a: m(*a), cell, True)
    y_ref_amp, ref_amp_grads = run(_ref_cell, ref_amp, True)
    y_ref, ref_grads = run(_ref_cell, ref, False)
    assert y.dtype == y_ref_amp.dtype == torch.bfloat16

    def rel(a, b):
        return float((a.detach().float() - b.detach()).norm() / b.detach().norm())

    assert rel(y, y_ref) <= 1.5 * rel(y_ref_amp, y_ref) + 0.01
    for a, t in zip(grads, [skip, *arch, *cell.parameters()]):
        assert a is None or (a.dtype == t.dtype == torch.float32 and torch.isfinite(a).all())
    kept = [i for i, b in enumerate(ref_grads) if b is not None]
    fast = torch.cat([grads[i].flatten() for i in kept])
    plain_amp = torch.cat([ref_amp_grads[i].flatten() for i in kept])
    exact = torch.cat([ref_grads[i].flatten() for i in kept])
    assert rel(fast, exact) <= 1.5 * rel(plain_amp, exact) + 0.01, (rel(fast, exact), rel(plain_amp, exact))


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])  # None: cumulative average, the per-module fallback
def test_batch_norm_group_scale_is_the_weight_times_each_norm(n, train, momentum):
    from iac.nas.mixed_op import batch_norm_group

    torch.manual_seed(0)
    bns = [torch.nn.BatchNorm2d(4, affine=False, momentum=momentum).train(train) for _ in range(n)]
    for bn in bns:
        bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)
    refs = copy.deepcopy(bns)
    x = torch.randn(5, 4 * n, 6, 6, requires_grad=True)
    scale = torch.rand(n, requires_grad=True)
    y = batch_norm_group(x, bns, scale=scale)
    y_ref = torch.cat([scale[m] * bn(part) for m, (bn, part) in enumerate(zip(refs, x.chunk(n, 1)))], 1)
    assert torch.allclose(y, y_ref, **TOL)
    g = torch.randn_like(y)
    for a, b in zip(torch.autograd.grad(y, (x, scale), g), torch.autograd.grad(y_ref, (x, scale), g)):
        assert torch.allclose(a, b, **TOL)
    for bn, ref in zip(bns, refs):
        for k, v in bn.state_dict().items():
            assert torch.allclose(v.float(), ref.state_dict()[k].float(), **TOL), k


def _saved_storages(fn):
    """Run ``fn()`` and return the distinct storages autograd saved for its backward pass (nbytes)."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, seen


@pytest.mark.parametrize("relu, shared, scaled", [(True, True, False), (False, False, True), (False, True, True)])
def test_conv_norm_keeps_only_its_input_and_matches_the_separate_calls(relu, shared, scaled):
    """The fused depthwise -> 1x1 -> norm (-> ReLU) keeps no activation but its input, with the same gradients
    (float64 gradcheck) and running statistics as the separate calls."""
    from iac.nas.mixed_op import batch_norm_group, conv_norm

    torch.manual_seed(0)
    n, c = 2, 2  # tiny: gradcheck perturbs every input element
    ops = [SepConv(c, 3, 2).double().train() for _ in range(n)]
    refs = copy.deepcopy(ops)
    x = torch.randn(2, c if shared else n * c, 5, 5, dtype=torch.float64, requires_grad=True)
    scale = torch.rand(n, dtype=torch.float64, requires_grad=True) if scaled else None

    def fused(x, *s):
        return conv_norm(x, [o.dw1 for o in ops], [o.pw1 for o in ops], [o.bn1 for o in ops],
                         scale=s[0] if s else None, relu=relu, shared=shared)

    y, saved = _saved_storages(lambda: fused(x, *([scale] if scaled else [])))
    assert max(saved.values()) <= x.numel() * x.element_size()  # nothing as large as the output (n*c channels)
    parts = [x] * n if shared else list(x.chunk(n, 1))
    h = torch.cat([depthwise(p, r.dw1.weight, 1, 1) for p, r in zip(parts, refs)], 1)
    h = torch.cat([pointwise_conv(r.pw1, q) for r, q in zip(refs, h.chunk(n, 1))], 1)
    y_ref = batch_norm_group(h, [r.bn1 for r in refs], scale=scale)
    y_ref = torch.relu(y_ref) if relu else y_ref
    assert torch.allclose(y, y_ref, atol=1e-10)
    for o, r in zip(ops, refs):
        assert torch.allclose(o.bn1.running_var, r.bn1.running_var) and torch.equal(
            o.bn1.num_batches_tracked, r.bn1.num_batches_tracked)
    inputs = (x, scale) if scaled else (x,)
    assert torch.autograd.gradcheck(fused, inputs, atol=1e-6)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooled_norm_keeps_only_its_input_and_has_exact_gradients(kind):
    from iac.nas.mixed_op import _pool_norm

    torch.manual_seed(0)
    pools = [Pool(2, kind, 2).double().train() for _ in range(3)]
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    coef = torch.rand(3, dtype=torch.float64, requires_grad=True)
    y, saved = _saved_storages(lambda: _pool_norm(x, pools[0], [p.bn for p in pools], coef))
    assert set(saved) <= {x.untyped_storage().data_ptr(), coef.untyped_storage().data_ptr()} | {
        k for k, v in saved.items() if v <= 2 * 8}  # x, coef and the per-channel statistics
    ref = torch.stack([coef[e] * F.batch_norm(pools[0].pool(x), None, None, training=True) for e in range(3)], 1)
    assert torch.allclose(y, ref, atol=1e-10)
    assert torch.autograd.gradcheck(lambda x, w: _pool_norm(x, pools[0], [p.bn for p in pools], w), (x, coef),
                                    atol=1e-6)


def test_recompute_backward_setting_is_what_the_cell_keeps_for_its_backward_pass():
    """``keep_inputs_only(False)`` lets autograd keep the intermediates; the setting is restored after the block."""
    import iac.nas.mixed_op as mixed_op

    space = SearchSpace(cell_channels=8, k=4, nodes=3)
    cell, op_w, edge_w = _cell_case(space, prune=False)
    cell.train()
    skip, up = torch.randn(3, 6, 8, 8, requires_grad=True), torch.randn(3, 5, 8, 8)
    saved = {}
    for enabled in (True, False):
        with mixed_op.keep_inputs_only(enabled):
            assert mixed_op.KEEP_INPUTS_ONLY is enabled
            y, seen = _saved_storages(lambda: cell(skip, up, op_w, edge_w))
        saved[enabled] = sum(seen.values())
        y.sum().backward()
    assert mixed_op.KEEP_INPUTS_ONLY is True
    assert saved[True] < 0.6 * saved[False], saved


@pytest.mark.parametrize("setting, device, expected", [
    ("auto", "cpu", False), ("auto", "cuda", True), ("true", "cpu", True), ("false", "cuda", False),
])
def test_recompute_backward_auto_is_on_for_cuda_only(setting, device, expected):
    from iac.nas.search import recompute_enabled

    assert recompute_enabled(setting, torch.device(device)) is expected


def test_recompute_backward_rejects_other_values():
    from iac.config import ConfigError, SearchConfig

    with pytest.raises(ConfigError, match="recompute_backward"):
        SearchConfig(recompute_backward="yes")
