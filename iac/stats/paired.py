"""Patient-level paired comparisons of evaluate runs.

The statistical unit is the patient. Per-case rows (``per_case.csv`` of
several evaluate runs, stacked with a ``method`` and a ``seed`` column) are
reduced to one score per patient, method, seed and label: ACDC's frames are
averaged per patient (``average_frames=True``) or analysed one frame at a
time, never counted as independent pairs. Several seeds of a method are
pooled by the seed-mean per patient, and each seed is also reported.

For every (dataset, backbone, metric, seed, frame) table the reference
method is compared with every other method, label by label:

* two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) with the
  configured ``zero_method`` (default ``"zsplit"``: a patient on which the
  two methods agree stays in the test) and ``method="exact"`` when there are
  at most ``exact_max_n`` pairs and neither zero nor tied differences, else
  ``method="asymptotic"`` (the normal approximation, no continuity
  correction); both choices are columns of the result;
* Holm's step-down correction over all rows of the table
  (``statsmodels.stats.multitest.multipletests(method="holm")``);
* the matched-pairs rank-biserial correlation ``r = (R+ - R-) / (R+ + R-)``;
* the median paired difference with a seeded percentile bootstrap interval;
* an equivalence test (TOST): two one-sided signed-rank tests, of
  ``d + margin > 0`` and of ``d - margin < 0``; the methods are called
  equivalent when both one-sided p-values are below ``alpha``.

Sign convention: every difference is oriented so that it is positive when
the reference is better, ``d = reference - other`` for Dice and
``d = other - reference`` for HD95 (lower is better). ``median_diff``, its
interval and ``r`` are all on this oriented scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon
from statsmodels.stats.multitest import multipletests

from iac.config import StatsConfig
from iac.eval.metrics import check_policy
from iac.stats.effect import (
    bootstrap_median_ci,
    check_zero_method,
    median_difference,
    oriented_differences,
    rank_biserial,
)

# Direction of each metric a per-case file holds.
HIGHER_IS_BETTER = {"dice": True, "hd95": False}
# Seed label of the analysis that pools every seed by the per-patient mean.
POOLED = "pooled"
# Columns that identify one comparison table (one Holm family).
FAMILY = ("dataset", "backbone", "metric", "seed", "frame")
# Columns a stacked per-case table needs beyond the per-case file's own.
RUN_COLUMNS = ("method", "empty_policy", "data_fingerprint")
# Columns filled with a default when a stacked table lacks them.
OPTIONAL_COLUMNS = {"dataset": "", "backbone": "", "seed": "0", "frame": ""}
# Holm's method, named explicitly: statsmodels' default is Holm-Sidak.
HOLM = "holm"


class StatsError(ValueError):
    """A comparison that cannot be made honestly (the message says why)."""


class SignedRankResult(NamedTuple):
    """A signed-rank test: scipy's statistic and p-value, and the method used."""

    statistic: float
    pvalue: float
    method: str


class EquivalenceResult(NamedTuple):
    """Two one-sided signed-rank tests against ``-margin`` and ``+margin``."""

    p_lower: float  # H0: median(d) <= -margin
    p_upper: float  # H0: median(d) >= +margin
    pvalue: float  # max of the two
    equivalent: bool
    method: str  # "exact", "asymptotic" or "exact/asymptotic" when they differ


@dataclass(frozen=True)
class EvaluatedRun:
    """One evaluate run's per-case table with what identifies it.

    ``method``, ``seed``, ``dataset`` and ``backbone`` default to the
    sidecar's values (``meta``) when not given.
    """

    per_case: pd.DataFrame
    meta: Mapping[str, Any]
    method: str | None = None
    seed: int | str | None = None
    dataset: str | None = None
    backbone: str | None = None
    run_id: str | None = None


# --------------------------------------------------------------------------- inputs


def stack_runs(runs: Sequence[EvaluatedRun]) -> pd.DataFrame:
    """Stack the per-case tables of several evaluate runs into one long table.

    Each row gains ``method``, ``seed``, ``dataset``, ``backbone``,
    ``empty_policy``, ``data_fingerprint`` and ``run_id`` from its run.

    Raises:
        StatsError: a run without a method or without a stated
            empty-structure policy.
    """
    if not runs:
        raise StatsError("no evaluate runs to compare")
    frames = []
    for i, run in enumerate(runs):
        name = run.run_id or f"run #{i}"
        method = run.method if run.method is not None else run.meta.get("method")
        if not method:
            raise StatsError(f"{name}: no method given and none in its per-case meta")
        policy = run.meta.get("empty_policy")
        if not policy:
            raise StatsError(
                f"{name} ({method}): its per-case scores state no empty-structure policy; "
                "re-run evaluate so that per_case.json records 'empty_policy'"
            )
        seed = run.seed if run.seed is not None else run.meta.get("seed")
        columns = {
            "method": str(method),
            "seed": _seed_text(seed),
            "dataset": str(run.dataset if run.dataset is not None else run.meta.get("dataset") or ""),
            "backbone": str(run.backbone if run.backbone is not None else run.meta.get("backbone") or ""),
            "empty_policy": str(policy),
            "data_fingerprint": str(run.meta.get("data_fingerprint") or ""),
            "run_id": run.run_id or "",
        }
        frames.append(run.per_case.assign(**columns))
    return pd.concat(frames, ignore_index=True)


def _seed_text(seed: Any) -> str:
    """Seeds as text keys; a missing seed is seed "0" (a single run)."""
    if seed is None or (isinstance(seed, float) and math.isnan(seed)) or seed == "":
        return OPTIONAL_COLUMNS["seed"]
    if isinstance(seed, float) and seed.is_integer():
        return str(int(seed))
    return str(seed)


def _prepare(per_case: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Check a stacked table's columns, policies and fingerprints."""
    needed = [c for c in ("patient", "label", *metrics, *RUN_COLUMNS) if c not in per_case.columns]
    if needed:
        hint = " (stack evaluate runs with iac.stats.stack_runs)" if set(needed) & set(RUN_COLUMNS) else ""
        raise StatsError(f"per-case table lacks columns {needed}{hint}")
    df = per_case.copy()
    for col, default in OPTIONAL_COLUMNS.items():
        if col not in df.columns:
            df[col] = default
    df["seed"] = df["seed"].map(_seed_text)
    for col in ("patient", "label", "method", "dataset", "backbone", "frame", "empty_policy", "data_fingerprint"):
        df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    for col in metrics:
        df[col] = pd.to_numeric(df[col], errors="raise").astype(float)

    no_policy = sorted(set(df.loc[df["empty_policy"] == "", "method"]))
    if no_policy:
        raise StatsError(
            f"per-case scores of {no_policy} state no empty-structure policy; refusing to compare "
            "scores whose empty structures may have been scored differently"
        )
    for policy in set(df["empty_policy"]):
        try:
            check_policy(policy)
        except ValueError as err:
            raise StatsError(str(err)) from err
    for (dataset, backbone), group in df.groupby(["dataset", "backbone"], sort=False):
        where = f"dataset={dataset!r} backbone={backbone!r}"
        policies = _by_run(group, "empty_policy")
        if len(set(policies.values())) > 1:
            raise StatsError(f"{where}: runs use different empty-structure policies: {policies}")
        prints = _by_run(group, "data_fingerprint")
        missing = sorted(k for k, v in prints.items() if not v)
        if missing:
            raise StatsError(
                f"{where}: runs {missing} state no data_fingerprint; cannot check they share a prepared dataset"
            )
        if len(set(prints.values())) > 1:
            raise StatsError(
                f"{where}: runs were evaluated on different prepared datasets (data_fingerprint mismatch): {prints}"
            )
    keys = ["dataset", "backbone", "method", "seed", "patient", "frame", "label"]
    dup = df.duplicated(keys, keep=False)
    if dup.any():
        first = df.loc[dup, keys].iloc[0].to_dict()
        raise StatsError(
            f"{int(dup.sum())} per-case rows repeat a (method, seed, patient, frame, label), e.g. {first}: "
            "two runs of the same method need different seeds"
        )
    return df


def _by_run(group: pd.DataFrame, column: str) -> dict[str, str]:
    """``{"method/seed": value}`` of one column that should be constant per run."""
    pairs = group.groupby(["method", "seed"], sort=False)[column].agg(lambda s: ",".join(sorted(set(s))))
    return {f"{m}/seed {s}": v for (m, s), v in pairs.items()}


# --------------------------------------------------------------------------- patient scores


def patient_scores(
    per_case: pd.DataFrame, metrics: Sequence[str] = ("dice", "hd95"), average_frames: bool = True
) -> pd.DataFrame:
    """One score per (dataset, backbone, method, seed, frame, patient, label).

    Args:
        per_case: stacked per-case rows (:func:`stack_runs`).
        metrics: score columns to keep.
        average_frames: True: the frames of a patient are averaged (NaN
            scores left out) and ``frame`` is ``""``; False: each frame stays
            a row of its own, to be analysed separately.

    Returns:
        Columns ``dataset, backbone, method, seed, frame, patient, label,
        n_frames`` and the metrics.
    """
    df = _prepare(per_case, metrics)
    return _patient_scores(df, metrics, average_frames)


def _patient_scores(df: pd.DataFrame, metrics: Sequence[str], average_frames: bool) -> pd.DataFrame:
    keys = ["dataset", "backbone", "method", "seed", "frame", "patient", "label"]
    if average_frames:
        df = df.assign(frame="")
    grouped = df.groupby(keys, sort=False)
    out = grouped[list(metrics)].mean()  # pandas' mean skips NaN
    out["n_frames"] = grouped.size()
    return out.reset_index()


def pool_seeds(scores: pd.DataFrame, metrics: Sequence[str] = ("dice", "hd95")) -> pd.DataFrame:
    """Seed-mean per patient: one row per (dataset, backbone, method, frame, patient, label).

    The result has ``seed = "pooled"`` and ``n_seeds``.

    Raises:
        StatsError: the seeds of one method cover different patients.
    """
    keys = ["dataset", "backbone", "method", "frame", "label"]
    for key, group in scores.groupby(keys, sort=False):
        sets = {s: frozenset(g["patient"]) for s, g in group.groupby("seed", sort=False)}
        if len(set(sets.values())) > 1:
            union = frozenset().union(*sets.values())
            gaps = {s: sorted(union - p) for s, p in sets.items() if union - p}
            raise StatsError(
                f"{dict(zip(keys, key))}: seeds of one method cover different patients; missing per seed: {gaps}"
            )
    grouped = scores.groupby([*keys, "patient"], sort=False)
    out = grouped[list(metrics)].mean()
    out["n_seeds"] = grouped["seed"].nunique()
    out = out.reset_index().assign(seed=POOLED)
    return out


# --------------------------------------------------------------------------- tests


def _scipy_method(d: np.ndarray, exact_max_n: int) -> str:
    """``"exact"`` for at most ``exact_max_n`` pairs without zero or tied |d|, else ``"asymptotic"``."""
    magnitudes = np.abs(d)
    if d.size <= exact_max_n and not np.any(magnitudes == 0) and np.unique(magnitudes).size == d.size:
        return "exact"
    return "asymptotic"


def signed_rank_test(
    d: np.ndarray,
    zero_method: str = "zsplit",
    alternative: str = "two-sided",
    exact_max_n: int = 50,
) -> SignedRankResult:
    """Wilcoxon signed-rank test of paired differences with a stated method.

    Calls ``scipy.stats.wilcoxon(d, zero_method=..., alternative=...,
    method=...)`` with ``method`` chosen by the rule of the module docstring.
    When every difference is zero there is no evidence of a difference and
    the p-value is 1 (scipy returns NaN for some zero methods).
    """
    check_zero_method(zero_method)
    d = np.asarray(d, dtype=float)
    if d.size == 0:
        raise StatsError("signed-rank test of no pairs")
    method = _scipy_method(d, exact_max_n)
    if not np.any(d != 0):
        return SignedRankResult(0.0, 1.0, method)
    res = wilcoxon(d, zero_method=zero_method, alternative=alternative, method=method)
    return SignedRankResult(float(res.statistic), float(res.pvalue), method)


def equivalence_test(
    d: np.ndarray,
    margin: float,
    alpha: float = 0.05,
    zero_method: str = "zsplit",
    exact_max_n: int = 50,
) -> EquivalenceResult:
    """TOST with signed-rank tests: is the median difference inside ``(-margin, margin)``?

    Lower test: ``d + margin`` with ``alternative="greater"``; upper test:
    ``d - margin`` with ``alternative="less"``. Equivalent when both
    one-sided p-values are below ``alpha``.
    """
    if not margin > 0:
        raise ValueError(f"equivalence margin must be > 0, got {margin}")
    d = np.asarray(d, dtype=float)
    lower = signed_rank_test(d + margin, zero_method, "greater", exact_max_n)
    upper = signed_rank_test(d - margin, zero_method, "less", exact_max_n)
    # An all-zero shifted vector cannot happen for margin > 0 unless d == -margin everywhere;
    # signed_rank_test then reports p = 1, which correctly refuses equivalence.
    p = max(lower.pvalue, upper.pvalue)
    method = lower.method if lower.method == upper.method else f"{lower.method}/{upper.method}"
    return EquivalenceResult(lower.pvalue, upper.pvalue, p, bool(lower.pvalue < alpha and upper.pvalue < alpha), method)


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Holm step-down adjusted p-values and rejections (statsmodels, ``method="holm"``)."""
    p = np.asarray(pvalues, dtype=float)
    if p.size == 0:
        return np.array([], dtype=bool), np.array([], dtype=float)
    reject, p_adj, _, _ = multipletests(p, alpha=alpha, method=HOLM)
    return reject, p_adj


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


def _check_config(config: StatsConfig) -> None:
    check_zero_method(config.zero_method)
    unknown = [m for m in config.metrics if m not in HIGHER_IS_BETTER]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; valid: {sorted(HIGHER_IS_BETTER)}")
    if not 0 < config.alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {config.alpha}")
    if config.min_pairs < 1:
        raise ValueError(f"min_pairs must be >= 1, got {config.min_pairs}")
    for name in ("margin", "hd95_margin"):
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0 (or None for hd95_margin), got {value}")


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
    _check_config(config)
    metrics = tuple(config.metrics)
    df = _prepare(per_case, metrics)
    methods = list(dict.fromkeys(df["method"]))
    if config.reference not in methods:
        raise StatsError(f"reference method {config.reference!r} is not among the evaluated methods {methods}")
    if len(methods) < 2:
        raise StatsError(f"only the reference {config.reference!r} was evaluated; nothing to compare")

    scores = _patient_scores(df, metrics, config.average_frames)
    rows: list[dict[str, Any]] = []
    for (dataset, backbone), table in scores.groupby(["dataset", "backbone"], sort=False):
        seed_lists = _seed_lists(table)
        if config.reference not in seed_lists:
            raise StatsError(
                f"dataset={dataset!r} backbone={backbone!r}: reference {config.reference!r} was not evaluated"
            )
        for seed, analysis in _analyses(table, metrics):
            for (frame, label), cell in analysis.groupby(["frame", "label"], sort=False):
                ref = cell[cell["method"] == config.reference]
                for method in seed_lists:
                    if method == config.reference:
                        continue
                    where = (
                        f"dataset={dataset!r} backbone={backbone!r} seed={seed!r} label={label!r}"
                        + (f" frame={frame!r}" if frame else "")
                    )
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
                                "dataset": dataset,
                                "backbone": backbone,
                                "metric": metric,
                                "seed": seed,
                                "frame": frame,
                                "label": label,
                                "reference": config.reference,
                                "method": method,
                                "better": "higher" if HIGHER_IS_BETTER[metric] else "lower",
                                "seeds_reference": seed_lists[config.reference],
                                "seeds_method": seed_lists[method],
                                "n_dropped": dropped,
                                **stats,
                            }
                        )
    out = pd.DataFrame(rows)
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
    metric_order = {m: i for i, m in enumerate(metrics)}
    out["_seed_key"] = out["seed"].map(_seed_order)
    out["_metric_key"] = out["metric"].map(metric_order)
    out = out.sort_values(["dataset", "backbone", "_metric_key", "_seed_key", "frame"], kind="stable")
    return out.drop(columns=["_seed_key", "_metric_key"]).reset_index(drop=True)


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
