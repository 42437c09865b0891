"""Pruning policies and applying their events to a supernet and its optimizers."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from iac.config import StabilityConfig
from iac.nas.genotype import SearchSpace, discretize, edge_key
from iac.nas.pruning import (
    JSStabilityPruning,
    NoPruning,
    PruneEvent,
    apply_events,
    drop_params,
    edge_states_of,
    keep_target,
    move_param_state,
)

OPS = ("none", "skip_connect", "max_pool_3x3", "sep_conv_3x3", "dil_conv_3x3")
# Edges: 0->2, 1->2 (node 2), 0->3, 1->3, 2->3 (node 3).
SPACE = SearchSpace(ops=OPS, nodes=2, n_inputs=2, steps_per_node=2, k=1, cell_channels=4)
KEYS = [edge_key(i, j) for i, j in SPACE.edges()]
CFG = StabilityConfig(tau=1e-3, patience=2, window=1, keep_schedule=(3, 2, 1))


def softmax(x):
    e = np.exp(np.asarray(x, dtype=np.float64) - np.max(x))
    return e / e.sum()


class SimSupernet:
    """Records checks like the search loop does, from logits given per check.

    ``alpha_logits(t)`` -> {edge key: {op: logit}}, ``beta_logits(t)`` ->
    {edge key: logit}; pruned ops and dropped edges disappear as in the
    real supernet (softmax over what survives), which also keeps each edge's
    ``mass`` from the events' ``kept_mass``.
    """

    def __init__(self, space, alpha_logits, beta_logits, n_archs=1):
        self.space = space
        self.alpha_logits, self.beta_logits = alpha_logits, beta_logits
        self.ops = [[tuple(space.ops) for _ in space.edges()] for _ in range(n_archs)]
        self.alive = [[True for _ in space.edges()] for _ in range(n_archs)]
        self.mass = [[1.0 for _ in space.edges()] for _ in range(n_archs)]

    def record(self, t: int) -> dict:
        al, bl = self.alpha_logits(t), self.beta_logits(t)
        archs = []
        for a in range(len(self.ops)):
            beta = {}
            for j in self.space.node_ids:
                alive = [e for e in self.space.node_edges(j) if self.alive[a][e]]
                beta.update(zip(alive, softmax([bl[KEYS[e]] for e in alive])))
            edges = []
            for e, key in enumerate(KEYS):
                ops = self.ops[a][e]
                edges.append(
                    {
                        "edge": key,
                        "ops": list(ops),
                        "alpha": [float(x) for x in softmax([al[key][op] for op in ops])],
                        "beta": float(beta.get(e, 0.0)),
                        "alive": self.alive[a][e],
                        "mass": self.mass[a][e],
                    }
                )
            archs.append({"edges": edges})
        return {"check": t + 1, "epoch": t // 2, "arch_step": 50 * (t + 1), "archs": archs}

    def apply(self, events):
        for ev in events:
            if ev.kind == "ops":
                self.ops[ev.arch][ev.edge_index] = tuple(ev.kept)
                self.mass[ev.arch][ev.edge_index] *= ev.kept_mass
            else:
                for e in SPACE.node_edges(ev.node):
                    if e not in ev.kept_indices:
                        self.alive[ev.arch][e] = False


def run_live(policy, sim, n_checks):
    """Feeds ``n_checks`` checks, applying events like the loop; returns (records, events per check)."""
    records, per_check = [], []
    for t in range(n_checks):
        rec = sim.record(t)
        events = policy.observe(rec)
        sim.apply(events)
        records.append(rec)
        per_check.append(events)
        if policy.all_decided:
            break
    return records, per_check


DEFAULT_ALPHA = {
    "0->2": {"none": 3.0, "skip_connect": 0.1, "max_pool_3x3": 0.5, "sep_conv_3x3": 1.0, "dil_conv_3x3": 0.8},
    "1->2": {"none": 0.0, "skip_connect": 1.0, "max_pool_3x3": 0.2, "sep_conv_3x3": 0.6, "dil_conv_3x3": 0.4},
    "0->3": {"none": 0.0, "skip_connect": 0.3, "max_pool_3x3": 0.9, "sep_conv_3x3": 0.1, "dil_conv_3x3": 0.7},
    "1->3": {"none": 0.0, "skip_connect": 0.2, "max_pool_3x3": 0.1, "sep_conv_3x3": 0.9, "dil_conv_3x3": 0.5},
    "2->3": {"none": 0.0, "skip_connect": 0.6, "max_pool_3x3": 0.3, "sep_conv_3x3": 0.2, "dil_conv_3x3": 0.1},
}
DEFAULT_BETA = {"0->2": 0.0, "1->2": 0.5, "0->3": 0.2, "1->3": 1.0, "2->3": 0.6}


def constant_sim(alpha=DEFAULT_ALPHA, beta=DEFAULT_BETA, n_archs=1):
    return SimSupernet(SPACE, lambda t: alpha, lambda t: beta, n_archs=n_archs)


# ---------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    "n_ops, n_real, expected",
    [(8, 7, 3), (4, 3, 3), (3, 3, 2), (3, 2, 2), (2, 2, 1), (2, 1, 1), (1, 1, 1)],
)
def test_keep_target(n_ops, n_real, expected):
    assert keep_target(n_ops, n_real, (3, 2, 1)) == expected


@pytest.mark.parametrize("schedule", [(), (3, 2), (2, 3, 1), (3, 3, 1), (3, 0), (2.5, 1)])
def test_invalid_schedule_raises(schedule):
    with pytest.raises(ValueError, match="keep_schedule"):
        JSStabilityPruning(SPACE, replace(CFG, keep_schedule=schedule))


# ---------------------------------------------------------------- operations


def test_first_pruning_keeps_top3_and_drops_none():
    policy, sim = JSStabilityPruning(SPACE, CFG), constant_sim()
    records, per_check = run_live(policy, sim, 3)
    # window 1 + patience 2: the first two comparisons come at checks 2 and 3.
    assert per_check[0] == [] and per_check[1] == []
    ops_events = {ev.edge: ev for ev in per_check[2]}
    assert set(ops_events) == set(KEYS)
    ev = ops_events["0->2"]  # `none` is the heaviest op here, and still goes
    assert ev.kind == "ops" and ev.check == 3 and ev.epoch == 1 and ev.edge_index == 0 and ev.node == 2
    assert ev.kept == ("max_pool_3x3", "sep_conv_3x3", "dil_conv_3x3")  # canonical order
    assert ev.kept_indices == (2, 3, 4)
    alpha = dict(zip(OPS, records[2]["archs"][0]["edges"][0]["alpha"]))
    assert dict(ev.removed) == {"none": alpha["none"], "skip_connect": alpha["skip_connect"]}
    assert policy.surviving_ops(0, "0->2") == ev.kept
    assert policy.events == per_check[2]


def test_progressive_schedule_restarts_count_and_stops():
    policy, sim = JSStabilityPruning(SPACE, CFG), constant_sim()
    _, per_check = run_live(policy, sim, 20)
    by_check = {i + 1: evs for i, evs in enumerate(per_check) if evs}
    # Each pruning restarts the count: warm-up check, then `patience` checks.
    assert sorted(by_check) == [3, 6, 9]
    assert {len(ev.kept) for ev in by_check[3]} == {3}
    assert {len(ev.kept) for ev in by_check[6] if ev.kind == "ops"} == {2}
    final_ops = [ev for ev in by_check[9] if ev.kind == "ops"]
    assert {len(ev.kept) for ev in final_ops} == {1}
    assert {ev.edge: ev.kept[0] for ev in final_ops} == {
        "0->2": "sep_conv_3x3",
        "1->2": "skip_connect",
        "0->3": "max_pool_3x3",
        "1->3": "sep_conv_3x3",
        "2->3": "skip_connect",
    }
    # Node 2 has exactly steps_per_node inputs: fixed without an event. Node 3
    # keeps its two heaviest edges once all three are decided.
    edge_events = [ev for ev in by_check[9] if ev.kind == "edges"]
    assert len(edge_events) == 1
    assert edge_events[0].node == 3 and edge_events[0].kept == ("1->3", "2->3") and edge_events[0].kept_indices == (3, 4)
    assert [name for name, _ in edge_events[0].removed] == ["0->3"]
    assert policy.all_decided and len(per_check) == 9
    assert all(policy.decided(0, k) for k in KEYS) and not policy.alive(0, "0->3")
    assert policy.node_fixed(0, 2) and policy.node_fixed(0, 3)


def test_never_revives_a_pruned_op():
    rng = np.random.default_rng(0)
    drift = {k: {op: rng.normal(0, 1) for op in OPS} for k in KEYS}

    def alpha(t):  # slow drift that would favour pruned ops later on
        return {k: {op: DEFAULT_ALPHA[k][op] + 0.002 * t * drift[k][op] for op in OPS} for k in KEYS}

    policy = JSStabilityPruning(SPACE, replace(CFG, tau=5e-3))
    sim = SimSupernet(SPACE, alpha, lambda t: DEFAULT_BETA)
    history = {k: [set(OPS)] for k in KEYS}
    for t in range(60):
        sim.apply(policy.observe(sim.record(t)))
        for k in KEYS:
            ops = policy.surviving_ops(0, k)
            if ops is not None:
                assert set(ops) <= history[k][-1]
                history[k].append(set(ops))
        if policy.all_decided:
            break
    assert policy.all_decided
    # A record still carrying a pruned op is rejected, not silently revived.
    stale = constant_sim().record(100)
    with pytest.raises(ValueError, match="surviving ops"):
        policy.observe(stale)


def test_none_is_never_an_edges_last_op():
    alpha = {k: {op: (5.0 if op == "none" else 0.1 * i) for i, op in enumerate(OPS)} for k in KEYS}
    policy = JSStabilityPruning(SPACE, CFG)
    run_live(policy, constant_sim(alpha=alpha), 20)
    assert policy.all_decided
    for k in KEYS:
        ops = policy.surviving_ops(0, k)
        assert ops is None or ops == ("dil_conv_3x3",)


def test_top_k_ignores_none_in_stability():
    # Only `none` and the tail reorder: the top-3 real ops hold still.
    def alpha(t):
        base = {k: dict(DEFAULT_ALPHA[k]) for k in KEYS}
        for k in KEYS:
            base[k]["none"] = base[k]["none"] + (0.001 if t % 2 else -0.001)
        return base

    policy = JSStabilityPruning(SPACE, CFG)
    _, per_check = run_live(policy, SimSupernet(SPACE, alpha, lambda t: DEFAULT_BETA), 3)
    assert len(per_check[2]) == len(KEYS)


# ---------------------------------------------------------------- edges


def _decided_alpha(choice: dict[str, str]):
    return {k: {op: (2.0 if op == choice[k] else 0.0) for op in OPS} for k in KEYS}


@pytest.mark.parametrize(
    "choice, kept",
    [
        # Equal betas: the edge whose op comes first in the canonical order wins...
        ({"0->3": "sep_conv_3x3", "1->3": "skip_connect", "2->3": "skip_connect"}, ("1->3", "2->3")),
        ({"0->3": "max_pool_3x3", "1->3": "dil_conv_3x3", "2->3": "skip_connect"}, ("0->3", "2->3")),
        # ...then the lower edge index.
        ({"0->3": "max_pool_3x3", "1->3": "max_pool_3x3", "2->3": "max_pool_3x3"}, ("0->3", "1->3")),
    ],
)
def test_edge_ranking_ties(choice, kept):
    choice = {"0->2": "skip_connect", "1->2": "skip_connect", **choice}
    policy = JSStabilityPruning(SPACE, CFG)
    records, per_check = run_live(policy, constant_sim(_decided_alpha(choice), {k: 0.0 for k in KEYS}), 20)
    (ev,) = [ev for evs in per_check for ev in evs if ev.kind == "edges"]
    assert ev.kept == kept
    # The same as discretising the full search's record at that check.
    cell = discretize(SPACE, edge_states_of(SPACE, records[ev.check - 1]["archs"][0]))
    assert tuple(edge_key(src, 3) for _, src in cell.nodes[1]) == kept


@pytest.mark.parametrize("steps, n_edge_events, kept_per_node", [(1, 2, 1), (2, 1, 2), (3, 0, None)])
def test_never_below_steps_per_node(steps, n_edge_events, kept_per_node):
    space = replace(SPACE, steps_per_node=steps)
    policy = JSStabilityPruning(space, CFG)
    _, per_check = run_live(policy, constant_sim(), 20)
    edge_events = [ev for evs in per_check for ev in evs if ev.kind == "edges"]
    assert len(edge_events) == n_edge_events and policy.all_decided
    for ev in edge_events:
        assert len(ev.kept) == min(kept_per_node, len(space.node_edges(ev.node)))
    for j in space.node_ids:
        alive = [e for e in space.node_edges(j) if policy.alive(0, e)]
        assert len(alive) == min(steps, len(space.node_edges(j)))


def test_edges_wait_until_every_incoming_edge_is_decided():
    # Edge 2->3 keeps oscillating, so node 3 may not drop any edge.
    def alpha(t):
        a = {k: dict(DEFAULT_ALPHA[k]) for k in KEYS}
        a["2->3"] = {op: (1.0 if (i + t) % 2 else 0.0) for i, op in enumerate(OPS)}
        return a

    policy = JSStabilityPruning(SPACE, CFG)
    _, per_check = run_live(policy, SimSupernet(SPACE, alpha, lambda t: DEFAULT_BETA), 30)
    assert not any(ev.kind == "edges" for evs in per_check for ev in evs)
    assert not policy.all_decided and not policy.decided(0, "2->3")
    assert policy.node_fixed(0, 2) and not policy.node_fixed(0, 3)
    assert policy.last_status["a0/n3"].stable  # its betas are stable all along


def test_archs_are_independent():
    policy = JSStabilityPruning(replace(SPACE, per_level=True), CFG)
    sim = constant_sim(n_archs=2)
    _, per_check = run_live(policy, sim, 20)
    assert policy.n_archs == 2 and policy.all_decided
    assert {ev.arch for ev in per_check[2]} == {0, 1}
    assert {ev.edge for ev in per_check[2] if ev.arch == 1} == set(KEYS)


# ---------------------------------------------------------------- checkpoints and records


def test_state_dict_resume_matches_uninterrupted():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.01, size=(40, len(KEYS), len(OPS)))

    def alpha(t):
        return {k: {op: DEFAULT_ALPHA[k][op] + noise[t, e, i] for i, op in enumerate(OPS)} for e, k in enumerate(KEYS)}

    cfg = replace(CFG, tau=2e-3, window=2, smoothing=0.3)
    full = JSStabilityPruning(SPACE, cfg)
    _, ref = run_live(full, SimSupernet(SPACE, alpha, lambda t: DEFAULT_BETA), 40)

    sim = SimSupernet(SPACE, alpha, lambda t: DEFAULT_BETA)
    first = JSStabilityPruning(SPACE, cfg)
    for t in range(7):
        sim.apply(first.observe(sim.record(t)))
    resumed = JSStabilityPruning(SPACE, cfg)
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    rest = []
    for t in range(7, 40):
        evs = resumed.observe(sim.record(t))
        sim.apply(evs)
        rest.append(evs)
        if resumed.all_decided:
            break
    assert rest == ref[7:]
    assert resumed.events == full.events and resumed.all_decided == full.all_decided

    with pytest.raises(ValueError, match="settings"):
        JSStabilityPruning(SPACE, replace(cfg, tau=1.0)).load_state_dict(first.state_dict())
    with pytest.raises(ValueError, match="policy"):
        JSStabilityPruning(SPACE, cfg).load_state_dict(NoPruning().state_dict())


def test_records_are_validated():
    policy = JSStabilityPruning(SPACE, CFG)
    sim = constant_sim()
    policy.observe(sim.record(4))
    with pytest.raises(ValueError, match="in order"):
        policy.observe(sim.record(4))
    bad = sim.record(5)
    bad["archs"][0]["edges"] = bad["archs"][0]["edges"][::-1]
    with pytest.raises(ValueError, match="do not match"):
        policy.observe(bad)
    with pytest.raises(ValueError, match="architectures"):
        policy.observe({**sim.record(6), "archs": sim.record(6)["archs"] * 2})
    with pytest.raises(ValueError, match="not in the search space"):
        policy.decided(0, "9->9")


def test_event_round_trip_and_no_pruning():
    policy = JSStabilityPruning(SPACE, CFG)
    run_live(policy, constant_sim(), 20)
    for ev in policy.events:
        assert PruneEvent.from_dict(json.loads(json.dumps(ev.to_dict()))) == ev
    none = NoPruning()
    assert none.observe(constant_sim().record(0)) == [] and not none.all_decided and not none.decided(0, "0->2")
    none.load_state_dict(json.loads(json.dumps(none.state_dict())))


# ---------------------------------------------------------------- optimizer state


def test_move_param_state_slices_adam_state():
    torch.manual_seed(0)
    coef = torch.randn(5)  # element-wise loss sin(coef * p): each entry has its own gradient
    kept = [0, 2, 4]
    full = nn.Parameter(torch.zeros(5))
    pruned = nn.Parameter(torch.zeros(5))
    other = nn.Parameter(torch.ones(2))
    opt_full = torch.optim.Adam([full], lr=0.1, betas=(0.5, 0.999))
    opt = torch.optim.Adam([other, pruned], lr=0.1, betas=(0.5, 0.999))

    def step(o, p, c):
        o.zero_grad()
        ((c * p).sin().sum() + other.square().sum()).backward()
        o.step()

    for _ in range(3):
        step(opt_full, full, coef)
        step(opt, pruned, coef)
    new = nn.Parameter(pruned.detach()[kept].clone())
    old_state = {k: v.clone() for k, v in opt.state[pruned].items()}
    move_param_state(opt, pruned, new, kept)
    assert opt.param_groups[0]["params"][0] is other and opt.param_groups[0]["params"][1] is new
    assert pruned not in opt.state
    assert torch.equal(opt.state[new]["exp_avg"], old_state["exp_avg"][kept])
    assert torch.equal(opt.state[new]["exp_avg_sq"], old_state["exp_avg_sq"][kept])
    assert float(opt.state[new]["step"]) == float(old_state["step"]) == 3.0
    # Adam is element-wise: the kept entries go on exactly as without pruning.
    for _ in range(3):
        step(opt_full, full, coef)
        step(opt, new, coef[kept])
    assert torch.allclose(new.detach(), full.detach()[kept], atol=1e-6)


def test_move_param_state_rejects_unknown_param():
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="not in the optimizer"):
        move_param_state(opt, nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(1)), [0])


def test_drop_params_keeps_order():
    ps = [nn.Parameter(torch.randn(3)) for _ in range(4)]
    opt = torch.optim.AdamW(ps)
    sum((p**2).sum() for p in ps).backward()
    opt.step()
    drop_params(opt, [ps[1], ps[2]])
    assert opt.param_groups[0]["params"] == [ps[0], ps[3]]
    assert set(opt.state) == {ps[0], ps[3]}


class TinyUNet(nn.Module):
    """The SkipUNet contract in miniature: one skip level, encoder/decoder convs."""

    def __init__(self):
        super().__init__()
        from iac.nas.implant import IdentityInner

        self.enc = nn.Conv2d(1, 4, 3, padding=1)
        self.dec = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)
        self.skip_modules = nn.ModuleList([IdentityInner(0)])
        self.skip_channels, self.up_channels = [4], [4]
        self.config = {"spatial_dims": 2}

    def forward(self, x):
        skips, up = [self.enc(x)], self.dec(x)
        return self.head(torch.cat([self.skip_modules[0](skips, up), up], dim=1))


def test_apply_events_on_search_network():
    from iac.nas.supernet import SearchNetwork

    torch.manual_seed(0)
    space = SearchSpace(ops=OPS, nodes=2, n_inputs=2, steps_per_node=2, k=1, cell_channels=4)
    net = SearchNetwork(TinyUNet(), space)
    w_opt = torch.optim.AdamW(net.weight_parameters(), lr=1e-2)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=1e-2)
    x = torch.randn(2, 1, 8, 8)

    def step():
        w_opt.zero_grad()
        a_opt.zero_grad()
        net(x).square().mean().backward()
        w_opt.step()
        a_opt.step()

    for _ in range(3):
        step()
    n_weights = sum(p.numel() for p in net.weight_parameters())
    alpha0 = net.arch_parameters()[2].detach().clone()  # edge 0->3
    exp_avg0 = a_opt.state[net.arch_parameters()[2]]["exp_avg"].clone()
    meta = {"check": 1, "epoch": 0, "arch_step": 3, "arch": 0}
    events = [
        PruneEvent(**meta, kind="ops", edge=key, edge_index=e, node=space.edges()[e][1], removed=(),
                   kept=("max_pool_3x3",) if e != 2 else ("skip_connect",), kept_indices=(2,) if e != 2 else (1,))
        for e, key in enumerate(KEYS)
    ]
    events.append(PruneEvent(**meta, kind="edges", edge=None, edge_index=None, node=3, removed=(("0->3", 0.3),),
                             kept=("1->3", "2->3"), kept_indices=(3, 4)))
    apply_events(net, events, w_opt, a_opt)

    assert sum(p.numel() for p in net.weight_parameters()) < n_weights
    assert w_opt.param_groups[0]["params"] == net.weight_parameters()
    assert a_opt.param_groups[0]["params"] == net.arch_parameters()
    assert set(a_opt.state) == set(net.arch_parameters())
    assert set(w_opt.state) == set(net.weight_parameters())
    new_alpha = net.arch_parameters()[2]
    assert torch.equal(new_alpha.detach(), alpha0[[1]])
    assert torch.equal(a_opt.state[new_alpha]["exp_avg"], exp_avg0[[1]])
    beta3 = net.arch_parameters()[-1]
    assert beta3.shape == (2,) and a_opt.state[beta3]["exp_avg"].shape == (2,)
    step()  # still trains
    # A resumed search rebuilds both optimizers on the pruned network and loads their state.
    fresh = SearchNetwork(TinyUNet(), space)
    fresh.apply_masks(net.masks())
    fresh.load_state_dict(net.state_dict())
    torch.optim.AdamW(fresh.weight_parameters(), lr=1e-2).load_state_dict(w_opt.state_dict())
    torch.optim.Adam(fresh.arch_parameters(), lr=1e-2).load_state_dict(a_opt.state_dict())
    assert str(net.genotype()) == "n2<-max_pool_3x3(0),max_pool_3x3(1) | n3<-max_pool_3x3(1),max_pool_3x3(2)"


def test_live_search_on_search_network_replays_exactly():
    """The real supernet, check records and event application, then the offline replay."""
    from iac.nas.replay import replay
    from iac.nas.search import check_record
    from iac.nas.supernet import SearchNetwork

    torch.manual_seed(1)
    space = SearchSpace(ops=OPS, nodes=2, n_inputs=2, steps_per_node=1, k=1, cell_channels=4)
    cfg = replace(CFG, tau=0.5, patience=1)  # permissive: a few steps decide everything
    net = SearchNetwork(TinyUNet(), space)
    w_opt = torch.optim.AdamW(net.weight_parameters(), lr=1e-2)
    a_opt = torch.optim.Adam(net.arch_parameters(), lr=1e-3)
    policy = JSStabilityPruning(space, cfg)
    x = torch.randn(2, 1, 8, 8)
    checks = []
    for step in range(1, 40):
        w_opt.zero_grad()
        a_opt.zero_grad()
        net(x).square().mean().backward()
        w_opt.step()
        a_opt.step()
        rec = check_record(net, step, step // 4, step)
        apply_events(net, policy.observe(rec), w_opt, a_opt)
        checks.append(json.loads(json.dumps(rec)))
        if policy.all_decided:
            break
    assert policy.all_decided
    assert [len(e.ops) for e in net.edge_states(0) if e.alive] == [1] * space.nodes
    traj = {"space": space.to_dict(), "checks": checks, "epochs": [{"epoch": e} for e in range(checks[-1]["epoch"] + 1)]}
    res = replay(traj, cfg=cfg)
    assert res.stop_check == checks[-1]["check"] and res.genotype == net.genotype()
    assert list(res.events) == policy.events
