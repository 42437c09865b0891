"""Figures of a search trajectory (the kind the paper analyses).

- ``op_weights``: softmax(alpha) of every operation over the epochs, one panel
  per edge (architecture 0), pruned operations ending where they were removed;
- ``edge_weights``: softmax(beta) of each edge within its node;
- ``js_curves``: each edge's JS divergence at every check, with ``tau``;
- ``surviving_ops``: timeline of the operations alive per edge;
- ``epoch_time``: wall time per epoch and the cumulative search time.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _grid(n: int, width: float = 3.2, height: float = 2.4):
    import matplotlib.pyplot as plt

    cols = min(4, max(1, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, sharex=True)
    return fig, axes.ravel()


def op_weights_figure(trajectory: dict[str, Any], arch: int = 0):
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
    handles = [__import__("matplotlib.lines", fromlist=["Line2D"]).Line2D([], [], color=colors[o], label=o) for o in ops_all]
    fig.legend(handles=handles, loc="lower center", ncol=min(8, len(ops_all)), fontsize=7, frameon=False)
    fig.suptitle("operation weights softmax(alpha) per edge", fontsize=10)
    fig.supxlabel("epoch", fontsize=8)
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    return fig


def edge_weights_figure(trajectory: dict[str, Any], arch: int = 0):
    """softmax(beta) of each edge within its destination node over epochs."""
    import matplotlib.pyplot as plt

    epochs = trajectory["epochs"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
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


def js_figure(trajectory: dict[str, Any], tau: float | None):
    """JS divergence of every edge at each check (log scale), with ``tau``."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
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


def surviving_ops_figure(trajectory: dict[str, Any], arch: int = 0):
    """Timeline: number of operations alive on each edge over epochs."""
    import matplotlib.pyplot as plt

    epochs = trajectory["epochs"]
    edges = [e["edge"] for e in epochs[0]["archs"][arch]["edges"]] if epochs else []
    n_ops = len(trajectory["space"]["ops"])
    mat = np.zeros((len(edges), len(epochs)))
    for j, rec in enumerate(epochs):
        for i, e in enumerate(rec["archs"][arch]["edges"]):
            mat[i, j] = len(e["ops"]) if e["alive"] else 0
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(edges) + 1.5))
    im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=0, vmax=n_ops, interpolation="nearest",
                   extent=(0.5, len(epochs) + 0.5, len(edges) - 0.5, -0.5))
    ax.set_yticks(range(len(edges)), edges, fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_title("operations alive per edge (0 = edge dropped)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def epoch_time_figure(trajectory: dict[str, Any]):
    """Wall time per epoch and cumulative search time."""
    import matplotlib.pyplot as plt

    epochs = trajectory["epochs"]
    xs = [e["epoch"] + 1 for e in epochs]
    fig, ax = plt.subplots(figsize=(6, 3.2))
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


def search_figures(trajectory: dict[str, Any], tau: float | None = None) -> dict[str, Any]:
    """All figures of one search, by artifact name."""
    if not trajectory.get("epochs"):
        return {}
    figs = {
        "op_weights": op_weights_figure(trajectory),
        "edge_weights": edge_weights_figure(trajectory),
        "surviving_ops": surviving_ops_figure(trajectory),
        "epoch_time": epoch_time_figure(trajectory),
    }
    if any(c.get("status") for c in trajectory.get("checks", [])):
        figs["js_curves"] = js_figure(trajectory, tau)
    return figs
