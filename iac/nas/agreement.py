"""How much two genotypes agree, next to what chance gives.

A genotype is a set of ``(level, node, input, operation)`` choices
(:meth:`iac.nas.genotype.Genotype.choices`). Two genotypes of one search
space agree on some of them; the figure means something only next to its
yardsticks: what two uniformly random genotypes of the same space share
(:func:`random_agreement`), and what two independent full searches share
(computed by the caller from its runs, with :func:`agreement`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from iac.nas.genotype import Genotype, SearchSpace, random_genotype

# Draws of random genotype pairs behind the chance yardstick.
RANDOM_DRAWS = 2000


@dataclass(frozen=True)
class Agreement:
    """The agreement of two genotypes.

    Attributes:
        shared: ``(level, node, input, operation)`` choices in both.
        total: choices of one genotype (both have as many in one space).
        jaccard: ``shared / |union|``.
        edges_shared: ``(level, node, input)`` edges in both.
        ops_shared: of those shared edges, how many carry the same operation.
    """

    shared: int
    total: int
    jaccard: float
    edges_shared: int
    ops_shared: int

    @property
    def edge_agreement(self) -> float:
        """Share of the chosen edges both keep."""
        return self.edges_shared / self.total if self.total else float("nan")

    @property
    def op_agreement(self) -> float:
        """Share of the shared edges with the same operation (NaN when none is shared)."""
        return self.ops_shared / self.edges_shared if self.edges_shared else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "edge_agreement": self.edge_agreement, "op_agreement": self.op_agreement}

    def __str__(self) -> str:
        return (f"{self.shared}/{self.total} choices shared (Jaccard {self.jaccard:.2f}); "
                f"{self.edges_shared}/{self.total} edges, {self.ops_shared} of them with the same operation")


def agreement(a: Genotype, b: Genotype) -> Agreement:
    """The :class:`Agreement` of two genotypes of one search space.

    Raises:
        ValueError: the genotypes come from different search spaces.
    """
    if a.space.signature() != b.space.signature():
        raise ValueError(f"genotypes of different search spaces ({a.space.signature()} vs {b.space.signature()})")
    ca, cb = a.choices(), b.choices()
    ea, eb = {c[:3]: c[3] for c in ca}, {c[:3]: c[3] for c in cb}
    edges = set(ea) & set(eb)
    return Agreement(
        shared=len(ca & cb),
        total=len(ca),
        jaccard=len(ca & cb) / max(len(ca | cb), 1),
        edges_shared=len(edges),
        ops_shared=sum(ea[e] == eb[e] for e in edges),
    )


def random_agreement(space: SearchSpace, n_levels: int = 1, draws: int = RANDOM_DRAWS, seed: int = 0
                     ) -> dict[str, float]:
    """The chance yardstick: agreement of pairs of uniformly random genotypes of ``space``.

    Returns:
        ``jaccard_mean``, ``jaccard_p95``, ``jaccard_p99``, ``shared_mean``,
        ``shared_p95``, ``shared_p99`` and ``draws``.
    """
    rng = np.random.default_rng(seed)
    pairs = [agreement(random_genotype(space, rng, n_levels), random_genotype(space, rng, n_levels))
             for _ in range(draws)]
    jac = np.array([p.jaccard for p in pairs])
    shared = np.array([p.shared for p in pairs], dtype=np.float64)
    return {
        "jaccard_mean": float(jac.mean()), "jaccard_p95": float(np.quantile(jac, 0.95)),
        "jaccard_p99": float(np.quantile(jac, 0.99)), "shared_mean": float(shared.mean()),
        "shared_p95": float(np.quantile(shared, 0.95)), "shared_p99": float(np.quantile(shared, 0.99)),
        "draws": float(draws),
    }


def agreement_metrics(result: Genotype, reference: Genotype, others: list[Genotype] | None = None
                      ) -> dict[str, float]:
    """Metrics of ``result`` against ``reference`` with both yardsticks (flat, for tracking).

    Args:
        result: e.g. the IAC-LTH genotype.
        reference: e.g. the full search's genotype.
        others: further full searches of the same data (other seeds): their
            pairwise agreement with ``reference`` and each other is the ceiling.
    """
    a = agreement(reference, result)
    n_levels = len(reference.cells)
    chance = random_agreement(reference.space, n_levels)
    out = {
        "genotype_agreement": a.jaccard,
        "genotype_shared_choices": float(a.shared),
        "genotype_total_choices": float(a.total),
        "genotype_edge_agreement": a.edge_agreement,
        "genotype_op_agreement": a.op_agreement,
        **{f"random_{k}": v for k, v in chance.items()},
    }
    fulls = [reference, *(others or [])]
    if len(fulls) > 1:
        pairwise = [agreement(x, y).jaccard for i, x in enumerate(fulls) for y in fulls[i + 1:]]
        out["full_vs_full_jaccard_mean"] = float(np.mean(pairwise))
        out["full_vs_full_pairs"] = float(len(pairwise))
    return out
