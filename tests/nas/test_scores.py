"""Edge scores after pruning mean what the full search's scores mean, and ignore a common shift.

Discretisation ranks a node's incoming edges by beta times the strongest
non-``none`` weight. After an edge is pruned, its weights are the survivors'
softmax times the mass they held when pruned (``EdgeState.mass``), not the
survivors' softmax alone, which would inflate the pruned edge.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_pruning import KEYS, OPS, SPACE, SimSupernet

from iac.config import DARTS_OPS, StabilityConfig
from iac.nas.genotype import EdgeState, SearchSpace, discretize, edge_key
from iac.nas.pruning import JSStabilityPruning, edge_states_of


def softmax(x):
    e = np.exp(np.asarray(x, dtype=np.float64) - np.max(x))
    return e / e.sum()


# The worked example: two edges into one node, the same 8 logits, betas 0.55 / 0.45.
LOGITS = np.array([0, 0.05, 0, 0.02, 0.10, 0.03, 0.06, 0.01])
TWO_INPUTS_ONE_PICK = SearchSpace(ops=DARTS_OPS, nodes=1, n_inputs=2, steps_per_node=1, k=1, cell_channels=4)
PRUNED_TO = ("skip_connect", "sep_conv_3x3", "dil_conv_3x3")


def _pruned_edge(shift: float = 0.0, mass: float | None = None) -> EdgeState:
    idx = [DARTS_OPS.index(op) for op in PRUNED_TO]
    full = softmax(LOGITS)
    kept = softmax(LOGITS[idx] + shift)  # what the forward pass sees: the survivors' softmax
    return EdgeState(1, 2, PRUNED_TO, kept, 0.45, mass=float(full[idx].sum()) if mass is None else mass)


def test_worked_example_keeps_the_edge_the_full_search_keeps():
    full_view = EdgeState(0, 2, DARTS_OPS, softmax(LOGITS), 0.55)
    assert discretize(TWO_INPUTS_ONE_PICK, [full_view, _pruned_edge()]).nodes[0] == (("sep_conv_3x3", 0),)
    # The same record scored as before (survivors renormalised, mass ignored) would pick edge 1.
    inflated = _pruned_edge(mass=1.0)
    assert inflated.score(DARTS_OPS) == pytest.approx(0.155, abs=5e-4)
    assert full_view.score(DARTS_OPS) == pytest.approx(0.073, abs=5e-4)
    assert discretize(TWO_INPUTS_ONE_PICK, [full_view, inflated]).nodes[0] == (("sep_conv_3x3", 1),)
    # Full view: the pruned edge scores what the unpruned one scores on the same logits, times its beta.
    assert _pruned_edge().score(DARTS_OPS) == pytest.approx(full_view.score(DARTS_OPS) * 0.45 / 0.55)


@pytest.mark.parametrize("shift", [-3.0, 0.7, 25.0])
def test_scores_ignore_a_common_shift_of_the_surviving_logits(shift):
    assert _pruned_edge(shift).score(DARTS_OPS) == pytest.approx(_pruned_edge().score(DARTS_OPS), rel=1e-12)


# ---------------------------------------------------------------- against the complete record

# SPACE: edges 0->2, 1->2 (node 2 keeps both) and 0->3, 1->3, 2->3 (node 3 keeps two).
LOOSE = StabilityConfig(tau=0.02, patience=1, window=1, keep_schedule=(3, 2, 1))


class FrozenPrunedLogits:
    """Logits that drift towards per-edge merits with noise; once an operation is pruned its logit freezes.

    The survivors' logits are shifted after every pruning so that their
    log-sum-exp stays what it was at the removal (the forward pass sees only
    their softmax, so the shift is free). ``complete(t)`` is then the full
    search's record: every operation, pruned ones at their frozen logits.
    """

    def __init__(self, seed: int, n_checks: int):
        rng = np.random.default_rng(seed)
        merits = rng.normal(0.0, 1.0, (len(KEYS), len(OPS)))
        steps = 0.05 * merits[None] + 0.02 * rng.normal(size=(n_checks, len(KEYS), len(OPS)))
        self.raw = np.cumsum(steps, axis=0)  # (checks, edges, ops)
        self.beta = np.cumsum(0.05 * rng.normal(size=(n_checks, len(KEYS))) + 0.02, axis=0)
        self.frozen: dict[tuple[int, int], float] = {}  # (edge, op) -> logit at removal
        self.anchor: dict[int, float] = {}  # edge -> survivors' log-sum-exp at its last pruning
        self.sim = SimSupernet(SPACE, self.alpha_logits, lambda t: dict(zip(KEYS, self.beta[t])))

    def _survivor_logits(self, t: int, e: int) -> np.ndarray:
        ops = self.sim.ops[0][e]
        raw = np.array([self.raw[t, e, OPS.index(op)] for op in ops])
        if e in self.anchor:
            raw += self.anchor[e] - np.log(np.exp(raw).sum())
        return raw

    def alpha_logits(self, t: int) -> dict:
        return {key: dict(zip(self.sim.ops[0][e], self._survivor_logits(t, e))) for e, key in enumerate(KEYS)}

    def apply(self, t: int, events) -> None:
        for ev in (ev for ev in events if ev.kind == "ops"):
            e, before = ev.edge_index, self.sim.ops[0][ev.edge_index]
            logits = dict(zip(before, self._survivor_logits(t, e)))
            self.frozen.update({(e, OPS.index(op)): logits[op] for op in before if op not in ev.kept})
            self.anchor[e] = float(np.log(sum(np.exp(logits[op]) for op in ev.kept)))
        self.sim.apply(events)

    def complete(self, t: int) -> dict:
        """The check as the full search would record it (all operations, pruned ones frozen)."""
        edges = []
        live = self.sim.record(t)["archs"][0]["edges"]
        for e, key in enumerate(KEYS):
            surv = dict(zip(self.sim.ops[0][e], self._survivor_logits(t, e)))
            logits = [surv.get(op, self.frozen.get((e, i))) for i, op in enumerate(OPS)]
            edges.append({"edge": key, "ops": list(OPS), "alpha": list(softmax(logits)), "beta": live[e]["beta"],
                          "alive": live[e]["alive"]})
        return {"archs": [{"edges": edges}]}


@pytest.mark.parametrize("seed", range(6))
def test_every_decision_equals_discretising_the_complete_record(seed):
    n_checks = 120
    world, policy = FrozenPrunedLogits(seed, n_checks), JSStabilityPruning(SPACE, LOOSE)
    events_seen = 0
    for t in range(n_checks):
        events = policy.observe(world.sim.record(t))
        if any(ev.kind == "edges" for ev in events):
            # What the node keeps, and every decided edge's operation, as the full search discretises now.
            complete = discretize(SPACE, edge_states_of(SPACE, world.complete(t)["archs"][0]))
            for ev in (ev for ev in events if ev.kind == "edges"):
                kept_sources = {src for _, src in complete.nodes[ev.node - SPACE.n_inputs]}
                assert set(ev.kept) == {edge_key(s, ev.node) for s in kept_sources}, (seed, t, ev)
            events_seen += 1
        world.apply(t, events)
        if policy.all_decided:
            break
    assert events_seen, "the loose settings must reach node decisions"
