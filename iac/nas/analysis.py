"""Trajectory analyses: when are the final operations known?

Tables (pandas DataFrames) over a search trajectory
(:mod:`iac.nas.trajectory`) answer the paper's observation: per epoch, is
each edge's final operation already among its current top-1/2/3
(:func:`topk_membership`, :func:`first_epoch_in_topk`), how well does the
current ranking agree with the final one (:func:`rank_correlation`), how
much does each distribution still move between checks
(:func:`consecutive_js`), and when did each operation leave the supernet
(:func:`op_timeline`). Their figures are in :mod:`iac.nas.plots`; the
offline replay of the stability policy is :mod:`iac.nas.replay`.
"""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from iac.nas.genotype import SearchSpace
from iac.nas.pruning import PruneEvent
from iac.nas.stability import NONE_OP, js_divergence
from iac.nas.trajectory import epoch_checks, final_genotype, trajectory_space

__all__ = [
    "TOP_KS",
    "DEFAULT_STAY_K",
    "topk_membership",
    "first_epoch_in_topk",
    "rank_correlation",
    "consecutive_js",
    "op_timeline",
]

# Top-k sizes reported per epoch (the paper's observation is about the top-3).
TOP_KS = (1, 2, 3)
# k of the "every final operation stays in the top-k" epoch.
DEFAULT_STAY_K = 3


def _final_choices(trajectory: Mapping[str, Any]) -> list[dict[str, str]]:
    """Per architecture: edge key -> final operation, for the edges of the final genotype."""
    geno = final_genotype(trajectory)
    n = geno.space.n_inputs
    return [{f"{src}->{dst}": op for src, dst, op in cell.edges(n)} for cell in geno.cells]


def _rank_of(op: str, ops: Sequence[str], probs: Sequence[float], order: Sequence[str]) -> float:
    """1-based rank of ``op`` among the non-``none`` ops (ties by canonical order); NaN if absent."""
    if op not in ops:
        return float("nan")
    pos = {name: i for i, name in enumerate(order)}
    ranked = sorted((name for name in ops if name != NONE_OP), key=lambda name: (-probs[ops.index(name)], pos[name]))
    return float(ranked.index(op) + 1)


def topk_membership(trajectory: Mapping[str, Any], ks: Sequence[int] = TOP_KS) -> pd.DataFrame:
    """Per epoch and final-genotype edge: rank of its final op now, and top-k membership.

    Uses the last check of each epoch; ``none`` is excluded from the ranking.

    Returns:
        Columns ``epoch``, ``check``, ``arch``, ``edge``, ``final_op``,
        ``rank`` (NaN when the op is no longer on the edge) and ``top{k}``
        (bool) for each ``k`` in ``ks``.
    """
    order = trajectory_space(trajectory).ops
    finals = _final_choices(trajectory)
    rows = []
    for epoch, rec in epoch_checks(trajectory).items():
        for a, arch in enumerate(rec["archs"]):
            choices = finals[a] if a < len(finals) else finals[0]
            by_key = {e["edge"]: e for e in arch["edges"]}
            for key, op in choices.items():
                e = by_key[key]
                rank = _rank_of(op, list(e["ops"]), e["alpha"], order) if e.get("alive", True) else float("nan")
                row = {"epoch": epoch, "check": rec["check"], "arch": a, "edge": key, "final_op": op, "rank": rank}
                row.update({f"top{k}": bool(rank <= k) for k in ks})
                rows.append(row)
    columns = ["epoch", "check", "arch", "edge", "final_op", "rank"] + [f"top{k}" for k in ks]
    return pd.DataFrame(rows, columns=columns)


def first_epoch_in_topk(membership: pd.DataFrame, k: int = DEFAULT_STAY_K) -> int | None:
    """First epoch from which every final operation stays in the top-k until the end.

    Args:
        membership: Output of :func:`topk_membership` (with a ``top{k}`` column).
        k: The top-k size.

    Returns:
        The epoch, or ``None`` when the final operations are not all in the
        top-k at the last recorded epoch.
    """
    col = f"top{k}"
    if col not in membership:
        raise ValueError(f"membership table has no {col!r} column; compute it with ks including {k}")
    per_epoch = membership.groupby("epoch")[col].all().sort_index()
    first = None
    for epoch, ok in per_epoch.items():
        if ok and first is None:
            first = int(epoch)
        elif not ok:
            first = None
    return first


def rank_correlation(trajectory: Mapping[str, Any]) -> pd.DataFrame:
    """Per epoch and edge: Spearman correlation of the op weights with the last check's.

    Only non-``none`` ops present in both checks are compared; NaN when fewer
    than two are, or a ranking is constant (e.g. the uniform start).

    Returns:
        Columns ``epoch``, ``check``, ``arch``, ``edge``, ``spearman``.
    """
    checks = trajectory["checks"]
    rows = []
    if not checks:
        return pd.DataFrame(rows, columns=["epoch", "check", "arch", "edge", "spearman"])
    final = checks[-1]
    for epoch, rec in epoch_checks(trajectory).items():
        for a, arch in enumerate(rec["archs"]):
            final_edges = {e["edge"]: e for e in final["archs"][a]["edges"]}
            for e in arch["edges"]:
                f = final_edges[e["edge"]]
                common = [op for op in e["ops"] if op != NONE_OP and op in f["ops"]]
                rho = float("nan")
                if len(common) >= 2:
                    x = [e["alpha"][e["ops"].index(op)] for op in common]
                    y = [f["alpha"][f["ops"].index(op)] for op in common]
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # constant input -> NaN
                        rho = float(spearmanr(x, y).statistic)
                rows.append({"epoch": epoch, "check": rec["check"], "arch": a, "edge": e["edge"], "spearman": rho})
    return pd.DataFrame(rows, columns=["epoch", "check", "arch", "edge", "spearman"])


def consecutive_js(trajectory: Mapping[str, Any]) -> pd.DataFrame:
    """Per check and alive edge: JS divergence (base 2) of softmax(alpha) from the previous check.

    The raw check-to-check movement of the recorded operation weights, for
    every search (full or IAC-LTH); not the smoothed divergence the live
    stability test compares with ``tau`` (see
    :func:`iac.nas.plots.stability_js_figure`).

    When the edge was pruned in between, the previous distribution is
    restricted to the surviving ops and renormalised.

    Returns:
        Columns ``check``, ``epoch``, ``arch_step``, ``arch``, ``edge``, ``js``.
    """
    rows = []
    checks = trajectory["checks"]
    for prev, rec in zip(checks, checks[1:]):
        for a, arch in enumerate(rec["archs"]):
            prev_edges = {e["edge"]: e for e in prev["archs"][a]["edges"]}
            for e in arch["edges"]:
                p = prev_edges[e["edge"]]
                if not e.get("alive", True) or not p.get("alive", True) or not set(e["ops"]) <= set(p["ops"]):
                    continue
                before = [p["alpha"][p["ops"].index(op)] for op in e["ops"]]
                rows.append(
                    {
                        "check": rec["check"],
                        "epoch": rec["epoch"],
                        "arch_step": rec.get("arch_step"),
                        "arch": a,
                        "edge": e["edge"],
                        "js": js_divergence(e["alpha"], before),
                    }
                )
    return pd.DataFrame(rows, columns=["check", "epoch", "arch_step", "arch", "edge", "js"])


def _event_dicts(events: Iterable[PruneEvent | Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [ev.to_dict() if isinstance(ev, PruneEvent) else dict(ev) for ev in events]


def op_timeline(events: Iterable[PruneEvent | Mapping[str, Any]], space: SearchSpace, n_archs: int = 1) -> pd.DataFrame:
    """When each operation of each edge left the supernet, from pruning events.

    Returns:
        Columns ``arch``, ``edge``, ``op``, ``removed_epoch`` (NaN: never),
        ``removed_check``, ``by`` (``"ops"``, ``"edges"`` or empty).
    """
    removed: dict[tuple[int, str, str], tuple[int, int, str]] = {}
    ops_of = {(a, f"{i}->{j}"): list(space.ops) for a in range(n_archs) for i, j in space.edges()}
    for ev in _event_dicts(events):
        a = int(ev["arch"])
        if ev["kind"] == "ops":
            for op, _ in ev["removed"]:
                removed[(a, ev["edge"], op)] = (ev["epoch"], ev["check"], "ops")
            ops_of[(a, ev["edge"])] = list(ev["kept"])
        else:
            for key, _ in ev["removed"]:
                for op in ops_of[(a, key)]:
                    removed[(a, key, op)] = (ev["epoch"], ev["check"], "edges")
    rows = []
    for a in range(n_archs):
        for i, j in space.edges():
            key = f"{i}->{j}"
            for op in space.ops:
                epoch, check, by = removed.get((a, key, op), (np.nan, np.nan, ""))
                rows.append({"arch": a, "edge": key, "op": op, "removed_epoch": epoch, "removed_check": check, "by": by})
    return pd.DataFrame(rows, columns=["arch", "edge", "op", "removed_epoch", "removed_check", "by"])
