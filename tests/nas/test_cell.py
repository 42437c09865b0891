"""Search and discrete cells: shapes, gradient flow, dead edges, one-input cells."""

from __future__ import annotations

import pytest
import torch

from iac.nas.cell import DiscreteCell, SearchCell
from iac.nas.genotype import CellGenotype, SearchSpace

pytestmark = pytest.mark.usefixtures("single_thread")

SKIP_CH, UP_CH = 6, 5


def _weights(space, seed=0):
    g = torch.Generator().manual_seed(seed)
    alphas = [torch.randn(len(space.ops), generator=g).requires_grad_() for _ in space.edges()]
    betas = [torch.randn(len(space.node_edges(j)), generator=g).requires_grad_() for j in space.node_ids]
    op_w = [torch.softmax(a, 0) for a in alphas]
    edge_w = [None] * len(op_w)
    for m, j in enumerate(space.node_ids):
        b = torch.softmax(betas[m], 0)
        for pos, e in enumerate(space.node_edges(j)):
            edge_w[e] = b[pos]
    return alphas, betas, op_w, edge_w


def test_search_cell_shape_and_gradients(space):
    torch.manual_seed(0)
    cell = SearchCell(space, SKIP_CH, UP_CH, 2)
    skip, up = torch.randn(2, SKIP_CH, 8, 8), torch.randn(2, UP_CH, 8, 8)
    alphas, betas, op_w, edge_w = _weights(space)
    y = cell(skip, up, op_w, edge_w)
    assert y.shape == skip.shape
    (y * torch.randn_like(y)).sum().backward()
    for name, p in cell.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
    for a in alphas:
        assert torch.count_nonzero(a.grad) > 0
    for b in betas:
        assert torch.count_nonzero(b.grad) == b.numel()


def test_dead_edges_are_skipped(space):
    torch.manual_seed(0)
    cell = SearchCell(space, SKIP_CH, UP_CH, 2)
    _, _, op_w, edge_w = _weights(space)
    del cell.edges["1->2"]
    op_w[1] = edge_w[1] = None
    y = cell(torch.randn(2, SKIP_CH, 8, 8), torch.randn(2, UP_CH, 8, 8), op_w, edge_w)
    assert y.shape == (2, SKIP_CH, 8, 8)


def test_one_input_cell():
    space = SearchSpace(n_inputs=1, nodes=2, cell_channels=4, k=2)
    cell = SearchCell(space, SKIP_CH, None, 2)
    _, _, op_w, edge_w = _weights(space)
    assert cell(torch.randn(2, SKIP_CH, 8, 8), None, op_w, edge_w).shape == (2, SKIP_CH, 8, 8)


def test_two_input_cell_needs_the_decoder_feature(space):
    with pytest.raises(ValueError, match="up_ch"):
        SearchCell(space, SKIP_CH, None, 2)
    cell = SearchCell(space, SKIP_CH, UP_CH, 2)
    _, _, op_w, edge_w = _weights(space)
    with pytest.raises(ValueError, match="spatial size"):
        cell(torch.randn(2, SKIP_CH, 8, 8), torch.randn(2, UP_CH, 4, 4), op_w, edge_w)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_discrete_cell_builds_only_the_chosen_ops(spatial_dims):
    torch.manual_seed(0)
    genotype = CellGenotype(((("sep_conv_3x3", 0), ("skip_connect", 1)), (("dil_conv_5x5", 2), ("avg_pool_3x3", 0))))
    cell = DiscreteCell(genotype, SKIP_CH, UP_CH, 8, spatial_dims)
    assert sorted(cell.ops) == ["0->2", "0->3", "1->2", "2->3"]
    shape = (2, SKIP_CH) + (6,) * spatial_dims
    skip, up = torch.randn(shape), torch.randn((2, UP_CH) + (6,) * spatial_dims)
    y = cell(skip, up)
    assert y.shape == skip.shape
    y.square().mean().backward()
    for name, p in cell.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
    assert not any("alpha" in n or "beta" in n for n, _ in cell.named_parameters())
