"""Figures of the ``stats`` step (matplotlib, no pyplot: no global state, no display).

Figures are built on :class:`matplotlib.figure.Figure` directly, which draws
with the Agg renderer when saved, so they work on headless hosts and can be
handed to ``Tracker.log_figure``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

# Figure geometry (inches) and look.
WIDTH_PER_METHOD = 1.1
MIN_WIDTH = 4.0
HEIGHT = 4.0
POINT_ALPHA = 0.6
POINT_SIZE = 12
JITTER = 0.08  # horizontal spread of the per-patient points (x units: one method = 1)
PLOT_KINDS = ("box", "violin")
METRIC_AXIS = {"dice": "Dice per patient", "hd95": "HD95 per patient (mm)", "nsd": "NSD per patient"}


def patient_score_figure(
    scores: pd.DataFrame,
    metric: str = "dice",
    label: str = "mean_fg",
    kind: str = "box",
    methods: Sequence[str] | None = None,
    seed: int = 0,
) -> Figure:
    """Box or violin plot of per-patient scores, one box per method, points on top.

    Args:
        scores: per-patient scores with ``method``, ``patient``, ``label``
            and the metric (:func:`iac.stats.inputs.patient_scores`, pooled
            with :func:`iac.stats.inputs.pool_seeds` when there are seeds);
            one panel per (dataset, backbone) when those columns are present.
        metric: the column to plot.
        label: which structure (``mean_fg`` by default).
        kind: ``"box"`` or ``"violin"``.
        methods: order of the methods; default: as they appear.
        seed: seed of the point jitter.

    Raises:
        ValueError: unknown kind, missing metric column, no rows for ``label``.
    """
    if kind not in PLOT_KINDS:
        raise ValueError(f"unknown plot kind {kind!r}; valid: {', '.join(PLOT_KINDS)}")
    if metric not in scores.columns:
        raise ValueError(f"scores have no column {metric!r}; columns are {list(scores.columns)}")
    data = scores[scores["label"] == label]
    if data.empty:
        raise ValueError(f"no scores for label {label!r}; labels are {sorted(set(scores['label']))}")
    order = list(methods) if methods is not None else list(dict.fromkeys(data["method"]))
    panel_keys = [c for c in ("dataset", "backbone") if c in data.columns]
    panels = list(data.groupby(panel_keys, sort=False)) if panel_keys else [((), data)]
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(max(MIN_WIDTH, WIDTH_PER_METHOD * len(order)) * len(panels), HEIGHT), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, panel) in zip(axes, panels):
        values = [panel.loc[panel["method"] == m, metric].dropna().to_numpy(float) for m in order]
        present = [i for i, v in enumerate(values) if v.size]
        positions = np.arange(1, len(order) + 1)
        if kind == "box":
            ax.boxplot([values[i] for i in present], positions=positions[present], widths=0.6, showfliers=False)
        else:
            ax.violinplot([values[i] for i in present], positions=positions[present], showmedians=True)
        for i in present:
            x = positions[i] + rng.uniform(-JITTER, JITTER, size=values[i].size)
            ax.scatter(x, values[i], s=POINT_SIZE, alpha=POINT_ALPHA, color="tab:blue", linewidths=0)
        ax.set_xticks(positions, order, rotation=30, ha="right")
        ax.set_ylabel(METRIC_AXIS.get(metric, metric))
        name = " / ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)) if k)
        ax.set_title(f"{name}: {label}" if name else label)
        ax.grid(axis="y", alpha=0.3)
    return fig


def search_time_figure(times: Mapping[str, float | Sequence[float]], baseline: str | None = None) -> Figure:
    """Bar chart of search wall-clock time per method (mean over seeds, seeds as points).

    Args:
        times: ``{method: seconds}`` or ``{method: [seconds per seed]}``,
            e.g. ``{"iac-full": [...], "iac-lth": [...]}``.
        baseline: a key of ``times``; when given, each other bar is annotated
            with its speed-up ``mean(baseline) / mean(method)``.

    Raises:
        ValueError: empty input, a method with no or non-positive times, an
            unknown baseline.
    """
    if not times:
        raise ValueError("no search times to plot")
    series = {m: np.atleast_1d(np.asarray(v, dtype=float)) for m, v in times.items()}
    bad = [m for m, v in series.items() if v.size == 0 or not np.all(np.isfinite(v)) or np.any(v <= 0)]
    if bad:
        raise ValueError(f"search times of {bad} must be positive finite seconds")
    if baseline is not None and baseline not in series:
        raise ValueError(f"baseline {baseline!r} is not among {list(series)}")
    names = list(series)
    means = np.array([series[m].mean() for m in names])
    fig = Figure(figsize=(max(MIN_WIDTH, WIDTH_PER_METHOD * len(names)), HEIGHT), layout="constrained")
    ax = fig.subplots()
    pos = np.arange(len(names))
    ax.bar(pos, means, color="tab:gray", alpha=0.7)
    for i, m in enumerate(names):
        if series[m].size > 1:
            ax.scatter(np.full(series[m].size, pos[i]), series[m], color="black", s=POINT_SIZE, zorder=3)
        note = f"{means[i]:.0f} s"
        if baseline is not None and m != baseline:
            note += f"\n{means[names.index(baseline)] / means[i]:.1f}x faster"
        ax.annotate(note, (pos[i], means[i]), ha="center", va="bottom", fontsize="small")
    ax.set_xticks(pos, names)
    ax.set_ylabel("search wall-clock time (s)")
    n_seeds = max(v.size for v in series.values())
    ax.set_title("search time" + (f" (mean of up to {n_seeds} seeds)" if n_seeds > 1 else ""))
    ax.grid(axis="y", alpha=0.3)
    return fig
