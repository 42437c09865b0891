"""Genotype agreement and its chance yardstick."""

from __future__ import annotations

import numpy as np
import pytest

from iac.nas.agreement import agreement, agreement_metrics, random_agreement
from iac.nas.genotype import CellGenotype, Genotype, SearchSpace, random_genotype

SPACE = SearchSpace()  # the default: 8 operations, 4 nodes, 2 inputs, 2 edges kept per node


def _geno(nodes) -> Genotype:
    return Genotype(space=SPACE, cells=(CellGenotype(tuple(tuple(n) for n in nodes)),))


A = _geno([[("sep_conv_3x3", 0), ("skip_connect", 1)], [("sep_conv_3x3", 0), ("dil_conv_3x3", 2)],
           [("max_pool_3x3", 1), ("skip_connect", 3)], [("sep_conv_5x5", 2), ("avg_pool_3x3", 4)]])
# Same edges except node 2's second input; two of the shared edges carry another operation.
B = _geno([[("sep_conv_3x3", 0), ("max_pool_3x3", 1)], [("sep_conv_3x3", 0), ("dil_conv_3x3", 1)],
           [("max_pool_3x3", 1), ("skip_connect", 3)], [("sep_conv_5x5", 2), ("dil_conv_5x5", 4)]])


def test_counts_of_shared_choices_edges_and_operations():
    assert agreement(A, A).jaccard == 1.0 and agreement(A, A).shared == 8
    ab = agreement(A, B)
    assert (ab.shared, ab.total, ab.edges_shared, ab.ops_shared) == (5, 8, 7, 5)
    assert ab.jaccard == pytest.approx(5 / 11)
    assert ab.edge_agreement == pytest.approx(7 / 8) and ab.op_agreement == pytest.approx(5 / 7)
    assert "5/8 choices shared" in str(ab)


def test_chance_yardstick_matches_a_direct_simulation():
    chance = random_agreement(SPACE, draws=1000, seed=1)
    rng = np.random.default_rng(7)
    direct = [agreement(random_genotype(SPACE, rng), random_genotype(SPACE, rng)).jaccard for _ in range(1000)]
    assert chance["jaccard_mean"] == pytest.approx(np.mean(direct), abs=0.01)
    assert 0.02 < chance["jaccard_mean"] < 0.08  # 8 choices among many: chance shares few
    assert chance["jaccard_p95"] <= chance["jaccard_p99"] <= 1.0


def test_genotypes_of_different_spaces_are_refused():
    other = random_genotype(SearchSpace(nodes=2), np.random.default_rng(0))
    with pytest.raises(ValueError, match="different search spaces"):
        agreement(A, other)


def test_metrics_carry_both_yardsticks():
    m = agreement_metrics(B, A, others=[A, B])
    assert m["genotype_agreement"] == pytest.approx(5 / 11)
    assert {"random_jaccard_mean", "random_jaccard_p95", "random_jaccard_p99"} <= set(m)
    assert m["full_vs_full_pairs"] == 3  # reference with A and B, and A with B
    assert "full_vs_full_jaccard_mean" not in agreement_metrics(B, A)
