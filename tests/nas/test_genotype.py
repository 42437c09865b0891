"""Search space, genotype value and JSON, and the discretisation rule."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from iac.config import DARTS_OPS, SearchConfig
from iac.nas.genotype import (
    CellGenotype,
    EdgeState,
    Genotype,
    GenotypeError,
    SearchSpace,
    discretize,
    random_genotype,
)

SPACE = SearchSpace(nodes=2, n_inputs=2, steps_per_node=2)  # edges 0->2, 1->2, 0->3, 1->3, 2->3


def _cell():
    return CellGenotype(((("sep_conv_3x3", 0), ("skip_connect", 1)), (("dil_conv_5x5", 1), ("max_pool_3x3", 2))))


def _states(alphas, betas, alive=None):
    """Edge states from per-edge op weights (over DARTS_OPS) and per-edge beta weights."""
    alive = alive or [True] * len(alphas)
    return [
        EdgeState(i, j, DARTS_OPS, np.asarray(a, dtype=np.float64), b, ok)
        for (i, j), a, b, ok in zip(SPACE.edges(), alphas, betas, alive)
    ]


def _onehot(op, weight=0.5):
    a = np.full(len(DARTS_OPS), (1 - weight) / (len(DARTS_OPS) - 1))
    a[DARTS_OPS.index(op)] = weight
    return a


def test_space_from_config_and_edges():
    space = SearchSpace.from_config(SearchConfig())
    assert space.n_inputs == 2 and space.nodes == 4 and space.ops == DARTS_OPS
    assert len(space.edges()) == 2 + 3 + 4 + 5
    assert SPACE.edges() == [(0, 2), (1, 2), (0, 3), (1, 3), (2, 3)]
    assert SPACE.node_edges(3) == [2, 3, 4]
    assert SearchSpace.from_config(SearchConfig(cell_inputs="skip")).n_inputs == 1
    assert SPACE.signature() == {"ops": list(DARTS_OPS), "nodes": 2, "n_inputs": 2}


def test_string_form():
    g = Genotype(SPACE, (_cell(),))
    assert str(g) == "n2<-sep_conv_3x3(0),skip_connect(1) | n3<-dil_conv_5x5(1),max_pool_3x3(2)"


def test_json_round_trip_is_exact():
    g = Genotype(SPACE, (_cell(),))
    text = g.to_json()
    back = Genotype.from_json(text)
    assert back == g and back.to_json() == text
    assert Genotype.from_json(json.loads(text)) == g
    space = SearchSpace(nodes=2, per_level=True)
    per_level = Genotype(space, (_cell(), CellGenotype(((("avg_pool_3x3", 1),), (("sep_conv_5x5", 0),)))))
    assert Genotype.from_json(per_level.to_json()) == per_level
    per_level.validate(n_levels=2)


@pytest.mark.parametrize(
    "nodes, match",
    [
        (((("conv_7x7", 0),), (("skip_connect", 2),)), "not in the search space"),
        (((("sep_conv_3x3", 2),), (("skip_connect", 2),)), "input index 2"),
        (((("sep_conv_3x3", 0),),), "has 1 nodes"),
        (((("none", 0),), (("skip_connect", 2),)), "'none' cannot be chosen"),
        (((("sep_conv_3x3", 0), ("skip_connect", 0)), (("skip_connect", 2),)), "more than once"),
        (((), (("skip_connect", 2),)), "no input"),
    ],
)
def test_invalid_cells_say_what_does_not_fit(nodes, match):
    with pytest.raises(GenotypeError, match=match):
        Genotype(SPACE, (CellGenotype(nodes),))


def test_wrong_number_of_cells():
    with pytest.raises(GenotypeError, match="exactly 1 cell"):
        Genotype(SPACE, (_cell(), _cell()))
    g = Genotype(SearchSpace(nodes=2, per_level=True), (_cell(), _cell()))
    with pytest.raises(GenotypeError, match="2 cells for 3 skip levels"):
        g.validate(n_levels=3)


def test_invalid_json():
    text = Genotype(SPACE, (_cell(),)).to_json()
    with pytest.raises(GenotypeError, match="schema_version"):
        Genotype.from_json(text.replace('"schema_version": 1', '"schema_version": 9'))
    with pytest.raises(GenotypeError, match="not valid JSON"):
        Genotype.from_json("__import__('os')")
    with pytest.raises(GenotypeError, match="unknown fields"):
        d = json.loads(text)
        d["space"]["color"] = "red"
        Genotype.from_json(d)
    with pytest.raises(GenotypeError, match="divisible"):
        SearchSpace(cell_channels=10, k=4)


def test_discretize_known_answer():
    alphas = [_onehot("sep_conv_3x3"), _onehot("skip_connect"), _onehot("avg_pool_3x3"), _onehot("dil_conv_3x3"),
              _onehot("sep_conv_5x5", 0.9)]
    betas = [0.5, 0.5, 0.5, 0.1, 0.4]
    cell = discretize(SPACE, _states(alphas, betas))
    # Node 3 scores: e2 0.25, e3 0.05, e4 0.36 -> keeps edges 2 and 4, listed by edge index.
    assert cell.nodes == ((("sep_conv_3x3", 0), ("skip_connect", 1)), (("avg_pool_3x3", 0), ("sep_conv_5x5", 2)))


def test_discretize_ignores_none_dominance():
    a = _onehot("none", 0.9)
    a[DARTS_OPS.index("dil_conv_5x5")] = 0.06  # strongest non-none
    alphas = [a, _onehot("skip_connect"), _onehot("avg_pool_3x3"), _onehot("dil_conv_3x3"), _onehot("none", 0.99)]
    cell = discretize(SPACE, _states(alphas, [0.5, 0.5, 0.3, 0.3, 0.4]))
    assert cell.nodes[0][0] == ("dil_conv_5x5", 0)
    # Edge 4 is all `none`: its best real op is tiny, so it loses node 3.
    assert [src for _, src in cell.nodes[1]] == [0, 1]


def test_discretize_ties_break_by_op_order_then_edge_index():
    uniform = np.full(len(DARTS_OPS), 1 / len(DARTS_OPS))
    # Every op ties on every edge: each edge takes the first non-none op.
    cell = discretize(SPACE, _states([uniform] * 5, [0.5, 0.5, 1 / 3, 1 / 3, 1 / 3]))
    assert cell.nodes[0] == (("skip_connect", 0), ("skip_connect", 1))
    assert cell.nodes[1] == (("skip_connect", 0), ("skip_connect", 1))  # edge index breaks the score tie
    # Equal scores, but edge 4's strongest op comes earlier in the canonical order.
    alphas = [uniform, uniform, _onehot("sep_conv_5x5"), _onehot("sep_conv_3x3"), _onehot("max_pool_3x3")]
    cell = discretize(SPACE, _states(alphas, [0.5, 0.5, 1 / 3, 1 / 3, 1 / 3]))
    assert cell.nodes[1] == (("sep_conv_3x3", 1), ("max_pool_3x3", 2))


def test_discretize_respects_dead_edges_and_pruned_ops():
    states = _states([_onehot("sep_conv_3x3")] * 5, [0.5, 0.5, 0.6, 0.2, 0.2], alive=[True, True, False, True, True])
    states[4] = EdgeState(2, 3, ("none", "avg_pool_3x3"), np.array([0.7, 0.3]), 0.5)
    states[2].beta = 0.0
    cell = discretize(SPACE, states)
    assert cell.nodes[1] == (("sep_conv_3x3", 1), ("avg_pool_3x3", 2))
    one_in = SearchSpace(nodes=1, n_inputs=1)
    cell = discretize(one_in, [EdgeState(0, 1, ("dil_conv_3x3",), np.array([1.0]), 1.0)])
    assert cell.nodes == ((("dil_conv_3x3", 0),),)


def test_discretize_refuses_mismatched_edges():
    with pytest.raises(GenotypeError, match="edge states"):
        discretize(SPACE, _states([_onehot("skip_connect")] * 4, [0.5] * 4))


@pytest.mark.parametrize("rng", [random.Random(0), np.random.default_rng(0)])
def test_random_genotype_is_valid(rng):
    space = SearchSpace()
    g = random_genotype(space, rng)
    g.validate()
    assert [len(n) for n in g.cells[0].nodes] == [2, 2, 2, 2]
    g = random_genotype(SearchSpace(per_level=True, n_inputs=1), rng, n_levels=3)
    g.validate(n_levels=3)
    assert len(g.cells[0].nodes[0]) == 1
