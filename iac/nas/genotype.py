"""Search space, genotypes and the discretisation rule.

Nodes of a cell are numbered inputs first (``0`` = the skip feature, ``1`` =
the decoder's upsampled feature when the cell has two inputs), then the
intermediate nodes. Edges are ordered by destination node, then source; an
edge's key is ``"i->j"``.

A :class:`Genotype` is a frozen value: it validates itself, prints on one line
and round-trips through JSON exactly (parsing never evaluates code).
:func:`discretize` is the one rule that turns architecture weights into a
cell; the search, the stability policy and the offline replay all use it.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from iac.config import DARTS_OPS
from iac.nas.operations import check_op_names

__all__ = [
    "SCHEMA_VERSION",
    "CELL_INPUTS",
    "SearchSpace",
    "CellGenotype",
    "Genotype",
    "GenotypeError",
    "EdgeState",
    "discretize",
    "random_genotype",
    "edge_key",
    "GENOTYPE_FILE",
    "save_genotype",
    "load_genotype",
]

SCHEMA_VERSION = 1
# ``cell_inputs`` setting -> number of input nodes of a cell.
CELL_INPUTS = {"skip+up": 2, "skip": 1}


# File name of a saved genotype (an MLflow artifact of every search run).
GENOTYPE_FILE = "genotype.json"

class GenotypeError(ValueError):
    """A genotype or search space that does not fit its schema."""


def edge_key(src: int, dst: int) -> str:
    """The edge's name in records and masks: ``"src->dst"``."""
    return f"{src}->{dst}"


@dataclass(frozen=True)
class SearchSpace:
    """The cell search space (what a genotype is chosen from).

    Attributes:
        ops: candidate operations in canonical order (ties break by it).
        nodes: intermediate nodes per cell.
        n_inputs: input nodes (2: skip and decoder feature; 1: skip only).
        steps_per_node: incoming edges each node keeps at discretisation.
        k: PC-DARTS partial-channel ratio of the supernet.
        cell_channels: cell width C (inputs are projected to it).
        per_level: one architecture per skip level instead of one shared.
    """

    ops: tuple[str, ...] = DARTS_OPS
    nodes: int = 4
    n_inputs: int = 2
    steps_per_node: int = 2
    k: int = 4
    cell_channels: int = 16
    per_level: bool = False

    def __post_init__(self):
        object.__setattr__(self, "ops", tuple(self.ops))
        try:
            check_op_names(self.ops, "SearchSpace.ops")
        except ValueError as err:
            raise GenotypeError(str(err)) from None
        if not any(op != "none" for op in self.ops):
            raise GenotypeError(f"SearchSpace.ops={list(self.ops)} needs an operation other than 'none'")
        for name, low in (("nodes", 1), ("n_inputs", 1), ("steps_per_node", 1), ("k", 1), ("cell_channels", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise GenotypeError(f"SearchSpace.{name}={value!r} must be an integer >= {low}")
        if self.n_inputs not in CELL_INPUTS.values():
            raise GenotypeError(f"SearchSpace.n_inputs={self.n_inputs} must be one of {sorted(CELL_INPUTS.values())}")
        if self.cell_channels % self.k:
            raise GenotypeError(
                f"SearchSpace.cell_channels={self.cell_channels} is not divisible by k={self.k}"
            )
        if not isinstance(self.per_level, bool):
            raise GenotypeError(f"SearchSpace.per_level={self.per_level!r} must be a bool")

    @classmethod
    def from_config(cls, cfg: Any) -> "SearchSpace":
        """Build from a :class:`iac.config.SearchConfig` (or anything with its fields)."""
        if cfg.cell_inputs not in CELL_INPUTS:
            raise GenotypeError(f"cell_inputs={cfg.cell_inputs!r} is not one of {list(CELL_INPUTS)}")
        return cls(
            ops=tuple(cfg.ops),
            nodes=cfg.nodes,
            n_inputs=CELL_INPUTS[cfg.cell_inputs],
            steps_per_node=cfg.steps_per_node,
            k=cfg.k,
            cell_channels=cfg.cell_channels,
            per_level=cfg.per_level,
        )

    # Graph helpers ---------------------------------------------------------
    @property
    def node_ids(self) -> range:
        """Numbers of the intermediate nodes."""
        return range(self.n_inputs, self.n_inputs + self.nodes)

    def edges(self) -> list[tuple[int, int]]:
        """All edges ``(src, dst)``, by destination then source."""
        return [(i, j) for j in self.node_ids for i in range(j)]

    def node_edges(self, node: int) -> list[int]:
        """Indices (into :meth:`edges`) of the edges entering ``node``."""
        if node not in self.node_ids:
            raise GenotypeError(f"node {node} is not an intermediate node; they are {list(self.node_ids)}")
        return [e for e, (_, j) in enumerate(self.edges()) if j == node]

    def signature(self) -> dict[str, Any]:
        """The structure a genotype depends on: operations, nodes, inputs."""
        return {"ops": list(self.ops), "nodes": self.nodes, "n_inputs": self.n_inputs}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ops": list(self.ops),
            "nodes": self.nodes,
            "n_inputs": self.n_inputs,
            "steps_per_node": self.steps_per_node,
            "k": self.k,
            "cell_channels": self.cell_channels,
            "per_level": self.per_level,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SearchSpace":
        known = set(cls().to_dict())
        unknown = set(d).difference(known)
        if unknown:
            raise GenotypeError(f"search space has unknown fields {sorted(unknown)}; known: {sorted(known)}")
        kwargs = dict(d)
        if "ops" in kwargs:
            kwargs["ops"] = tuple(kwargs["ops"])
        return cls(**kwargs)


@dataclass(frozen=True)
class CellGenotype:
    """One discrete cell: per intermediate node, its ``(op, input_index)`` pairs.

    ``nodes[m]`` describes node ``n_inputs + m``; an input index names any
    earlier node (inputs included).
    """

    nodes: tuple[tuple[tuple[str, int], ...], ...]

    def __post_init__(self):
        try:
            nodes = tuple(tuple((str(op), int(src)) for op, src in node) for node in self.nodes)
        except (TypeError, ValueError):
            raise GenotypeError(
                f"cell nodes {self.nodes!r} must be a list (per node) of [op, input_index] pairs"
            ) from None
        object.__setattr__(self, "nodes", nodes)

    def validate(self, space: SearchSpace) -> None:
        """Raise :class:`GenotypeError` saying what does not fit ``space``."""
        if len(self.nodes) != space.nodes:
            raise GenotypeError(f"cell has {len(self.nodes)} nodes; the search space has {space.nodes}")
        for m, node in enumerate(self.nodes):
            j = space.n_inputs + m
            if not node:
                raise GenotypeError(f"node {j} has no input; each node needs at least one")
            sources = [src for _, src in node]
            if len(set(sources)) != len(sources):
                raise GenotypeError(f"node {j} takes input {sources} more than once")
            for op, src in node:
                if op not in space.ops:
                    raise GenotypeError(f"node {j}: operation {op!r} is not in the search space {list(space.ops)}")
                if op == "none":
                    raise GenotypeError(f"node {j}: 'none' cannot be chosen (it is a zero edge)")
                if not 0 <= src < j:
                    raise GenotypeError(f"node {j}: input index {src} must be an earlier node, 0..{j - 1}")

    def edges(self, n_inputs: int) -> list[tuple[int, int, str]]:
        """Chosen edges as ``(src, dst, op)``."""
        return [(src, n_inputs + m, op) for m, node in enumerate(self.nodes) for op, src in node]

    def to_list(self) -> list:
        return [[[op, src] for op, src in node] for node in self.nodes]

    def describe(self, n_inputs: int) -> str:
        """One line: ``n2<-sep_conv_3x3(0),skip_connect(1) | n3<-...``."""
        return " | ".join(
            f"n{n_inputs + m}<-" + ",".join(f"{op}({src})" for op, src in node) for m, node in enumerate(self.nodes)
        )


@dataclass(frozen=True)
class Genotype:
    """A found cell architecture: one shared cell, or one per skip level.

    Attributes:
        space: the search space it was chosen from.
        cells: one :class:`CellGenotype` (shared by every level) or, with
            ``space.per_level``, one per skip level from the shallowest.
        schema_version: JSON schema version.
    """

    space: SearchSpace
    cells: tuple[CellGenotype, ...]
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        object.__setattr__(self, "cells", tuple(self.cells))
        self.validate()

    def validate(self, n_levels: int | None = None) -> None:
        """Raise :class:`GenotypeError` saying what does not fit.

        Args:
            n_levels: skip levels of the U-Net it goes into, when known; a
                per-level genotype must have exactly that many cells.
        """
        if self.schema_version != SCHEMA_VERSION:
            raise GenotypeError(f"schema_version {self.schema_version!r} is not supported (expected {SCHEMA_VERSION})")
        if not self.cells:
            raise GenotypeError("genotype has no cell")
        if not self.space.per_level and len(self.cells) != 1:
            raise GenotypeError(
                f"a shared genotype (per_level=False) has exactly 1 cell, got {len(self.cells)}"
            )
        if self.space.per_level and n_levels is not None and len(self.cells) != n_levels:
            raise GenotypeError(f"per-level genotype has {len(self.cells)} cells for {n_levels} skip levels")
        for c, cell in enumerate(self.cells):
            try:
                cell.validate(self.space)
            except GenotypeError as err:
                raise GenotypeError(f"cell {c}: {err}") from None

    def cell(self, level: int) -> CellGenotype:
        """The cell of skip ``level``."""
        if not self.space.per_level:
            return self.cells[0]
        if not 0 <= level < len(self.cells):
            raise GenotypeError(f"level {level} has no cell; this per-level genotype has {len(self.cells)}")
        return self.cells[level]

    def choices(self) -> frozenset[tuple[int, int, int, str]]:
        """Every ``(level, node, input, operation)`` choice (level 0 for a shared cell)."""
        return frozenset(
            (level, n, int(src), op) for level, cell in enumerate(self.cells) for n, node in enumerate(cell.nodes)
            for op, src in node
        )

    def __str__(self) -> str:
        lines = [cell.describe(self.space.n_inputs) for cell in self.cells]
        if len(lines) == 1:
            return lines[0]
        return " || ".join(f"L{level}: {line}" for level, line in enumerate(lines))

    # JSON --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "signature": self.space.signature(),
            "space": self.space.to_dict(),
            "cells": [cell.to_list() for cell in self.cells],
        }

    def to_json(self) -> str:
        """Canonical JSON text (sorted keys); :meth:`from_json` inverts it exactly."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Genotype":
        if not isinstance(d, Mapping):
            raise GenotypeError(f"a genotype is a JSON object, got {type(d).__name__}")
        missing = {"schema_version", "space", "cells"}.difference(d)
        if missing:
            raise GenotypeError(f"genotype JSON lacks {sorted(missing)}")
        if d["schema_version"] != SCHEMA_VERSION:
            raise GenotypeError(
                f"genotype schema_version {d['schema_version']!r} is not supported (expected {SCHEMA_VERSION})"
            )
        space = SearchSpace.from_dict(d["space"])
        if "signature" in d and d["signature"] != space.signature():
            raise GenotypeError(f"genotype signature {d['signature']} does not match its space {space.signature()}")
        if not isinstance(d["cells"], list):
            raise GenotypeError("genotype 'cells' must be a list of cells")
        cells = tuple(CellGenotype(tuple(tuple(pair) for pair in node) for node in cell) for cell in d["cells"])
        return cls(space=space, cells=cells, schema_version=d["schema_version"])

    @classmethod
    def from_json(cls, text: str | bytes | Mapping[str, Any]) -> "Genotype":
        """Parse :meth:`to_json` output (or its already-decoded dict)."""
        if isinstance(text, Mapping):
            return cls.from_dict(text)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise GenotypeError(f"genotype is not valid JSON: {err}") from None
        return cls.from_dict(data)


def save_genotype(folder: str | Path, genotype: Genotype) -> Path:
    """Write ``folder/genotype.json`` (canonical JSON, atomically); :func:`load_genotype` reads it."""
    from iac.atomic import atomic_write_text

    return atomic_write_text(Path(folder) / GENOTYPE_FILE, genotype.to_json())


def load_genotype(path: str | Path) -> Genotype:
    """Read a genotype written by :func:`save_genotype` (the file, or the folder holding it).

    Raises:
        GenotypeError: the file is missing or is not a valid genotype.
    """
    path = Path(path)
    if path.is_dir():
        path = path / GENOTYPE_FILE
    if not path.is_file():
        raise GenotypeError(f"{path}: no such genotype file")
    try:
        return Genotype.from_json(path.read_text())
    except GenotypeError as err:
        raise GenotypeError(f"{path}: {err}") from None


@dataclass
class EdgeState:
    """What the search knows about one edge at one moment.

    Attributes:
        src, dst: node numbers.
        ops: surviving operation names (canonical order).
        alpha: (len(ops),) float64 softmax(alpha) over them.
        beta: the edge's softmax(beta) weight among its node's alive edges
            (0.0 for a dead edge).
        alive: False once the edge was pruned away.
        mass: the probability mass the surviving operations held among all
            of the edge's operations when it was last pruned (the product
            over successive prunings; 1.0 before any). ``mass * alpha`` is
            the operations' weight in the full search's view, and it does not
            change under a common shift of the surviving logits.
    """

    src: int
    dst: int
    ops: tuple[str, ...]
    alpha: np.ndarray
    beta: float
    alive: bool = True
    mass: float = 1.0

    @property
    def key(self) -> str:
        return edge_key(self.src, self.dst)

    def weights(self) -> np.ndarray:
        """(len(ops),) weights in the full search's view: ``mass * softmax(alpha)`` over the survivors."""
        return self.mass * np.asarray(self.alpha, dtype=np.float64)

    def strongest(self, space_ops: Sequence[str]) -> tuple[str, float] | None:
        """The strongest non-``none`` operation and its full-view weight (ties by ``space_ops`` order)."""
        best = None
        weights = self.weights()
        for name in sorted((n for n in self.ops if n != "none"), key=list(space_ops).index):
            w = float(weights[self.ops.index(name)])
            if best is None or w > best[1]:
                best = (name, w)
        return best

    def score(self, space_ops: Sequence[str]) -> float:
        """Ranking score: ``beta`` times the strongest non-``none`` full-view weight."""
        best = self.strongest(space_ops)
        return -np.inf if best is None else self.beta * best[1]


def _check_edges(space: SearchSpace, edges: Sequence[EdgeState]) -> None:
    expected = space.edges()
    if len(edges) != len(expected):
        raise GenotypeError(f"got {len(edges)} edge states; the search space has {len(expected)} edges")
    for e, (state, (i, j)) in enumerate(zip(edges, expected)):
        if (state.src, state.dst) != (i, j):
            raise GenotypeError(f"edge state {e} is {state.key}; expected {edge_key(i, j)} (order: dst, then src)")
        if len(state.alpha) != len(state.ops):
            raise GenotypeError(f"edge {state.key}: {len(state.alpha)} weights for {len(state.ops)} ops")


# Edge scores closer than this (relative) are a tie: products of pruned masses
# and softmax weights differ in the last bits with the order of summation.
SCORE_TIE_RTOL = 1e-9


def _edge_order(a: tuple, b: tuple) -> int:
    """Higher score first (equal within SCORE_TIE_RTOL), then earlier operation, then lower edge index."""
    if abs(a[0] - b[0]) > SCORE_TIE_RTOL * max(abs(a[0]), abs(b[0])):
        return -1 if a[0] > b[0] else 1
    return -1 if a[1:3] < b[1:3] else (1 if a[1:3] > b[1:3] else 0)


def discretize(space: SearchSpace, edges: Sequence[EdgeState]) -> CellGenotype:
    """Derive a discrete cell from edge states (the PC-DARTS rule).

    Per intermediate node keep the ``steps_per_node`` alive incoming edges
    (all when fewer) with the largest score ``beta * strongest non-none
    weight``, the weight being the operation's share of the edge in the full
    search's view (:meth:`EdgeState.weights`: after pruning, the survivors'
    softmax times the mass they held when pruned, so a pruned edge is not
    inflated by renormalisation and the score is shift-invariant); ties
    (scores within ``SCORE_TIE_RTOL``) go to the edge whose strongest
    operation comes earlier in ``space.ops``, then to the lower edge index. On each kept edge take the
    strongest non-``none`` operation, ties by operation order. Edges whose
    only operation is ``none`` are never kept.

    Args:
        space: the search space.
        edges: one state per edge of ``space.edges()``, in that order.

    Raises:
        GenotypeError: edges do not match the space, or a node has no usable edge.
    """
    _check_edges(space, edges)
    order = list(space.ops)
    nodes = []
    for j in space.node_ids:
        candidates = []
        for e in space.node_edges(j):
            state = edges[e]
            best = state.strongest(order) if state.alive else None
            if best is None:
                continue
            op, weight = best
            candidates.append((state.beta * weight, order.index(op), e, op, state.src))
        if not candidates:
            raise GenotypeError(f"node {j} has no alive edge with an operation other than 'none'")
        candidates.sort(key=functools.cmp_to_key(_edge_order))
        kept = sorted(candidates[: space.steps_per_node], key=lambda c: c[2])
        nodes.append(tuple((op, src) for *_, op, src in kept))
    return CellGenotype(tuple(nodes))


def random_genotype(space: SearchSpace, rng: random.Random | np.random.Generator, n_levels: int = 1) -> Genotype:
    """A random cell from ``space`` (the random-search baseline).

    Each node takes ``min(steps_per_node, in-degree)`` distinct earlier nodes,
    each through a random non-``none`` operation.

    Args:
        space: the search space.
        rng: ``random.Random`` or ``numpy.random.Generator``.
        n_levels: cells to draw when ``space.per_level``.
    """
    ops = [op for op in space.ops if op != "none"]

    def choice(seq, n):
        if isinstance(rng, np.random.Generator):
            return [seq[i] for i in rng.choice(len(seq), size=n, replace=False)]
        return rng.sample(list(seq), n)

    def one_cell() -> CellGenotype:
        nodes = []
        for j in space.node_ids:
            sources = sorted(choice(range(j), min(space.steps_per_node, j)))
            nodes.append(tuple((choice(ops, 1)[0], int(src)) for src in sources))
        return CellGenotype(tuple(nodes))

    count = n_levels if space.per_level else 1
    return Genotype(space=space, cells=tuple(one_cell() for _ in range(count)))
