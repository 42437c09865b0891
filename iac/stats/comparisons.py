"""Comparisons of the reference method with every other method, patient by patient.

For every (dataset, backbone, metric, seed, frame) table the reference
method is compared with every other method, label by label
(:func:`compare_methods`):

* the two-sided Wilcoxon signed-rank test with, next to it, the
  Hodges–Lehmann estimate of the pseudo-median difference and its exact
  (Walsh-average) confidence interval, the quantity the test is about;
* where a margin is set, the equivalence test (TOST) and, as its own option
  with its own margin, the one-sided non-inferiority test (:mod:`iac.stats.tests`);
* Holm's step-down correction over all rows of the table (one Holm family),
  for the two-sided tests and, separately, for the non-inferiority tests;
* the matched-pairs rank-biserial correlation ``r = (R+ - R-) / (R+ + R-)``;
* the sample median paired difference with a seeded percentile bootstrap
  interval (descriptive; :mod:`iac.stats.effect`);
* false positives on empty reference structures: how often each method
  predicts a structure the reference does not have, with a sign test.

Pairing is strict: every method must cover the reference's (patient, frame)
cases and labels (:func:`iac.stats.inputs.check_pairing`), and a score may be
NaN (policy ``"nan"``: empty reference) only where the reference's is.

Sign convention: every difference is oriented so that it is positive when
the reference is better, ``d = reference - other`` for Dice and NSD and
``d = other - reference`` for HD95 (lower is better). ``hl``,
``median_diff``, their intervals and ``r`` are all on this oriented scale.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np
import pandas as pd

from iac.config import StatsConfig
from iac.stats.effect import (
    bootstrap_median_ci,
    hodges_lehmann,
    hodges_lehmann_ci,
    median_difference,
    oriented_differences,
    rank_biserial,
)
from iac.stats.inputs import POOLED, StatsError, check_pairing, check_per_case, pool_seeds, reduce_to_patients
from iac.stats.tests import equivalence_test, false_positive_test, holm, noninferiority_test, signed_rank_test

# Direction of each metric a per-case file holds.
HIGHER_IS_BETTER = {"dice": True, "hd95": False, "nsd": True}
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
    ni_margin: float | None = None,
) -> dict[str, Any]:
    """Paired statistics of two aligned per-patient score vectors (no Holm).

    Args:
        reference: the reference method's scores, one per patient.
        other: the other method's scores for the same patients, same order.
        higher_is_better: the metric's direction (orients the differences).
        config: test settings (zero method, exact limit, levels, bootstrap, alpha).
        margin: equivalence margin on the metric's scale; None = no TOST.
        ni_margin: non-inferiority margin on the metric's scale; None = no such test.

    Returns:
        ``n, n_zero, median_reference, median_method, hl, hl_ci_low, hl_ci_high,
        hl_ci_level, median_diff, ci_low, ci_high, ci_level, n_boot, r,
        statistic, p, wilcoxon_method``, the TOST columns ``margin,
        p_tost_lower, p_tost_upper, p_tost, tost_method, equivalent`` and the
        non-inferiority columns ``ni_margin, p_ni, ni_method``.
    """
    d = oriented_differences(reference, other, higher_is_better)
    test = signed_rank_test(d, config.zero_method, "two-sided", config.exact_max_n)
    hl_low, hl_high, hl_level = hodges_lehmann_ci(d, config.ci_level)
    low, high = bootstrap_median_ci(d, config.n_boot, config.ci_level, config.bootstrap_seed)
    row: dict[str, Any] = {
        "n": int(d.size),
        "n_zero": int(np.sum(d == 0)),
        "median_reference": float(np.median(reference)),
        "median_method": float(np.median(other)),
        "hl": hodges_lehmann(d),
        "hl_ci_low": hl_low,
        "hl_ci_high": hl_high,
        "hl_ci_level": hl_level,
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
    row.update(_tost_columns(d, margin, config))
    row.update(_ni_columns(d, ni_margin, config))
    return row


def _tost_columns(d: np.ndarray, margin: float | None, config: StatsConfig) -> dict[str, Any]:
    """The equivalence test's columns (NaN / NA where no margin is set)."""
    if margin is None:
        untested = math.nan
        return dict(
            margin=untested, p_tost_lower=untested, p_tost_upper=untested, p_tost=untested,
            tost_method="", equivalent=pd.NA,
        )
    eq = equivalence_test(d, margin, config.alpha, config.zero_method, config.exact_max_n)
    return dict(
        margin=float(margin), p_tost_lower=eq.p_lower, p_tost_upper=eq.p_upper, p_tost=eq.pvalue,
        tost_method=eq.method, equivalent=eq.equivalent,
    )


def _ni_columns(d: np.ndarray, ni_margin: float | None, config: StatsConfig) -> dict[str, Any]:
    """The non-inferiority test's columns (NaN where no margin is set; the verdict comes after Holm)."""
    if ni_margin is None:
        return dict(ni_margin=math.nan, p_ni=math.nan, ni_method="")
    ni = noninferiority_test(d, ni_margin, config.alpha, config.zero_method, config.exact_max_n)
    return dict(ni_margin=float(ni_margin), p_ni=ni.pvalue, ni_method=ni.method)


# --------------------------------------------------------------------------- tables


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
    """Align two methods' patient scores; drop the patients neither has a score for.

    Raises:
        StatsError: differing patient sets, or a patient scored by one method
            and not the other (NaN patterns that differ: under the ``"nan"``
            policy only the reference decides what is unscored).
    """
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
    differ = np.isnan(x) != np.isnan(y)
    if differ.any():
        unscored = {p: (reference if np.isnan(v) else method) for p, v, dif in zip(patients, x, differ) if dif}
        raise StatsError(
            f"{where} metric={metric}: {reference!r} and {method!r} leave different patients unscored "
            f"(NaN; patient -> the method without a score): {unscored}; dropping them would compare the "
            "methods on different patients (re-run evaluate: its 'nan' policy follows the reference alone)"
        )
    keep = ~np.isnan(x)  # policy "nan": an empty reference structure has no score
    return x[keep], y[keep], int((~keep).sum())


def _false_positives(ref: pd.DataFrame, other: pd.DataFrame, where: str) -> dict[str, Any]:
    """False positives on empty reference structures, patient by patient.

    Returns:
        ``n_ref_empty`` (patients with at least one case whose reference
        structure is empty), ``fp_rate_reference`` and ``fp_rate_method`` (mean
        over them of the share of those cases with a prediction) and ``p_fp``
        (:func:`iac.stats.tests.false_positive_test`); NaN without such patients.

    Raises:
        StatsError: the two methods disagree on which reference structures are empty.
    """
    a = ref.set_index("patient")
    b = other.set_index("patient").loc[a.index]
    if not np.array_equal(a["n_ref_empty"].to_numpy(), b["n_ref_empty"].to_numpy()):
        raise StatsError(f"{where}: the runs disagree on which reference structures are empty; not one reference")
    empty = a["n_ref_empty"].to_numpy() > 0
    if not empty.any():
        return {"n_ref_empty": 0, "fp_rate_reference": math.nan, "fp_rate_method": math.nan, "p_fp": math.nan}
    cases = a["n_ref_empty"].to_numpy()[empty]
    rate_a = a["n_false_positive"].to_numpy()[empty] / cases
    rate_b = b["n_false_positive"].to_numpy()[empty] / cases
    return {
        "n_ref_empty": int(empty.sum()),
        "fp_rate_reference": float(rate_a.mean()),
        "fp_rate_method": float(rate_b.mean()),
        "p_fp": false_positive_test(rate_a, rate_b),
    }


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
        ``lower``), ``seeds_reference, seeds_method, n_dropped``, the columns
        of :func:`compare_pair`, the false-positive columns (``n_ref_empty,
        fp_rate_reference, fp_rate_method, p_fp``), then ``zero_method,
        alternative, p_holm, reject_holm, holm_family_size, p_ni_holm,
        noninferior, alpha``. ``seed`` is ``"pooled"`` for the seed-mean
        analysis, else the seed; ``frame`` is ``""`` when frames were
        averaged (or there are none).

    Raises:
        StatsError: missing reference, (patient, frame) cases or labels that
            differ from the reference's, NaN patterns that differ, fewer than
            ``min_pairs`` pairs, mismatched fingerprints of the evaluated
            data, unstated or differing scoring settings.
    """
    metrics = tuple(config.metrics)
    df = check_per_case(per_case, metrics)
    methods = list(dict.fromkeys(df["method"]))
    if config.reference not in methods:
        raise StatsError(f"reference method {config.reference!r} is not among the evaluated methods {methods}")
    if len(methods) < 2:
        raise StatsError(f"only the reference {config.reference!r} was evaluated; nothing to compare")
    check_pairing(df, config.reference)

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
        false_positives = _false_positives(ref, other, where)
        for metric in metrics:
            x, y, dropped = _pair(ref, other, metric, where, config.reference, method)
            if x.size < config.min_pairs:
                raise StatsError(
                    f"{where} metric={metric}: {config.reference!r} vs {method!r} has {x.size} paired "
                    f"patients, fewer than min_pairs={config.min_pairs} (the exact two-sided Wilcoxon "
                    f"p cannot go below 2/2**{x.size})"
                )
            stats = compare_pair(x, y, HIGHER_IS_BETTER[metric], config, *config.margins(metric))
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
                    **false_positives,
                }
            )
    return rows


def _with_holm(out: pd.DataFrame, config: StatsConfig) -> pd.DataFrame:
    """Add the test settings and Holm's adjusted p-values per family (:data:`FAMILY`) to the rows.

    The two-sided tests and the non-inferiority tests (where a margin is set)
    are corrected as two separate families of each table; a method is
    ``noninferior`` when its Holm-adjusted one-sided p is below ``alpha``.
    """
    out["zero_method"] = config.zero_method
    out["alternative"] = "two-sided"
    out["p_holm"] = math.nan
    out["reject_holm"] = False
    out["holm_family_size"] = 0
    out["p_ni_holm"] = math.nan
    out["noninferior"] = pd.array([pd.NA] * len(out), dtype="boolean")  # NA where not tested
    for _, idx in out.groupby(list(FAMILY), sort=False).groups.items():
        reject, p_adj = holm(out.loc[idx, "p"].to_numpy(), config.alpha)
        out.loc[idx, "p_holm"] = p_adj
        out.loc[idx, "reject_holm"] = reject
        out.loc[idx, "holm_family_size"] = len(idx)
        tested = [i for i in idx if not math.isnan(out.at[i, "p_ni"])]
        if tested:
            ni_reject, ni_adj = holm(out.loc[tested, "p_ni"].to_numpy(), config.alpha)
            out.loc[tested, "p_ni_holm"] = ni_adj
            out.loc[tested, "noninferior"] = ni_reject
    out["alpha"] = config.alpha
    out["equivalent"] = out["equivalent"].astype("boolean")  # NA where no margin was set
    return out


def headline_metrics(results: pd.DataFrame, label: str = "mean_fg") -> dict[str, float]:
    """Numbers worth logging as metrics: the seed-pooled rows of one label.

    Keys are ``"<dataset>/<backbone>/<method>/<label>/<metric>/<stat>"`` for
    ``hl`` (with ``hl_ci_low``, ``hl_ci_high``), ``median_diff``, ``r``,
    ``p_holm`` and, where tested, ``equivalent`` and ``noninferior`` (1.0 or 0.0).
    """
    out: dict[str, float] = {}
    main = results[(results["seed"] == POOLED) & (results["label"] == label)]
    for row in main.itertuples(index=False):
        frame = f"{row.frame}/" if row.frame else ""
        prefix = f"{row.dataset or 'data'}/{row.backbone or 'net'}/{row.method}/{frame}{row.label}/{row.metric}"
        for stat in ("hl", "hl_ci_low", "hl_ci_high", "median_diff", "r", "p_holm"):
            out[f"{prefix}/{stat}"] = float(getattr(row, stat))
        for verdict in ("equivalent", "noninferior"):
            if not pd.isna(getattr(row, verdict)):
                out[f"{prefix}/{verdict}"] = float(bool(getattr(row, verdict)))
    return out
