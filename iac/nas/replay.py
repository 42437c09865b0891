"""Offline replay of the IAC-LTH stability policy on a recorded trajectory.

:func:`replay` runs :class:`iac.nas.pruning.JSStabilityPruning` offline on
the recorded checks, exactly as the live search calls it, after restricting
each check to the operations and edges that survive in the replay
(:func:`restrict_check`). On a full-search trajectory the replay is
counterfactual once pruning starts (pruning changes what follows); on a
live IAC-LTH trajectory the records already hold the surviving operations,
are used unchanged and reproduce the live stop and genotype exactly.
:func:`replay_grid` does it for a grid of settings (calibration).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from iac.config import StabilityConfig
from iac.nas.agreement import agreement
from iac.nas.genotype import Genotype, SearchSpace, discretize, edge_key
from iac.nas.pruning import JSStabilityPruning, PruneEvent, edge_states_of
from iac.nas.trajectory import final_genotype, trajectory_space

__all__ = [
    "restrict_check",
    "ReplayDiverged",
    "ReplayResult",
    "replay",
    "replay_grid",
    "decision_fidelity",
]


class ReplayDiverged(ValueError):
    """A recorded check lacks operations the replayed policy still keeps.

    Happens when replaying a pruned (IAC-LTH) trajectory with settings that
    prune later than the live search did.

    Attributes:
        check: The check number where the replay cannot go on.
    """

    def __init__(self, message: str, check: int | None) -> None:
        super().__init__(message)
        self.check = check


def restrict_check(record: Mapping[str, Any], policy: JSStabilityPruning) -> dict[str, Any]:
    """A check record restricted to what survives in ``policy``.

    Each alive edge keeps only the policy's surviving operations, their
    weights renormalised and its ``mass`` set to the policy's (what a live
    IAC-LTH supernet would record); edges the policy dropped are marked dead and each
    node's beta is renormalised over its remaining edges. Entries that
    already match (a live IAC-LTH record) are copied unchanged, so the
    policy sees exactly the recorded numbers. ``status`` (the live policy's
    report) is left out. The input is not modified.

    Raises:
        ReplayDiverged: If the record lacks an operation the policy still keeps.
    """
    out = {k: copy.deepcopy(v) for k, v in record.items() if k not in ("archs", "status")}
    space = policy.space
    archs = []
    for a, arch in enumerate(record["archs"]):
        edges = [dict(e) for e in arch["edges"]]
        if a < policy.n_archs:
            for e, rec in enumerate(edges):
                if not policy.alive(a, e):
                    rec["alive"], rec["beta"] = False, 0.0
                    continue
                ops = policy.surviving_ops(a, e)
                if tuple(rec["ops"]) == ops:
                    continue
                missing = [op for op in ops if op not in rec["ops"]]
                if missing:
                    raise ReplayDiverged(
                        f"check {record.get('check')}, arch {a}, edge {rec['edge']}: the record lacks {missing}, "
                        "which the replayed policy still keeps (the recorded search pruned earlier)",
                        record.get("check"),
                    )
                w = np.asarray([rec["alpha"][rec["ops"].index(op)] for op in ops], dtype=np.float64)
                rec["ops"], rec["alpha"] = list(ops), [float(x) for x in w / w.sum()]
                rec["mass"] = policy.mass(a, e)
            for j in space.node_ids:
                incoming = space.node_edges(j)
                now = [e for e in incoming if edges[e].get("alive", True)]
                recorded = [e for e in incoming if arch["edges"][e].get("alive", True)]
                if now != recorded:
                    total = sum(float(arch["edges"][e]["beta"]) for e in now)
                    for e in now:
                        edges[e]["beta"] = float(arch["edges"][e]["beta"]) / total
        archs.append({**{k: v for k, v in arch.items() if k != "edges"}, "edges": edges})
    out["archs"] = archs
    return out


@dataclass(frozen=True)
class ReplayResult:
    """Outcome of :func:`replay`.

    Attributes:
        stop_check: Check at which every edge was decided (``None``: never).
        stop_epoch: Epoch of that check (``None``: never).
        stop_arch_step: Architecture step of that check (``None``: never).
        genotype: Discretisation of the replayed supernet after the stop
            check (or after the last check when it never stops).
        events: The replayed pruning events.
    """

    stop_check: int | None
    stop_epoch: int | None
    stop_arch_step: int | None
    genotype: Genotype
    events: tuple[PruneEvent, ...]

    @property
    def stopped(self) -> bool:
        """Whether every edge was decided within the trajectory."""
        return self.stop_check is not None


def replay(
    trajectory: Mapping[str, Any], space: SearchSpace | None = None, cfg: StabilityConfig | None = None
) -> ReplayResult:
    """Runs the IAC-LTH policy offline over the trajectory's checks.

    The checks are used as recorded: the trajectory fixes their spacing
    (the search's ``check_every``).

    Args:
        trajectory: A trajectory dict (:func:`iac.nas.trajectory.load_trajectory`).
        space: Its search space (default: the trajectory's).
        cfg: Stability settings (default: :class:`StabilityConfig`).

    Returns:
        Stop check/epoch, the replayed genotype and the events.

    Raises:
        ValueError: If the trajectory has no checks.
        ReplayDiverged: If the trajectory was pruned where the replay is not.
    """
    space = space or trajectory_space(trajectory)
    cfg = cfg or StabilityConfig()
    checks = trajectory["checks"]
    if not checks:
        raise ValueError("the trajectory has no checks to replay (did the search reach its architecture steps?)")
    policy = JSStabilityPruning(space, cfg)
    stop = None
    last = checks[-1]
    for rec in checks:
        policy.observe(restrict_check(rec, policy))
        if policy.all_decided:
            stop = last = rec
            break
    final = restrict_check(last, policy)
    genotype = Genotype(space, tuple(discretize(space, edge_states_of(space, arch)) for arch in final["archs"]))
    return ReplayResult(
        stop_check=None if stop is None else int(stop["check"]),
        stop_epoch=None if stop is None else int(stop["epoch"]),
        stop_arch_step=None if stop is None else stop.get("arch_step"),
        genotype=genotype,
        events=tuple(policy.events),
    )


def _outcome(res: ReplayResult, total: int, reference: Genotype) -> dict[str, Any]:
    """One replay's results as a :func:`replay_grid` row (its settings excluded)."""
    run = res.stop_epoch + 1 if res.stopped else total
    agree = agreement(reference, res.genotype)
    return {
        "stopped": res.stopped,
        "stop_check": res.stop_check,
        "stop_epoch": res.stop_epoch,
        "stop_arch_step": res.stop_arch_step,
        "epochs_run": run,
        "epochs_total": total,
        "epoch_ratio": total / run if run else float("nan"),
        "events": len(res.events),
        "genotype_equal": res.genotype == reference,
        "shared_choices": f"{agree.shared}/{agree.total}",
        "jaccard": agree.jaccard,
        "genotype": str(res.genotype),
        "diverged_check": None,
    }


def replay_grid(
    trajectory: Mapping[str, Any],
    taus: Sequence[float],
    patiences: Sequence[int],
    windows: Sequence[int],
    base: StabilityConfig | None = None,
    space: SearchSpace | None = None,
) -> pd.DataFrame:
    """Replays every ``tau`` x ``patience`` x ``window`` combination.

    Args:
        trajectory: A trajectory dict (usually of a full search).
        taus, patiences, windows: The grid.
        base: Settings not in the grid (``smoothing``, ``keep_schedule``).
        space: The search space (default: the trajectory's).

    Returns:
        One row per combination: ``tau``, ``patience``, ``window``,
        ``stopped``, ``stop_check``, ``stop_epoch``, ``stop_arch_step``,
        ``epochs_run`` (stop epoch + 1, or all epochs), ``epochs_total``,
        ``epoch_ratio`` (total / run, the counterfactual epoch saving),
        ``events``, ``genotype_equal`` (to the trajectory's final genotype),
        ``genotype`` and ``diverged_check`` (where a replay of a pruned
        trajectory could not go on, see :class:`ReplayDiverged`; its other
        results are then empty).
    """
    for name, values in (("taus", taus), ("patiences", patiences), ("windows", windows)):
        if not len(values):
            raise ValueError(f"{name} is empty; give at least one value")
    base = base or StabilityConfig()
    space = space or trajectory_space(trajectory)
    reference = final_genotype(trajectory)
    total = len(trajectory["epochs"]) or (int(trajectory["checks"][-1]["epoch"]) + 1 if trajectory["checks"] else 0)
    rows = []
    for tau, patience, window in itertools.product(taus, patiences, windows):
        cfg = replace(base, tau=float(tau), patience=int(patience), window=int(window))
        row = {"tau": float(tau), "patience": int(patience), "window": int(window)}
        try:
            res = replay(trajectory, space, cfg)
        except ReplayDiverged as err:
            rows.append({**row, "stopped": False, "genotype_equal": False, "diverged_check": err.check})
            continue
        rows.append({**row, **_outcome(res, total, reference)})
    columns = ["tau", "patience", "window", "stopped", "stop_check", "stop_epoch", "stop_arch_step", "epochs_run",
               "epochs_total", "epoch_ratio", "events", "genotype_equal", "shared_choices", "jaccard", "genotype",
               "diverged_check"]
    grid = pd.DataFrame(rows, columns=columns)
    # Nullable integers: a replay that never stops has no stop check.
    ints = ["stop_check", "stop_epoch", "stop_arch_step", "epochs_run", "epochs_total", "events", "diverged_check"]
    return grid.astype({c: "Int64" for c in ints})


def _is_complete(record: Mapping[str, Any], space: SearchSpace) -> bool:
    """Whether a check records every operation of every edge, all alive (a full search's check)."""
    return all(
        tuple(e["ops"]) == tuple(space.ops) and e.get("alive", True) for arch in record["archs"] for e in arch["edges"]
    )


def decision_fidelity(
    trajectory: Mapping[str, Any], cfg: StabilityConfig | None = None, space: SearchSpace | None = None
) -> pd.DataFrame:
    """Every decision of a replayed IAC-LTH next to what the full search's complete record says at that check.

    Replays the policy on a full-search trajectory (as :func:`replay`) and, at
    each pruning event, compares what it keeps with the full search's view of
    the same check, where every operation kept training (the pruned ones were
    not frozen, unlike in a live IAC-LTH search):

    - ``edges`` events: the kept edges against the edges :func:`discretize`
      of the complete record keeps for that node;
    - ``ops`` events: whether the complete record's strongest non-``none``
      operation of the edge is among the kept operations (for a final
      one-operation decision: whether it is that operation).

    Args:
        trajectory: A full-search trajectory dict (every check complete).
        cfg: Stability settings (default: :class:`StabilityConfig`).
        space: Its search space (default: the trajectory's).

    Returns:
        One row per event: ``check``, ``epoch``, ``arch``, ``kind``, ``target``
        (edge key or node), ``n_kept``, ``kept``, ``full_view`` (what the
        complete record keeps or prefers) and ``agree``.

    Raises:
        ValueError: A check of the trajectory is not complete (it was pruned live).
    """
    space = space or trajectory_space(trajectory)
    cfg = cfg or StabilityConfig()
    order = list(space.ops)
    policy = JSStabilityPruning(space, cfg)
    rows = []
    for rec in trajectory["checks"]:
        if not _is_complete(rec, space):
            raise ValueError(
                f"check {rec.get('check')} does not record every operation of every edge: decision_fidelity needs "
                "a full-search trajectory (a live IAC-LTH trajectory has no complete record to compare with)"
            )
        events = policy.observe(restrict_check(rec, policy))
        for ev in events:
            states = edge_states_of(space, rec["archs"][ev.arch])
            if ev.kind == "edges":
                cell = discretize(space, states)
                full = tuple(sorted(edge_key(src, ev.node) for _, src in cell.nodes[ev.node - space.n_inputs]))
                kept = tuple(sorted(ev.kept))
                target, agree = str(ev.node), kept == full
            else:
                best = states[ev.edge_index].strongest(order)
                full = (best[0],) if best else ()
                kept = tuple(ev.kept)
                target, agree = ev.edge, bool(full) and full[0] in kept
            rows.append({"check": ev.check, "epoch": ev.epoch, "arch": ev.arch, "kind": ev.kind, "target": target,
                         "n_kept": len(kept), "kept": ",".join(kept), "full_view": ",".join(full), "agree": agree})
        if policy.all_decided:
            break
    columns = ["check", "epoch", "arch", "kind", "target", "n_kept", "kept", "full_view", "agree"]
    return pd.DataFrame(rows, columns=columns)
