"""Neural architecture search of implantable adaptive cells (PC-DARTS style).

One concept per module, in the order of the method: ``operations``
(candidate ops), ``mixed_op`` (partial-channel mixed op), ``cell`` (search
and discrete cells), ``implant`` (cells in the skips of a U-Net),
``supernet`` (the search network), ``architect`` (the architecture step),
``stability`` (the Jensen–Shannon stability test), ``pruning`` (policies and
pruning events), ``search`` (the one search loop), ``genotype`` (search
space, discretisation, genotype save/load), ``trajectory`` (the search
record, save/load), ``replay`` (the policy replayed offline), ``analysis``
(trajectory analyses) and ``plots`` (every search figure).
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
