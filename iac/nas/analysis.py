"""Reading search trajectories: when are the final operations known, and replay.

A trajectory is the JSON the search loop writes (``docs/architecture.md``):
``space``, ``checks`` (every ``check_every`` architecture steps: per edge the
surviving operations, softmax(alpha) over them and the node weight beta),
``epochs`` and, after the search, ``final_genotype`` and ``events``.

Tables (pandas DataFrames) answer the paper's observation: per epoch, is each
edge's final operation already among its current top-1/2/3
(:func:`topk_membership`, :func:`first_epoch_in_topk`), how well does the
current ranking agree with the final one (:func:`rank_correlation`), and how
much does each distribution still move (:func:`js_curves`).

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
import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from iac.config import StabilityConfig
from iac.nas.genotype import Genotype, SearchSpace, discretize
from iac.nas.pruning import JSStabilityPruning, PruneEvent, edge_states_of
from iac.nas.stability import NONE_OP, js_divergence

__all__ = [
    "load_trajectory",
    "trajectory_space",
    "final_genotype",
    "epoch_checks",
    "topk_membership",
    "first_epoch_in_topk",
    "rank_correlation",
    "js_curves",
    "op_timeline",
    "restrict_check",
    "ReplayDiverged",
    "ReplayResult",
    "replay",
    "replay_grid",
    "plot_js_curves",
    "plot_op_timeline",
    "plot_topk_membership",
]

# Top-k sizes reported per epoch (the paper's observation is about the top-3).
TOP_KS = (1, 2, 3)
# k of the "every final operation stays in the top-k" epoch.
DEFAULT_STAY_K = 3


def load_trajectory(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A trajectory dict from a JSON file (or an already loaded dict), validated.

    Raises:
        ValueError: If it lacks ``space``, ``checks`` or ``epochs``.
    """
    if isinstance(source, Mapping):
        traj = dict(source)
        where = "trajectory"
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"trajectory file {str(path)!r} does not exist")
        try:
            traj = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"trajectory file {str(path)!r} is not valid JSON: {err}") from None
        where = f"trajectory file {str(path)!r}"
    missing = [k for k in ("space", "checks", "epochs") if k not in traj]
    if missing:
        raise ValueError(f"{where} lacks {missing}; a search trajectory has 'space', 'checks' and 'epochs'")
    return traj


def trajectory_space(trajectory: Mapping[str, Any]) -> SearchSpace:
    """The search space the trajectory was recorded in."""
    return SearchSpace.from_dict(trajectory["space"])


def final_genotype(trajectory: Mapping[str, Any]) -> Genotype:
    """The search's final genotype.

    ``final_genotype`` if recorded, else the last epoch's ``genotype``, else
    the discretisation of the last check.

    Raises:
        ValueError: If the trajectory has none of them.
    """
    if trajectory.get("final_genotype"):
        return Genotype.from_dict(trajectory["final_genotype"])
    epochs = trajectory.get("epochs") or []
    if epochs and epochs[-1].get("genotype"):
        return Genotype.from_dict(epochs[-1]["genotype"])
    if trajectory.get("checks"):
        space = trajectory_space(trajectory)
        last = trajectory["checks"][-1]
        return Genotype(space, tuple(discretize(space, edge_states_of(space, a)) for a in last["archs"]))
    raise ValueError("the trajectory has no final genotype, no epoch genotype and no check to derive one from")


def epoch_checks(trajectory: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """The last check of every epoch that has one, by epoch."""
    out: dict[int, dict[str, Any]] = {}
    for rec in trajectory["checks"]:
        out[int(rec["epoch"])] = rec
    return dict(sorted(out.items()))


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


def js_curves(trajectory: Mapping[str, Any]) -> pd.DataFrame:
    """Per check and alive edge: JS divergence (base 2) from the previous check.

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


# -- replay --------------------------------------------------------------------


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
    weights renormalised; edges the policy dropped are marked dead and each
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

    The checks are used as recorded (``cfg.check_every`` is not applied: the
    trajectory fixes the spacing of its checks).

    Args:
        trajectory: A trajectory dict (:func:`load_trajectory`).
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
        run = res.stop_epoch + 1 if res.stopped else total
        rows.append(
            {
                **row,
                "stopped": res.stopped,
                "stop_check": res.stop_check,
                "stop_epoch": res.stop_epoch,
                "stop_arch_step": res.stop_arch_step,
                "epochs_run": run,
                "epochs_total": total,
                "epoch_ratio": total / run if run else float("nan"),
                "events": len(res.events),
                "genotype_equal": res.genotype == reference,
                "genotype": str(res.genotype),
                "diverged_check": None,
            }
        )
    columns = ["tau", "patience", "window", "stopped", "stop_check", "stop_epoch", "stop_arch_step", "epochs_run",
               "epochs_total", "epoch_ratio", "events", "genotype_equal", "genotype", "diverged_check"]
    grid = pd.DataFrame(rows, columns=columns)
    # Nullable integers: a replay that never stops has no stop check.
    ints = ["stop_check", "stop_epoch", "stop_arch_step", "epochs_run", "epochs_total", "events", "diverged_check"]
    return grid.astype({c: "Int64" for c in ints})


# -- plots (matplotlib Figures, no global pyplot state) ---------------------------


def plot_js_curves(js: pd.DataFrame, tau: float | None = None):
    """JS divergence between consecutive checks per edge, log scale, with ``tau``.

    Args:
        js: Output of :func:`js_curves`.
        tau: Threshold line to draw.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 5))
    ax = fig.subplots()
    for (a, key), part in js.groupby(["arch", "edge"], sort=False):
        positive = part[part["js"] > 0]
        label = key if js["arch"].nunique() == 1 else f"a{a} {key}"
        ax.plot(positive["arch_step"], positive["js"], lw=1, label=label)
    if tau is not None:
        ax.axhline(tau, color="k", ls="--", lw=1, label=f"tau = {tau:g}")
    if (js["js"] > 0).any():
        ax.set_yscale("log")
    ax.set_xlabel("architecture step")
    ax.set_ylabel("JS divergence (base 2) to the previous check")
    ax.legend(fontsize="x-small", ncol=2, loc="upper right")
    fig.tight_layout()
    return fig


def plot_op_timeline(timeline: pd.DataFrame, last_epoch: int):
    """Surviving operations per edge over the epochs (from :func:`op_timeline`).

    Each edge is a row; its bar is shaded by how many operations survive and
    labelled with the operations left at the end (grey: edge dropped).
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    keys = list(dict.fromkeys(zip(timeline["arch"], timeline["edge"])))
    n_ops = timeline.groupby(["arch", "edge"]).size().max()
    fig = Figure(figsize=(10, 0.4 * len(keys) + 1.5))
    ax = fig.subplots()
    cmap = colormaps["viridis"]
    end = last_epoch + 1
    for row, key in enumerate(keys):
        part = timeline[(timeline["arch"] == key[0]) & (timeline["edge"] == key[1])]
        cuts = sorted({float(x) for x in part["removed_epoch"].dropna()} | {0.0, float(end)})
        for start, stop in zip(cuts, cuts[1:]):
            alive = part[part["removed_epoch"].isna() | (part["removed_epoch"] >= stop)]
            color = "lightgrey" if alive.empty else cmap(len(alive) / n_ops)
            ax.broken_barh([(start, stop - start)], (row - 0.4, 0.8), color=color)
        left = part[part["removed_epoch"].isna()]["op"].tolist()
        ax.text(end, row, " " + (",".join(left) if left else "dropped"), va="center", fontsize="x-small")
    ax.set_yticks(range(len(keys)), [k if timeline["arch"].nunique() == 1 else f"a{a} {k}" for a, k in keys])
    ax.set_xlim(0, end * 1.35)
    ax.set_xlabel("epoch")
    ax.set_title("surviving operations per edge (darker: fewer)")
    fig.tight_layout()
    return fig


def plot_topk_membership(membership: pd.DataFrame, stay_k: int = DEFAULT_STAY_K):
    """Share of final operations in the current top-k, per epoch, for each k.

    A vertical line marks :func:`first_epoch_in_topk` for ``stay_k``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    cols = [c for c in membership.columns if c.startswith("top")]
    share = membership.groupby("epoch")[cols].mean()
    for c in cols:
        ax.plot(share.index, share[c], label=c.replace("top", "top-"))
    if f"top{stay_k}" in cols:
        first = first_epoch_in_topk(membership, stay_k)
        if first is not None:
            ax.axvline(first, color="k", ls="--", lw=1, label=f"all final ops stay in top-{stay_k} (epoch {first})")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("epoch")
    ax.set_ylabel("share of final operations")
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    return fig
