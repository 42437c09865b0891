"""Pruning policies of the one search loop, and applying their decisions.

The search loop hands every *check record* (the JSON dict of
``docs/architecture.md``: each edge's surviving operations, their softmax
weights and its node weight) to a policy and gets back a list of
:class:`PruneEvent`. The offline replay (:mod:`iac.nas.replay`) calls the
very same :meth:`JSStabilityPruning.observe` on recorded checks, so a live
search and its replay decide on the same numbers with the same code.

Criterion (:mod:`iac.nas.stability`), schedule (:func:`keep_target`), the
decision (:meth:`JSStabilityPruning.observe`), the mask and optimizer update
(:func:`apply_events`) and reporting (the search loop) are kept apart; the
policy never logs.

Rules of :class:`JSStabilityPruning`:

* **Operations.** An edge is tested every check. When it is stable, its
  operations are cut to the top ``k`` by weight (ties by canonical operation
  order), where ``k`` is the largest entry of ``keep_schedule`` smaller than
  the edge's current number of operations (default 3, then 2, then 1).
  ``none`` never counts toward the top-k and is removed at the edge's first
  pruning: discretisation ignores it, so it could never be the edge's last
  operation. The edge's stability count restarts after each pruning; an edge
  with one operation left is *decided*.
* **Edges.** Each node's distribution over its alive incoming edges
  (softmax(beta)) is tested every check too, with ``k`` = the number of edges
  the node keeps, ``min(steps_per_node, in-degree)``. Once every incoming
  edge of the node is decided and that distribution is stable, the node keeps
  exactly the edges :func:`iac.nas.genotype.discretize` chooses at this
  check (score ``beta * strongest non-none weight``, ties by operation order
  then edge index) and the others are dropped; it never goes below
  ``steps_per_node`` edges (or the in-degree). A node with no more edges than
  it keeps is fixed as soon as its edges are decided, with no event.
* **Scores after pruning.** A pruned edge's operations are weighed in the
  full search's view: their softmax over the survivors times the mass they
  held among all the edge's operations when pruned (``EdgeState.mass``,
  carried in :class:`PruneEvent` ``kept_mass``, the supernet and the check
  records). Renormalising over the survivors alone would inflate a pruned
  edge (2-3x for an edge cut to 3 operations) and, once every edge is down
  to one operation, rank edges by beta alone. The score is invariant to a
  common shift of the surviving logits. It equals the full search's score
  exactly when the pruned operations' logits stay where they were and the
  survivors' logits move only among themselves (their log-sum-exp fixed);
  otherwise it is the full-search score as of the last pruning.
* **Stop.** :attr:`JSStabilityPruning.all_decided` once every edge has one
  operation (or was dropped) and every node's inputs are fixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from iac.config import StabilityConfig, to_dict
from iac.nas.genotype import EdgeState, SearchSpace, discretize, edge_key
from iac.nas.stability import NONE_OP, EdgeStatus, make_stability_test, top_k_ops

if TYPE_CHECKING:  # torch is needed only to apply events, not to decide them
    import torch

__all__ = [
    "PruneEvent",
    "PruningPolicy",
    "NoPruning",
    "JSStabilityPruning",
    "keep_target",
    "edge_states_of",
    "apply_events",
    "move_param_state",
    "drop_params",
]

OPS_EVENT = "ops"
EDGES_EVENT = "edges"


@dataclass(frozen=True)
class PruneEvent:
    """One pruning decision.

    Attributes:
        check: Number of the check that triggered it.
        epoch: Epoch of that check.
        arch_step: Architecture step of that check.
        arch: Architecture index (one per skip level with ``per_level``).
        kind: ``"ops"`` (operations of one edge) or ``"edges"`` (edges of one node).
        edge: Edge key ``"i->j"`` of an ``ops`` event, else ``None``.
        edge_index: Index of that edge in ``SearchSpace.edges()``, else ``None``.
        node: Destination node (both kinds).
        removed: ``(name, weight)`` pairs at removal: operation and its
            softmax(alpha) weight, or edge key and its softmax(beta) weight.
        kept: Surviving operation names or edge keys, in canonical order.
        kept_indices: Positions of ``kept`` among the names before pruning
            (operations), or edge indices in ``SearchSpace.edges()`` (edges).
        kept_mass: ``ops`` events: the share of the edge's softmax(alpha)
            the kept operations held at this check (what the edge's ``mass``
            is multiplied by); ``None`` for ``edges`` events.
    """

    check: int
    epoch: int
    arch_step: int
    arch: int
    kind: str
    edge: str | None
    edge_index: int | None
    node: int
    removed: tuple[tuple[str, float], ...]
    kept: tuple[str, ...]
    kept_indices: tuple[int, ...]
    kept_mass: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (the trajectory's ``events`` entries)."""
        return {
            "check": self.check,
            "epoch": self.epoch,
            "arch_step": self.arch_step,
            "arch": self.arch,
            "kind": self.kind,
            "edge": self.edge,
            "edge_index": self.edge_index,
            "node": self.node,
            "removed": [[name, weight] for name, weight in self.removed],
            "kept": list(self.kept),
            "kept_indices": list(self.kept_indices),
            "kept_mass": self.kept_mass,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PruneEvent":
        """Inverse of :meth:`to_dict`."""
        if d.get("kind") not in (OPS_EVENT, EDGES_EVENT):
            raise ValueError(f"prune event kind {d.get('kind')!r} must be {OPS_EVENT!r} or {EDGES_EVENT!r}")
        return cls(
            check=int(d["check"]),
            epoch=int(d["epoch"]),
            arch_step=int(d["arch_step"]),
            arch=int(d["arch"]),
            kind=str(d["kind"]),
            edge=d["edge"],
            edge_index=None if d["edge_index"] is None else int(d["edge_index"]),
            node=int(d["node"]),
            removed=tuple((str(n), float(w)) for n, w in d["removed"]),
            kept=tuple(d["kept"]),
            kept_indices=tuple(int(i) for i in d["kept_indices"]),
            kept_mass=None if d.get("kept_mass") is None else float(d["kept_mass"]),
        )


def keep_target(n_ops: int, n_real: int, schedule: Sequence[int]) -> int:
    """How many non-``none`` operations an edge keeps at its next pruning.

    The largest schedule entry below the edge's current number of operations,
    capped at its number of non-``none`` operations.

    Args:
        n_ops: Current number of operations (``none`` included).
        n_real: Current number of non-``none`` operations.
        schedule: Strictly decreasing keep counts ending at 1.

    Returns:
        The target, or ``n_ops`` when the edge is already decided (one op).
    """
    if n_ops <= 1:
        return n_ops
    below = [k for k in schedule if k < n_ops]
    return min(below[0], n_real)


def edge_states_of(space: SearchSpace, arch_record: Mapping[str, Any]) -> list[EdgeState]:
    """``EdgeState`` list of one architecture of a check record (for :func:`discretize`)."""
    states = []
    for (i, j), rec in zip(space.edges(), arch_record["edges"]):
        alive = bool(rec.get("alive", True))
        states.append(
            EdgeState(
                src=i,
                dst=j,
                ops=tuple(rec["ops"]),
                alpha=np.asarray(rec["alpha"], dtype=np.float64),
                beta=float(rec["beta"]) if alive else 0.0,
                alive=alive,
                mass=float(rec.get("mass", 1.0)),
            )
        )
    return states


class PruningPolicy:
    """Interface shared by the policies the search loop accepts."""

    #: Pruning log: every event so far, in order.
    events: list[PruneEvent]
    #: Per-key :class:`EdgeStatus` of the last check (``None``: not tracked).
    last_status: dict[str, EdgeStatus] | None

    def observe(self, check_record: Mapping[str, Any]) -> list[PruneEvent]:
        """Reads one check record and returns the pruning to apply now."""
        raise NotImplementedError

    def decided(self, arch: int, edge: str | int) -> bool:
        """Whether the edge (key or index) needs no more decisions."""
        raise NotImplementedError

    @property
    def all_decided(self) -> bool:
        """Whether the search may stop."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state for checkpoints."""
        raise NotImplementedError

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict` output."""
        raise NotImplementedError


class NoPruning(PruningPolicy):
    """The full search: observes nothing, prunes nothing, never stops early."""

    kind = "none"

    def __init__(self) -> None:
        self.events = []
        self.last_status = None

    def observe(self, check_record: Mapping[str, Any]) -> list[PruneEvent]:
        return []

    def decided(self, arch: int, edge: str | int) -> bool:
        return False

    @property
    def all_decided(self) -> bool:
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise ValueError(f"checkpoint holds a {state.get('kind')!r} policy state, not {self.kind!r}")


@dataclass
class _ArchState:
    """What survives in one architecture: per edge its ops (``None`` once dropped) and mass, fixed nodes."""

    ops: list[tuple[str, ...] | None]
    fixed: set[int] = field(default_factory=set)
    mass: list[float] = field(default_factory=list)  # per edge, see EdgeState.mass


class JSStabilityPruning(PruningPolicy):
    """IAC-LTH: progressive pruning of stable edges (rules in the module docstring).

    Args:
        space: The search space (operation order, nodes, ``steps_per_node``).
        cfg: Stability settings (``tau``, ``patience``, ``window``,
            ``smoothing``, ``keep_schedule``); the check cadence is the
            search's (``SearchConfig.check_every``).
    """

    kind = "js_stability"

    def __init__(self, space: SearchSpace, cfg: StabilityConfig) -> None:
        schedule = tuple(cfg.keep_schedule)
        if (
            not schedule
            or any(int(k) != k or k < 1 for k in schedule)
            or any(a <= b for a, b in zip(schedule, schedule[1:]))
            or schedule[-1] != 1
        ):
            raise ValueError(
                f"keep_schedule={list(schedule)} must be strictly decreasing positive integers ending at 1, e.g. [3, 2, 1]"
            )
        self.space = space
        self.cfg = cfg
        self.schedule = tuple(int(k) for k in schedule)
        self.test = make_stability_test(cfg, top_k=self.schedule[0])
        self._edges = space.edges()
        self._keys = [edge_key(i, j) for i, j in self._edges]
        self._archs: list[_ArchState] = []
        self._last_check: int | None = None
        self.events = []
        self.last_status = {}

    # -- queries ---------------------------------------------------------------
    @property
    def n_archs(self) -> int:
        """Architectures seen so far (0 before the first check)."""
        return len(self._archs)

    def _edge_index(self, edge: str | int) -> int:
        if isinstance(edge, str):
            if edge not in self._keys:
                raise ValueError(f"edge {edge!r} is not in the search space; edges are {self._keys}")
            return self._keys.index(edge)
        if not 0 <= edge < len(self._keys):
            raise ValueError(f"edge index {edge} is out of range 0..{len(self._keys) - 1}")
        return int(edge)

    def surviving_ops(self, arch: int, edge: str | int) -> tuple[str, ...] | None:
        """The edge's surviving operations; ``None`` once dropped or before the first check."""
        if arch >= len(self._archs):
            return None
        return self._archs[arch].ops[self._edge_index(edge)]

    def mass(self, arch: int, edge: str | int) -> float:
        """The mass the edge's surviving operations held when last pruned (1.0 before any pruning)."""
        if arch >= len(self._archs):
            return 1.0
        return self._archs[arch].mass[self._edge_index(edge)]

    def alive(self, arch: int, edge: str | int) -> bool:
        """Whether the edge is still in the supernet."""
        return arch >= len(self._archs) or self._archs[arch].ops[self._edge_index(edge)] is not None

    def decided(self, arch: int, edge: str | int) -> bool:
        """Whether the edge is down to one operation or dropped."""
        if arch >= len(self._archs):
            return False
        ops = self._archs[arch].ops[self._edge_index(edge)]
        return ops is None or len(ops) == 1

    def node_fixed(self, arch: int, node: int) -> bool:
        """Whether the node's inputs are fixed."""
        return arch < len(self._archs) and node in self._archs[arch].fixed

    @property
    def all_decided(self) -> bool:
        if not self._archs:
            return False
        nodes = set(self.space.node_ids)
        return all(
            st.fixed == nodes and all(ops is None or len(ops) == 1 for ops in st.ops) for st in self._archs
        )

    # -- the decision ----------------------------------------------------------
    def _init_archs(self, n_archs: int) -> None:
        self._archs = [
            _ArchState(ops=[tuple(self.space.ops)] * len(self._edges), mass=[1.0] * len(self._edges))
            for _ in range(n_archs)
        ]

    def _check_record(self, record: Mapping[str, Any]) -> None:
        n = record.get("check")
        if self._last_check is not None and n is not None and n <= self._last_check:
            raise ValueError(f"check {n} comes after check {self._last_check}; checks must be observed in order")
        archs = record.get("archs")
        if not isinstance(archs, list) or not archs:
            raise ValueError(f"check {n}: 'archs' must be a non-empty list of architectures")
        if self._archs and len(archs) != len(self._archs):
            raise ValueError(f"check {n} has {len(archs)} architectures; earlier checks had {len(self._archs)}")
        for a, arch in enumerate(archs):
            keys = [e.get("edge") for e in arch.get("edges", [])]
            if keys != self._keys:
                raise ValueError(f"check {n}, arch {a}: edges {keys} do not match the search space's {self._keys}")

    def observe(self, check_record: Mapping[str, Any]) -> list[PruneEvent]:
        """Tests every undecided edge and node of one check; returns the pruning to apply.

        Args:
            check_record: A check dict (``check``, ``epoch``, ``arch_step``,
                ``archs``); each alive edge's ``ops`` must equal the policy's
                surviving operations (restrict recorded checks first when
                replaying, see :func:`iac.nas.replay.restrict_check`).

        Returns:
            The events of this check (also appended to :attr:`events`).

        Raises:
            ValueError: If the record does not fit the space or the policy's
                surviving operations, or comes out of order.
        """
        self._check_record(check_record)
        if not self._archs:
            self._init_archs(len(check_record["archs"]))
        meta = {
            "check": int(check_record["check"]),
            "epoch": int(check_record["epoch"]),
            "arch_step": int(check_record.get("arch_step", -1)),
        }
        status: dict[str, EdgeStatus] = {}
        events: list[PruneEvent] = []
        for a, arch_record in enumerate(check_record["archs"]):
            events += self._observe_ops(a, arch_record, meta, status)
            events += self._observe_nodes(a, arch_record, meta, status)
        self._last_check = meta["check"]
        self.last_status = status
        self.events.extend(events)
        return events

    def _observe_ops(self, a: int, arch_record, meta, status) -> list[PruneEvent]:
        st = self._archs[a]
        events = []
        for e, rec in enumerate(arch_record["edges"]):
            ops = st.ops[e]
            if ops is None:
                continue
            key = self._keys[e]
            if not rec.get("alive", True):
                raise ValueError(f"check {meta['check']}, arch {a}: edge {key} is recorded dead but was never dropped")
            if tuple(rec["ops"]) != ops:
                raise ValueError(
                    f"check {meta['check']}, arch {a}, edge {key}: recorded ops {list(rec['ops'])} differ from the "
                    f"surviving ops {list(ops)}; apply the pruning events (or restrict the record) first"
                )
            if len(ops) == 1:
                continue
            n_real = sum(op != NONE_OP for op in ops)
            k = keep_target(len(ops), n_real, self.schedule)
            test_key = f"a{a}/{key}"
            s = self.test.update(test_key, ops, rec["alpha"], k=k)
            status[test_key] = s
            if not s.stable:
                continue
            keep = set(top_k_ops(ops, rec["alpha"], k))
            kept_idx = tuple(i for i, op in enumerate(ops) if op in keep)
            # Correctly rounded, whatever the order: edges with equal weights keep equal masses (ties stay ties).
            kept_mass = math.fsum(float(rec["alpha"][i]) for i in kept_idx)
            events.append(
                PruneEvent(
                    **meta,
                    arch=a,
                    kind=OPS_EVENT,
                    edge=key,
                    edge_index=e,
                    node=self._edges[e][1],
                    removed=tuple((op, float(p)) for op, p in zip(ops, rec["alpha"]) if op not in keep),
                    kept=tuple(ops[i] for i in kept_idx),
                    kept_indices=kept_idx,
                    kept_mass=kept_mass,
                )
            )
            st.ops[e] = tuple(ops[i] for i in kept_idx)
            st.mass[e] *= kept_mass
            self.test.reset(test_key)
        return events

    def _observe_nodes(self, a: int, arch_record, meta, status) -> list[PruneEvent]:
        st = self._archs[a]
        events = []
        for j in self.space.node_ids:
            if j in st.fixed:
                continue
            incoming = [e for e in self.space.node_edges(j) if st.ops[e] is not None]
            n_keep = min(self.space.steps_per_node, len(incoming))
            test_key = f"a{a}/n{j}"
            betas = [float(arch_record["edges"][e]["beta"]) for e in incoming]
            s = self.test.update(test_key, [self._keys[e] for e in incoming], betas, k=n_keep)
            status[test_key] = s
            if not all(len(st.ops[e]) == 1 for e in incoming):
                continue
            if len(incoming) <= n_keep:
                st.fixed.add(j)
                self.test.reset(test_key)
                continue
            if not s.stable:
                continue
            # The node keeps exactly what discretisation keeps right now.
            cell = discretize(self.space, self._current_states(a, arch_record))
            sources = {src for _, src in cell.nodes[j - self.space.n_inputs]}
            kept = tuple(e for e in incoming if self._edges[e][0] in sources)
            assert len(kept) == n_keep, "discretize keeps steps_per_node edges of a node"
            beta = dict(zip(incoming, betas))
            events.append(
                PruneEvent(
                    **meta,
                    arch=a,
                    kind=EDGES_EVENT,
                    edge=None,
                    edge_index=None,
                    node=j,
                    removed=tuple((self._keys[e], beta[e]) for e in incoming if e not in kept),
                    kept=tuple(self._keys[e] for e in kept),
                    kept_indices=kept,
                )
            )
            for e in incoming:
                if e not in kept:
                    st.ops[e] = None
            st.fixed.add(j)
            self.test.reset(test_key)
        return events

    def _current_states(self, a: int, arch_record) -> list[EdgeState]:
        """Edge states after this check's operation pruning (full-view weights unchanged by it)."""
        st = self._archs[a]
        states = edge_states_of(self.space, arch_record)
        for e, state in enumerate(states):
            ops = st.ops[e]
            if ops is None:
                state.alive, state.beta = False, 0.0
            elif tuple(state.ops) != ops:
                w = np.asarray([state.alpha[state.ops.index(op)] for op in ops], dtype=np.float64)
                state.ops, state.alpha = ops, w / w.sum()
            state.mass = st.mass[e]
        return states

    # -- checkpoints -----------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "settings": to_dict(self.cfg),
            "space": self.space.to_dict(),
            "archs": [
                {"ops": [None if ops is None else list(ops) for ops in st.ops], "fixed": sorted(st.fixed),
                 "mass": list(st.mass)}
                for st in self._archs
            ],
            "last_check": self._last_check,
            "test": self.test.state_dict(),
            "events": [ev.to_dict() for ev in self.events],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restores :meth:`state_dict` output.

        Raises:
            ValueError: If it was saved by another policy, space or settings.
        """
        if state.get("kind") != self.kind:
            raise ValueError(f"checkpoint holds a {state.get('kind')!r} policy state, not {self.kind!r}")
        if state.get("space") != self.space.to_dict():
            raise ValueError(f"policy state was saved for space {state.get('space')}, not {self.space.to_dict()}")
        settings = to_dict(self.cfg)
        if state.get("settings") != settings:
            raise ValueError(f"policy state was saved with settings {state.get('settings')}, not {settings}")
        self._archs = [
            _ArchState(
                ops=[None if ops is None else tuple(ops) for ops in st["ops"]],
                fixed={int(j) for j in st["fixed"]},
                mass=[float(m) for m in st.get("mass", [1.0] * len(st["ops"]))],
            )
            for st in state["archs"]
        ]
        self._last_check = state["last_check"]
        self.test.load_state_dict(state["test"])
        self.events = [PruneEvent.from_dict(d) for d in state["events"]]
        self.last_status = {}


# -- applying events to a supernet and its optimizers ---------------------------


def move_param_state(optimizer: "torch.optim.Optimizer", old: "torch.Tensor", new: "torch.Tensor", kept: Sequence[int]) -> None:
    """Replaces ``old`` by ``new`` in ``optimizer``, slicing its state.

    ``new`` takes ``old``'s place in its parameter group (order unchanged).
    Every state tensor shaped like ``old`` (Adam's ``exp_avg``,
    ``exp_avg_sq``, ...) is sliced to ``kept`` along the dimension that
    shrank; other entries (``step``) are kept as they are.

    Args:
        optimizer: The optimizer holding ``old``.
        old: The parameter before pruning.
        new: Its replacement.
        kept: Indices of ``old`` along the shrunk dimension that ``new`` keeps.

    Raises:
        ValueError: If ``old`` is not in ``optimizer`` or shapes do not fit ``kept``.
    """
    import torch

    dims = [d for d, (a, b) in enumerate(zip(old.shape, new.shape)) if a != b]
    if old.dim() != new.dim() or len(dims) > 1:
        raise ValueError(f"cannot map a parameter of shape {tuple(old.shape)} onto {tuple(new.shape)}")
    dim = dims[0] if dims else 0
    if new.shape[dim] != len(kept):
        raise ValueError(f"{len(kept)} kept indices for a new parameter of shape {tuple(new.shape)}")
    for group in optimizer.param_groups:
        for pos, p in enumerate(group["params"]):
            if p is old:
                group["params"][pos] = new
                break
        else:
            continue
        break
    else:
        raise ValueError("the replaced parameter is not in the optimizer")
    state = optimizer.state.pop(old, None)
    if state:
        moved = {}
        for name, value in state.items():
            if torch.is_tensor(value) and value.shape == old.shape:
                index = torch.as_tensor(list(kept), dtype=torch.long, device=value.device)
                moved[name] = value.index_select(dim, index).clone()
            else:
                moved[name] = value
        optimizer.state[new] = moved


def drop_params(optimizer: "torch.optim.Optimizer", params: Iterable["torch.Tensor"]) -> None:
    """Removes ``params`` from every group and from the state of ``optimizer`` (order of the rest kept)."""
    gone = {id(p) for p in params}
    if not gone:
        return
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in gone]
    for p in [p for p in optimizer.state if id(p) in gone]:
        del optimizer.state[p]


def apply_events(
    supernet: Any,
    events: Sequence[PruneEvent],
    weight_optimizer: "torch.optim.Optimizer | None" = None,
    arch_optimizer: "torch.optim.Optimizer | None" = None,
) -> None:
    """Physically prunes ``supernet`` and keeps both optimizers in step.

    ``ops`` events call ``supernet.prune_ops(arch, edge_index, kept)`` and
    ``edges`` events ``supernet.prune_edges(arch, node, kept_edge_indices)``;
    each returns ``(old_param, new_param, kept_indices)`` for the shrunk
    architecture parameter, whose Adam state is moved by
    :func:`move_param_state`. Weight parameters that left
    ``supernet.weight_parameters()`` are removed from ``weight_optimizer``.

    Args:
        supernet: A :class:`iac.nas.supernet.SearchNetwork`.
        events: Events from :meth:`PruningPolicy.observe`, in order.
        weight_optimizer: Optimizer of the cell weights.
        arch_optimizer: Optimizer of alpha and beta.
    """
    for ev in events:
        before = list(supernet.weight_parameters())
        if ev.kind == OPS_EVENT:
            old, new, kept = supernet.prune_ops(ev.arch, ev.edge_index, list(ev.kept), kept_mass=ev.kept_mass)
        elif ev.kind == EDGES_EVENT:
            old, new, kept = supernet.prune_edges(ev.arch, ev.node, list(ev.kept_indices))
        else:
            raise ValueError(f"prune event kind {ev.kind!r} must be {OPS_EVENT!r} or {EDGES_EVENT!r}")
        if arch_optimizer is not None and old is not None and old is not new:
            move_param_state(arch_optimizer, old, new, kept)
        if weight_optimizer is not None:
            after = {id(p) for p in supernet.weight_parameters()}
            drop_params(weight_optimizer, [p for p in before if id(p) not in after])
