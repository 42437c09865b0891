"""The inputs of the paired statistics: evaluate runs stacked, checked, reduced to patients.

The statistical unit is the patient. Per-case rows (``per_case.csv`` of
several evaluate runs, stacked with a ``method`` and a ``seed`` column) are
reduced to one score per patient, method, seed and label: ACDC's frames are
averaged per patient (``average_frames=True``) or analysed one frame at a
time, never counted as independent pairs. Several seeds of a method are
pooled by the seed-mean per patient, and each seed is also reported.

Runs are compared only when they state the same empty-structure policy and
were evaluated on the same prepared dataset (``data_fingerprint``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd

from iac.eval.metrics import check_policy

# Seed label of the analysis that pools every seed by the per-patient mean.
POOLED = "pooled"
# Columns a stacked per-case table needs beyond the per-case file's own.
RUN_COLUMNS = ("method", "empty_policy", "data_fingerprint")
# Columns filled with a default when a stacked table lacks them.
OPTIONAL_COLUMNS = {"dataset": "", "backbone": "", "seed": "0", "frame": ""}


class StatsError(ValueError):
    """A comparison that cannot be made honestly (the message says why)."""


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


# --------------------------------------------------------------------------- stacking and checks


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


def check_per_case(per_case: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Check a stacked table's columns, policies and fingerprints; a normalised copy.

    Missing optional columns get their defaults, seeds and keys become text and
    metrics floats.

    Raises:
        StatsError: missing columns, unstated or differing empty-structure
            policies, missing or differing data fingerprints, repeated rows.
    """
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
    _check_runs_comparable(df)
    keys = ["dataset", "backbone", "method", "seed", "patient", "frame", "label"]
    dup = df.duplicated(keys, keep=False)
    if dup.any():
        first = df.loc[dup, keys].iloc[0].to_dict()
        raise StatsError(
            f"{int(dup.sum())} per-case rows repeat a (method, seed, patient, frame, label), e.g. {first}: "
            "two runs of the same method need different seeds"
        )
    return df


def _check_runs_comparable(df: pd.DataFrame) -> None:
    """Refuse runs whose scores cannot be compared.

    They cannot when an empty-structure policy is unstated or unknown, or when,
    within one (dataset, backbone), the policies or the data fingerprints differ
    or a fingerprint is missing.

    Raises:
        StatsError: naming the methods or runs and what differs.
    """
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
    df = check_per_case(per_case, metrics)
    return reduce_to_patients(df, metrics, average_frames)


def reduce_to_patients(df: pd.DataFrame, metrics: Sequence[str], average_frames: bool) -> pd.DataFrame:
    """:func:`patient_scores` of a table :func:`check_per_case` already checked."""
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
