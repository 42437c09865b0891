"""The search network: parameter groups, frozen backbone, gradient flow,
pruning by mask, and masks that let a pruned checkpoint load into a fresh net."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from iac.nas.genotype import Genotype, SearchSpace
from iac.nas.supernet import SearchNetwork

pytestmark = pytest.mark.usefixtures("single_thread")


def _steps(net, image, n, arch=True):
    w_opt = torch.optim.Adam(net.weight_parameters(), lr=1e-2)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=1e-2)
    for _ in range(n):
        for opt in (w_opt, a_opt) if arch else (w_opt,):
            w_opt.zero_grad(), a_opt.zero_grad()
            net(image).square().mean().backward()
            opt.step()


def test_parameter_groups(make_unet, space):
    net = SearchNetwork(make_unet(), space)
    n_edges, n_nodes = len(space.edges()), space.nodes
    assert net.n_archs == 1 and len(net.arch_parameters()) == n_edges + n_nodes
    weights = {id(p) for p in net.weight_parameters()}
    assert weights.isdisjoint(id(p) for p in net.arch_parameters())
    cells = {id(p) for s in net.iac_skips() for p in (*s.cell.parameters(), *s.proj.parameters())}
    assert weights == cells
    unfrozen = SearchNetwork(make_unet(), space, freeze_backbone=False)
    assert len(unfrozen.weight_parameters()) > len(net.weight_parameters())
    names = dict(net.named_parameters())
    assert "archs.0.alpha.0" in names and "archs.0.beta.3" in names  # in state_dict and checkpoints
    per_level = SearchNetwork(make_unet(), SearchSpace(cell_channels=8, per_level=True))
    assert per_level.n_archs == len(per_level.iac_skips()) == 2


def test_frozen_backbone_is_bit_identical_after_search_steps(make_unet, space, image):
    unet = make_unet()
    live = unet.state_dict()  # tensors share storage with the modules
    before = {k: v.clone() for k, v in live.items()}
    assert any("running_mean" in k for k in before)  # buffers are covered
    net = SearchNetwork(unet, space)
    net.train()
    _steps(net, image, 3)
    for k, v in before.items():
        assert torch.equal(live[k], v), k
    frozen_training = [m.training for s in net.iac_skips() for m in s.inner.modules()]
    assert not any(frozen_training) and net.iac_skips()[0].cell.training


def test_gradients_reach_cells_alpha_and_beta_after_one_weight_step(make_unet, space, image):
    net = SearchNetwork(make_unet(), space).train()
    _steps(net, image, 1, arch=False)  # moves the zero projection
    for p in net.parameters():
        p.grad = None
    net(image).square().mean().backward()
    for name, p in net.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
            assert torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name


def test_edge_states_and_genotype(make_unet, space):
    net = SearchNetwork(make_unet(), space)
    states = net.edge_states(0)
    assert [s.key for s in states][:3] == ["0->2", "1->2", "0->3"]
    for s in states:
        assert s.alpha.dtype == np.float64 and np.isclose(s.alpha.sum(), 1.0) and s.alive
    for j in space.node_ids:
        assert np.isclose(sum(states[e].beta for e in space.node_edges(j)), 1.0)
    g = net.genotype()
    assert isinstance(g, Genotype) and Genotype.from_json(g.to_json()) == g


def test_prune_ops_keeps_surviving_weights_in_every_level(make_unet, space, image):
    net = SearchNetwork(make_unet(), space)
    count = net.param_count()
    kept_module = net.cells()[0].edges["0->2"].ops["sep_conv_5x5"]
    kept_weight = kept_module.dw1.weight.detach().clone()
    old_alpha = net.arch_parameters()[0].detach().clone()
    old, new, kept = net.prune_ops(0, 0, ["dil_conv_3x3", "sep_conv_5x5", "none"])
    assert kept == [0, 5, 6] and torch.equal(new.detach(), old_alpha[kept])
    assert net.arch_parameters()[0] is new and old is not new
    assert net.param_count() < count
    for cell in net.cells():
        assert cell.edges["0->2"].op_names == ("none", "sep_conv_5x5", "dil_conv_3x3")
    assert net.cells()[0].edges["0->2"].ops["sep_conv_5x5"] is kept_module
    assert torch.equal(kept_module.dw1.weight, kept_weight)
    assert net.edge_states()[0].ops == ("none", "sep_conv_5x5", "dil_conv_3x3")
    assert net(image).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="its operations are"):
        net.prune_ops(0, 0, ["skip_connect"])


def test_prune_edges_shrinks_beta_and_kills_edges(make_unet, space, image):
    net = SearchNetwork(make_unet(), space)
    count = net.param_count()
    node = space.n_inputs + 1  # node 3: edges 2, 3, 4
    old, new, kept = net.prune_edges(0, node, [2, 4])
    assert kept == [0, 2] and torch.equal(new.detach(), old.detach()[kept])
    assert net.param_count() < count
    assert all("1->3" not in cell.edges for cell in net.cells())
    states = net.edge_states()
    assert not states[3].alive and states[3].beta == 0.0
    assert np.isclose(states[2].beta + states[4].beta, 1.0)
    net.train()
    net(image).square().mean().backward()
    assert net.arch_parameters()[3].grad is None  # the dead edge's alpha is unused
    with pytest.raises(ValueError, match="alive edges"):
        net.prune_edges(0, node, [3])
    with pytest.raises(ValueError, match="pruned away"):
        net.prune_ops(0, 3, ["skip_connect"])
    assert all(src != 1 for _, src in net.genotype().cells[0].nodes[1])


def test_masks_round_trip_loads_a_pruned_state_into_a_fresh_net(make_unet, space, image):
    torch.manual_seed(0)
    net = SearchNetwork(make_unet(), space).train()
    _steps(net, image, 1)
    net.prune_ops(0, 0, ["skip_connect", "sep_conv_3x3"])
    net.prune_ops(0, 5, ["avg_pool_3x3"])
    net.prune_edges(0, 4, [5, 7])
    masks = json.loads(json.dumps(net.masks()))
    fresh = SearchNetwork(make_unet(seed=1), space)
    with pytest.raises(RuntimeError):
        fresh.load_state_dict(net.state_dict())
    fresh.apply_masks(masks)
    fresh.load_state_dict(net.state_dict())
    assert fresh.masks() == masks
    net.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(image), net(image))
    assert fresh.genotype() == net.genotype()
    with pytest.raises(ValueError, match="revive"):
        fresh.apply_masks(SearchNetwork(make_unet(), space).masks())


def test_per_level_prune_ops_touches_one_level(make_unet):
    net = SearchNetwork(make_unet(), SearchSpace(cell_channels=8, per_level=True))
    net.prune_ops(1, 0, ["skip_connect"])
    assert net.cells(1)[0].edges["0->2"].op_names == ("skip_connect",)
    assert len(net.cells(0)[0].edges["0->2"].op_names) == len(net.space.ops)
    assert len(net.genotype().cells) == 2
    with pytest.raises(IndexError, match="architecture 2"):
        net.edge_states(2)


def test_pruning_keeps_the_full_view_weights_and_masks_carry_the_mass(make_unet, space):
    net = SearchNetwork(make_unet(), space)
    with torch.no_grad():
        net.archs[0].alpha[0].copy_(torch.linspace(-1.0, 1.0, len(space.ops)))
    before = net.edge_states(0)[0]
    keep = ["sep_conv_3x3", "dil_conv_3x3", "dil_conv_5x5"]
    net.prune_ops(0, 0, keep)
    after = net.edge_states(0)[0]
    # The kept operations' full-view weights are what they were before the pruning.
    for op in keep:
        assert after.weights()[after.ops.index(op)] == pytest.approx(before.weights()[before.ops.index(op)])
    net.prune_ops(0, 0, ["dil_conv_5x5"], kept_mass=0.5)  # the policy's share, when it gives one
    assert net.edge_states(0)[0].mass == pytest.approx(after.mass * 0.5)
    fresh = SearchNetwork(make_unet(), space)
    fresh.apply_masks(net.masks())
    assert fresh.edge_states(0)[0].mass == net.edge_states(0)[0].mass
