"""Neural architecture search of implantable adaptive cells (PC-DARTS style).

One concept per module: ``operations`` (candidate ops), ``mixed_op``
(partial-channel mixed op), ``cell`` (search and discrete cells),
``genotype`` (search space, genotype, discretisation), ``implant`` (cells in
the skips of a U-Net) and ``supernet`` (the search network).
"""

from iac.nas.cell import DiscreteCell, SearchCell
from iac.nas.genotype import (
    CellGenotype,
    EdgeState,
    Genotype,
    GenotypeError,
    SearchSpace,
    discretize,
    random_genotype,
)
from iac.nas.implant import IACSkip, implant, make_iac_skip
from iac.nas.mixed_op import MixedOp
from iac.nas.operations import OPS
from iac.nas.supernet import SearchNetwork

__all__ = [
    "OPS",
    "MixedOp",
    "SearchCell",
    "DiscreteCell",
    "SearchSpace",
    "CellGenotype",
    "Genotype",
    "GenotypeError",
    "EdgeState",
    "discretize",
    "random_genotype",
    "IACSkip",
    "implant",
    "make_iac_skip",
    "SearchNetwork",
]
