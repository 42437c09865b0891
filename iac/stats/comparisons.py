"""Comparisons of the reference method with every other method, patient by patient.

For every (dataset, backbone, metric, seed, frame) table the reference
method is compared with every other method, label by label
(:func:`compare_methods`):

* the two-sided Wilcoxon signed-rank test and, where a margin is set, the
  equivalence test (:mod:`iac.stats.tests`);
* Holm's step-down correction over all rows of the table (one Holm family);
* the matched-pairs rank-biserial correlation ``r = (R+ - R-) / (R+ + R-)``;
* the median paired difference with a seeded percentile bootstrap interval
  (:mod:`iac.stats.effect`).

Sign convention: every difference is oriented so that it is positive when
the reference is better, ``d = reference - other`` for Dice and
``d = other - reference`` for HD95 (lower is better). ``median_diff``, its
interval and ``r`` are all on this oriented scale.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd

from iac.config import StatsConfig
from iac.stats.effect import (
    bootstrap_median_ci,
    median_difference,
    oriented_differences,
    rank_biserial,
)
from iac.stats.inputs import POOLED, StatsError, check_per_case, pool_seeds, reduce_to_patients
from iac.stats.tests import equivalence_test, holm, signed_rank_test

# Direction of each metric a per-case file holds.
HIGHER_IS_BETTER = {"dice": True, "hd95": False}
# Columns that identify one comparison table (one Holm family).
FAMILY = ("dataset", "backbone", "metric", "seed", "frame")


class _CellKey(NamedTuple):
    """Where one cell of comparisons sits: its dataset, backbone, seed analysis, frame and label."""

    dataset: str
    backbone: str
    seed: str
    frame: str
    label: str


def compare_pair(
    reference: np.ndarray,
    other: np.ndarray,
    higher_is_better: bool,
    config: StatsConfig = StatsConfig(),
    margin: float | None = None,
) -> dict[str, Any]:
    """Paired statistics of two aligned per-patient score vectors (no Holm).

    Args:
        reference: the reference method's scores, one per patient.
        other: the other method's scores for the same patients, same order.
        higher_is_better: the metric's direction (orients the differences).
        config: test settings (zero method, exact limit, bootstrap, alpha).
        margin: equivalence margin on the metric's scale; None = no TOST.

    Returns:
        ``n, n_zero, median_reference, median_method, median_diff, ci_low,
        ci_high, ci_level, n_boot, r, statistic, p, wilcoxon_method, margin, p_tost_lower,
        p_tost_upper, p_tost, tost_method, equivalent``.
    """
    d = oriented_differences(reference, other, higher_is_better)
    test = signed_rank_test(d, config.zero_method, "two-sided", config.exact_max_n)
    low, high = bootstrap_median_ci(d, config.n_boot, config.ci_level, config.bootstrap_seed)
    row: dict[str, Any] = {
        "n": int(d.size),
        "n_zero": int(np.sum(d == 0)),
        "median_reference": float(np.median(reference)),
        "median_method": float(np.median(other)),
        "median_diff": median_difference(d),
        "ci_low": low,
        "ci_high": high,
        "ci_level": float(config.ci_level),
        "n_boot": int(config.n_boot),
        "r": rank_biserial(d, config.zero_method),
        "statistic": test.statistic,
        "p": test.pvalue,
        "wilcoxon_method": test.method,
    }
    if margin is None:
        untested = math.nan
        row.update(
            margin=untested, p_tost_lower=untested, p_tost_upper=untested, p_tost=untested,
            tost_method="", equivalent=pd.NA,
        )
    else:
        eq = equivalence_test(d, margin, config.alpha, config.zero_method, config.exact_max_n)
        row.update(
            margin=float(margin),
            p_tost_lower=eq.p_lower,
            p_tost_upper=eq.p_upper,
            p_tost=eq.pvalue,
            tost_method=eq.method,
            equivalent=eq.equivalent,
        )
    return row


# --------------------------------------------------------------------------- tables


def _margin(metric: str, config: StatsConfig) -> float | None:
    return config.margin if metric == "dice" else config.hd95_margin


def _analyses(scores: pd.DataFrame, metrics: Sequence[str]) -> list[tuple[str, pd.DataFrame]]:
    """The seed analyses: ``[("pooled", ...)]`` plus one per seed when any method has several."""
    pooled = pool_seeds(scores, metrics)
    seeds = sorted(set(scores["seed"]), key=_seed_order)
    out = [(POOLED, pooled)]
    if len(seeds) > 1:
        for seed in seeds:
            parts = []
            for _, group in scores.groupby("method", sort=False):
                own = group[group["seed"] == seed]
                if own.empty:  # a method run with other seeds only: its seed-mean stands in
                    own = pooled[pooled["method"] == group["method"].iloc[0]]
                parts.append(own.assign(seed=seed))
            out.append((seed, pd.concat(parts, ignore_index=True)))
    return out


def _seed_order(seed: str) -> tuple[int, int, str]:
    """Sort key: the pooled analysis first, then numeric seeds by value, then other names."""
    if seed == POOLED:
        return (0, 0, "")
    return (1, int(seed), "") if seed.lstrip("-").isdigit() else (2, 0, seed)


def _seed_lists(scores: pd.DataFrame) -> dict[str, str]:
    """``{method: "0,1,2"}``: the seeds each method was run with."""
    return {m: ",".join(sorted(set(g["seed"]), key=_seed_order)) for m, g in scores.groupby("method", sort=False)}


def _pair(
    ref: pd.DataFrame, other: pd.DataFrame, metric: str, where: str, reference: str, method: str
) -> tuple[np.ndarray, np.ndarray, int]:
    """Align two methods' patient scores; refuse differing patient sets."""
    a = ref.set_index("patient")[metric]
    b = other.set_index("patient")[metric]
    only_ref, only_other = sorted(set(a.index) - set(b.index)), sorted(set(b.index) - set(a.index))
    if only_ref or only_other:
        raise StatsError(
            f"{where}: patient sets differ between {reference!r} and {method!r}: "
            f"missing from {method!r}: {only_ref}; missing from {reference!r}: {only_other}"
        )
    patients = sorted(a.index)
    x, y = a.loc[patients].to_numpy(float), b.loc[patients].to_numpy(float)
    keep = ~(np.isnan(x) | np.isnan(y))  # policy "nan": a structure empty in both has no score
    return x[keep], y[keep], int((~keep).sum())


def compare_methods(per_case: pd.DataFrame, config: StatsConfig = StatsConfig()) -> pd.DataFrame:
    """Compare the reference method with every other method, patient by patient.

    Args:
        per_case: stacked per-case rows of evaluate runs (:func:`stack_runs`):
            ``patient, frame, label``, the metrics, ``method``, ``seed``,
            ``dataset``, ``backbone``, ``empty_policy``, ``data_fingerprint``.
        config: reference method, levels, margins, bootstrap and test choices.

    Returns:
        One row per (dataset, backbone, metric, seed, frame, label, method):
        the family keys, ``label, reference, method, better`` (``higher`` or
        ``lower``), ``seeds_reference, seeds_method, n_dropped`` and the
        columns of :func:`compare_pair`, then ``zero_method, alternative,
        p_holm, reject_holm, holm_family_size, alpha``. ``seed`` is
        ``"pooled"`` for the seed-mean analysis, else the seed; ``frame`` is
        ``""`` when frames were averaged (or there are none).

    Raises:
        StatsError: missing reference, differing patient sets, fewer than
            ``min_pairs`` pairs, mismatched data fingerprints, unstated or
            differing empty-structure policies.
    """
    metrics = tuple(config.metrics)
    df = check_per_case(per_case, metrics)
    methods = list(dict.fromkeys(df["method"]))
    if config.reference not in methods:
        raise StatsError(f"reference method {config.reference!r} is not among the evaluated methods {methods}")
    if len(methods) < 2:
        raise StatsError(f"only the reference {config.reference!r} was evaluated; nothing to compare")

    scores = reduce_to_patients(df, metrics, config.average_frames)
    rows: list[dict[str, Any]] = []
    for (dataset, backbone), table in scores.groupby(["dataset", "backbone"], sort=False):
        rows.extend(_compare_table(table, dataset, backbone, metrics, config))
    out = _with_holm(pd.DataFrame(rows), config)
    metric_order = {m: i for i, m in enumerate(metrics)}
    out["_seed_key"] = out["seed"].map(_seed_order)
    out["_metric_key"] = out["metric"].map(metric_order)
    out = out.sort_values(["dataset", "backbone", "_metric_key", "_seed_key", "frame"], kind="stable")
    return out.drop(columns=["_seed_key", "_metric_key"]).reset_index(drop=True)


def _compare_table(
    table: pd.DataFrame, dataset: str, backbone: str, metrics: Sequence[str], config: StatsConfig
) -> list[dict[str, Any]]:
    """The rows of one (dataset, backbone): every seed analysis, frame and label.

    Raises:
        StatsError: the reference was not evaluated on this dataset and backbone,
            or a comparison has differing patient sets or too few pairs.
    """
    seed_lists = _seed_lists(table)
    if config.reference not in seed_lists:
        raise StatsError(
            f"dataset={dataset!r} backbone={backbone!r}: reference {config.reference!r} was not evaluated"
        )
    rows: list[dict[str, Any]] = []
    for seed, analysis in _analyses(table, metrics):
        for (frame, label), cell in analysis.groupby(["frame", "label"], sort=False):
            key = _CellKey(dataset, backbone, seed, frame, label)
            rows.extend(_compare_cell(cell, key, seed_lists, metrics, config))
    return rows


def _compare_cell(
    cell: pd.DataFrame,
    key: _CellKey,
    seed_lists: dict[str, str],
    metrics: Sequence[str],
    config: StatsConfig,
) -> list[dict[str, Any]]:
    """The rows of one (seed analysis, frame, label): the reference against every other method, metric by metric.

    Args:
        cell: patient scores of every method in this analysis, frame and label.
        key: where the cell sits.
        seed_lists: ``{method: "0,1,2"}`` of the (dataset, backbone); gives the method order.
        metrics: the metrics to compare.
        config: reference method, levels, margins, bootstrap and test choices.

    Raises:
        StatsError: differing patient sets, or fewer than ``min_pairs`` pairs.
    """
    where = f"dataset={key.dataset!r} backbone={key.backbone!r} seed={key.seed!r} label={key.label!r}" + (
        f" frame={key.frame!r}" if key.frame else ""
    )
    ref = cell[cell["method"] == config.reference]
    rows: list[dict[str, Any]] = []
    for method in seed_lists:
        if method == config.reference:
            continue
        other = cell[cell["method"] == method]
        for metric in metrics:
            x, y, dropped = _pair(ref, other, metric, where, config.reference, method)
            if x.size < config.min_pairs:
                raise StatsError(
                    f"{where} metric={metric}: {config.reference!r} vs {method!r} has {x.size} paired "
                    f"patients, fewer than min_pairs={config.min_pairs} (the exact two-sided Wilcoxon "
                    f"p cannot go below 2/2**{x.size})"
                )
            stats = compare_pair(x, y, HIGHER_IS_BETTER[metric], config, _margin(metric, config))
            rows.append(
                {
                    "dataset": key.dataset,
                    "backbone": key.backbone,
                    "metric": metric,
                    "seed": key.seed,
                    "frame": key.frame,
                    "label": key.label,
                    "reference": config.reference,
                    "method": method,
                    "better": "higher" if HIGHER_IS_BETTER[metric] else "lower",
                    "seeds_reference": seed_lists[config.reference],
                    "seeds_method": seed_lists[method],
                    "n_dropped": dropped,
                    **stats,
                }
            )
    return rows


def _with_holm(out: pd.DataFrame, config: StatsConfig) -> pd.DataFrame:
    """Add the test settings and Holm's adjusted p-values per family (:data:`FAMILY`) to the rows."""
    out["zero_method"] = config.zero_method
    out["alternative"] = "two-sided"
    out["p_holm"] = math.nan
    out["reject_holm"] = False
    out["holm_family_size"] = 0
    for _, idx in out.groupby(list(FAMILY), sort=False).groups.items():
        reject, p_adj = holm(out.loc[idx, "p"].to_numpy(), config.alpha)
        out.loc[idx, "p_holm"] = p_adj
        out.loc[idx, "reject_holm"] = reject
        out.loc[idx, "holm_family_size"] = len(idx)
    out["alpha"] = config.alpha
    out["equivalent"] = out["equivalent"].astype("boolean")  # NA where no margin was set
    return out


def headline_metrics(results: pd.DataFrame, label: str = "mean_fg") -> dict[str, float]:
    """Numbers worth logging as metrics: the seed-pooled rows of one label.

    Keys are ``"<dataset>/<backbone>/<method>/<label>/<metric>/<stat>"`` for
    ``median_diff``, ``r``, ``p_holm`` and (where tested) ``equivalent``
    (1.0 or 0.0).
    """
    out: dict[str, float] = {}
    main = results[(results["seed"] == POOLED) & (results["label"] == label)]
    for row in main.itertuples(index=False):
        frame = f"{row.frame}/" if row.frame else ""
        prefix = f"{row.dataset or 'data'}/{row.backbone or 'net'}/{row.method}/{frame}{row.label}/{row.metric}"
        out[f"{prefix}/median_diff"] = float(row.median_diff)
        out[f"{prefix}/r"] = float(row.r)
        out[f"{prefix}/p_holm"] = float(row.p_holm)
        if not pd.isna(row.equivalent):
            out[f"{prefix}/equivalent"] = float(bool(row.equivalent))
    return out
