"""Figures of a search trajectory (matplotlib, no pyplot: no global state, no display).

Figures are built on :class:`matplotlib.figure.Figure` directly, which draws
with the Agg renderer when saved, so they work on headless hosts and can be
handed to ``Tracker.log_figure``. Each figure plots one named quantity.

Logged by every search (:func:`search_figures`, from the trajectory):

- ``op_weights``: softmax(alpha) of every operation over the epochs, one panel
  per edge (architecture 0), pruned operations ending where they were removed;
- ``edge_weights``: softmax(beta) of each edge within its node;
- ``stability_js``: the divergence the live stability test compared with
  ``tau`` at every check (smoothed, ``window`` checks back), per tested edge
  and node (IAC-LTH only: a full search records no test);
- ``surviving_ops``: operations alive per edge at the end of each epoch;
- ``epoch_time``: wall time per epoch and the cumulative search time.

Written by ``iac analyze`` (from the tables of :mod:`iac.nas.analysis`):

- ``consecutive_js``: raw JS divergence of each edge's softmax(alpha) from the
  previous check (:func:`iac.nas.analysis.consecutive_js`);
- ``op_timeline``: when each operation left the supernet, from pruning events
  (recorded or replayed, :func:`iac.nas.analysis.op_timeline`);
- ``topk_membership``: share of final operations in the current top-k.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from iac.nas.analysis import DEFAULT_STAY_K, first_epoch_in_topk

__all__ = [
    "op_weights_figure",
    "edge_weights_figure",
    "stability_js_figure",
    "surviving_ops_figure",
    "epoch_time_figure",
    "search_figures",
    "consecutive_js_figure",
    "op_timeline_figure",
    "topk_membership_figure",
]

# Panels per row of the per-edge grid.
GRID_COLUMNS = 4


def _grid(n: int, width: float = 3.2, height: float = 2.4) -> tuple[Figure, np.ndarray]:
    """A figure with ``n`` panels (at least one) on rows of up to ``GRID_COLUMNS``; axes flattened."""
    cols = min(GRID_COLUMNS, max(1, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows))
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    return fig, axes.ravel()


# -- logged by the searches (from the trajectory) ---------------------------------


def op_weights_figure(trajectory: Mapping[str, Any], arch: int = 0) -> Figure:
    """softmax(alpha) per operation over epochs, one panel per edge."""
    epochs = trajectory["epochs"]
    ops_all = list(trajectory["space"]["ops"])
    edges = [e["edge"] for e in epochs[0]["archs"][arch]["edges"]] if epochs else []
    fig, axes = _grid(len(edges))
    colors = {op: f"C{i}" for i, op in enumerate(ops_all)}
    for ax, key in zip(axes, edges):
        series: dict[str, list[tuple[int, float]]] = {}
        for rec in epochs:
            e = next(x for x in rec["archs"][arch]["edges"] if x["edge"] == key)
            if not e["alive"]:
                continue
            for op, p in zip(e["ops"], e["alpha"]):
                series.setdefault(op, []).append((rec["epoch"] + 1, p))
        for op in ops_all:
            if op in series:
                xs, ys = zip(*series[op])
                ax.plot(xs, ys, color=colors[op], lw=1.2, label=op)
        ax.set_title(f"edge {key}", fontsize=9)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
    for ax in axes[len(edges) :]:
        ax.axis("off")
    handles = [Line2D([], [], color=colors[o], label=o) for o in ops_all]
    fig.legend(handles=handles, loc="lower center", ncol=min(8, len(ops_all)), fontsize=7, frameon=False)
    fig.suptitle("operation weights softmax(alpha) per edge", fontsize=10)
    fig.supxlabel("epoch", fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    return fig


def edge_weights_figure(trajectory: Mapping[str, Any], arch: int = 0) -> Figure:
    """softmax(beta) of each edge within its destination node over epochs."""
    epochs = trajectory["epochs"]
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    if epochs:
        for key in [e["edge"] for e in epochs[0]["archs"][arch]["edges"]]:
            pts = [
                (rec["epoch"] + 1, e["beta"])
                for rec in epochs
                for e in rec["archs"][arch]["edges"]
                if e["edge"] == key and e["alive"]
            ]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, lw=1.1, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("softmax(beta)")
    ax.set_title("edge weights within each node", fontsize=10)
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    return fig


def stability_js_figure(trajectory: Mapping[str, Any], tau: float | None) -> Figure:
    """The stability test's JS divergence at each check (log scale), with ``tau``.

    One curve per tested key of the checks' ``status``: ``a{arch}/{i}->{j}``
    (an edge's softmax(alpha)) and ``a{arch}/n{j}`` (a node's softmax(beta)).
    The divergence is the one the live test compared with ``tau``: of the
    (EMA-smoothed) distribution from the one ``window`` checks earlier.
    Checks before the first comparison (``js`` is ``None``) and zeros (not on
    a log scale) are left out.
    """
    fig = Figure(figsize=(6.5, 3.4))
    ax = fig.subplots()
    series: dict[str, list[tuple[int, float]]] = {}
    for c in trajectory.get("checks", []):
        status = c.get("status") or {}
        for key, st in status.items():
            js = st.get("js") if isinstance(st, dict) else None
            if js is not None and js > 0:
                series.setdefault(key, []).append((c["arch_step"], js))
    for key, pts in sorted(series.items()):
        xs, ys = zip(*pts)
        ax.plot(xs, ys, lw=1, label=key)
    if tau:
        ax.axhline(tau, color="k", ls="--", lw=1, label=f"tau = {tau:g}")
    if series:
        ax.set_yscale("log")
    ax.set_xlabel("architecture step")
    ax.set_ylabel("JS divergence (base 2)")
    ax.set_title("stability of the operation weights per edge", fontsize=10)
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    return fig


def surviving_ops_figure(trajectory: Mapping[str, Any], arch: int = 0) -> Figure:
    """Heat map: number of operations alive on each edge at the end of each epoch (0: dropped).

    Read from the epoch records; :func:`op_timeline_figure` shows the same
    from pruning events (which ``iac analyze`` may replay).
    """
    epochs = trajectory["epochs"]
    edges = [e["edge"] for e in epochs[0]["archs"][arch]["edges"]] if epochs else []
    n_ops = len(trajectory["space"]["ops"])
    mat = np.zeros((len(edges), len(epochs)))  # (edge, epoch)
    for j, rec in enumerate(epochs):
        for i, e in enumerate(rec["archs"][arch]["edges"]):
            mat[i, j] = len(e["ops"]) if e["alive"] else 0
    fig = Figure(figsize=(7, 0.3 * len(edges) + 1.5))
    ax = fig.subplots()
    im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=0, vmax=n_ops, interpolation="nearest",
                   extent=(0.5, len(epochs) + 0.5, len(edges) - 0.5, -0.5))
    ax.set_yticks(range(len(edges)), edges, fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_title("operations alive per edge (0 = edge dropped)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def epoch_time_figure(trajectory: Mapping[str, Any]) -> Figure:
    """Wall time per epoch and cumulative search time (grey lines: epochs with pruning)."""
    epochs = trajectory["epochs"]
    xs = [e["epoch"] + 1 for e in epochs]
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    ax.plot(xs, [e["epoch_seconds"] for e in epochs], marker=".", lw=1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("seconds per epoch")
    ax2 = ax.twinx()
    ax2.plot(xs, [e.get("cum_seconds", np.nan) for e in epochs], color="C1", lw=1)
    ax2.set_ylabel("cumulative seconds", color="C1")
    for ev_epoch in sorted({ev["epoch"] for ev in trajectory.get("events", [])}):
        ax.axvline(ev_epoch + 1, color="grey", lw=0.5, alpha=0.5)
    ax.set_title("search time (grey: epochs with pruning)", fontsize=10)
    fig.tight_layout()
    return fig


def search_figures(trajectory: dict[str, Any], tau: float | None = None) -> dict[str, Figure]:
    """All figures of one search, by artifact name (logged as ``plots/<name>.png``).

    Args:
        trajectory: The search's trajectory (:mod:`iac.nas.trajectory`).
        tau: The stability threshold to draw (IAC-LTH), or ``None``.

    Returns:
        ``op_weights``, ``edge_weights``, ``surviving_ops``, ``epoch_time``
        and, when the checks carry the stability test's status (IAC-LTH),
        ``stability_js``; nothing before the first epoch.
    """
    if not trajectory.get("epochs"):
        return {}
    figs = {
        "op_weights": op_weights_figure(trajectory),
        "edge_weights": edge_weights_figure(trajectory),
        "surviving_ops": surviving_ops_figure(trajectory),
        "epoch_time": epoch_time_figure(trajectory),
    }
    if any(c.get("status") for c in trajectory.get("checks", [])):
        figs["stability_js"] = stability_js_figure(trajectory, tau)
    return figs


# -- written by `iac analyze` (from the analysis tables) ----------------------------


def consecutive_js_figure(js: pd.DataFrame, tau: float | None = None) -> Figure:
    """JS divergence between consecutive checks per edge, log scale, with ``tau``.

    Args:
        js: Output of :func:`iac.nas.analysis.consecutive_js`.
        tau: Threshold line to draw.
    """
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


def op_timeline_figure(timeline: pd.DataFrame, last_epoch: int) -> Figure:
    """Surviving operations per edge over the epochs (from :func:`iac.nas.analysis.op_timeline`).

    Each edge is a row; its bar is shaded by how many operations survive and
    labelled with the operations left at the end (grey: edge dropped).
    """
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


def topk_membership_figure(membership: pd.DataFrame, stay_k: int = DEFAULT_STAY_K) -> Figure:
    """Share of final operations in the current top-k, per epoch, for each k.

    A vertical line marks :func:`iac.nas.analysis.first_epoch_in_topk` for
    ``stay_k``.

    Args:
        membership: Output of :func:`iac.nas.analysis.topk_membership`.
        stay_k: The top-k of the vertical line.
    """
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
