"""The inputs of the paired statistics: evaluate runs stacked, checked, reduced to patients.

The statistical unit is the patient. Per-case rows (``per_case.csv`` of
several evaluate runs, stacked with a ``method`` and a ``seed`` column) are
reduced to one score per patient, method, seed and label: ACDC's frames are
averaged per patient (``average_frames=True``) or analysed one frame at a
time, never counted as independent pairs. Several seeds of a method are
pooled by the seed-mean per patient, and each seed is also reported.

Runs are compared only when they state the same empty-structure policy,
restore method and NSD tolerances, were evaluated on the same prepared data
(``eval_data_fingerprint``; ``data_fingerprint`` is the data each model was
trained on and may differ), and cover the same (patient, frame) cases as the
reference: a method evaluated on fewer cases, or other frames, is refused
naming the difference rather than compared with a mean over other cases.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import pandas as pd

from iac.eval.metrics import check_policy

# Seed label of the analysis that pools every seed by the per-patient mean.
POOLED = "pooled"
# Columns a stacked per-case table needs beyond the per-case file's own.
RUN_COLUMNS = ("method", "empty_policy", "eval_data_fingerprint")
# Columns filled with a default when a stacked table lacks them.
OPTIONAL_COLUMNS = {
    "dataset": "", "backbone": "", "seed": "0", "frame": "", "data_fingerprint": "", "restore": "",
    "nsd_tolerance_mm": "",
}
# How scores were made: runs compared in one (dataset, backbone) must agree on each.
SCORING_SETTINGS = {
    "empty_policy": "empty-structure policies",
    "restore": "ways of restoring predictions to the original grid",
    "nsd_tolerance_mm": "NSD tolerances",
}
TEXT_COLUMNS = ("patient", "label", "method", "dataset", "backbone", "frame", *SCORING_SETTINGS,
                "eval_data_fingerprint", "data_fingerprint")


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
    ``empty_policy``, ``restore``, ``nsd_tolerance_mm`` (JSON text),
    ``eval_data_fingerprint``, ``data_fingerprint`` and ``run_id`` from its run.

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
            "restore": str(run.meta.get("restore") or ""),
            "nsd_tolerance_mm": _json_text(run.meta.get("nsd_tolerance_mm")),
            "eval_data_fingerprint": str(run.meta.get("eval_data_fingerprint") or ""),
            "data_fingerprint": str(run.meta.get("data_fingerprint") or ""),
            "run_id": run.run_id or "",
        }
        frames.append(run.per_case.assign(**columns))
    return pd.concat(frames, ignore_index=True)


def _json_text(value: Any) -> str:
    """A recorded setting as canonical text ("" when unrecorded), so equal settings compare equal."""
    return "" if value is None else json.dumps(value, sort_keys=True)


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
        StatsError: missing columns, unstated or differing scoring settings,
            missing or differing fingerprints of the evaluated data, repeated rows.
    """
    needed = [c for c in ("patient", "label", *metrics, *RUN_COLUMNS) if c not in per_case.columns]
    if needed:
        hint = " (stack evaluate runs with iac.stats.stack_runs)" if set(needed) & set(RUN_COLUMNS) else ""
        if "nsd" in needed:
            hint += " (per-case files from before NSD: re-run evaluate, or leave nsd out of the metrics)"
        raise StatsError(f"per-case table lacks columns {needed}{hint}")
    df = per_case.copy()
    for col, default in OPTIONAL_COLUMNS.items():
        if col not in df.columns:
            df[col] = default
    for col in ("ref_empty", "pred_empty"):
        df[col] = df[col].astype(bool) if col in df.columns else False
    df["seed"] = df["seed"].map(_seed_text)
    for col in TEXT_COLUMNS:
        df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    for col in metrics:
        df[col] = pd.to_numeric(df[col], errors="raise").astype(float)
    _check_runs_comparable(df, metrics)
    keys = ["dataset", "backbone", "method", "seed", "patient", "frame", "label"]
    dup = df.duplicated(keys, keep=False)
    if dup.any():
        first = df.loc[dup, keys].iloc[0].to_dict()
        raise StatsError(
            f"{int(dup.sum())} per-case rows repeat a (method, seed, patient, frame, label), e.g. {first}: "
            "two runs of the same method need different seeds"
        )
    return df


def _check_runs_comparable(df: pd.DataFrame, metrics: Sequence[str]) -> None:
    """Refuse runs whose scores cannot be compared.

    They cannot when an empty-structure policy is unstated or unknown, or when,
    within one (dataset, backbone), a scoring setting (:data:`SCORING_SETTINGS`;
    the NSD tolerances only when NSD is compared) or the evaluated data's
    fingerprint differs, or a fingerprint is missing.

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
    settings = [c for c in SCORING_SETTINGS if c != "nsd_tolerance_mm" or "nsd" in metrics]
    for (dataset, backbone), group in df.groupby(["dataset", "backbone"], sort=False):
        where = f"dataset={dataset!r} backbone={backbone!r}"
        for column in settings:
            values = _by_run(group, column)
            if len(set(values.values())) > 1:
                raise StatsError(f"{where}: runs use different {SCORING_SETTINGS[column]}: {values}")
        prints = _by_run(group, "eval_data_fingerprint")
        missing = sorted(k for k, v in prints.items() if not v)
        if missing:
            raise StatsError(
                f"{where}: runs {missing} state no eval_data_fingerprint; cannot check they scored the same "
                "prepared data"
            )
        if len(set(prints.values())) > 1:
            raise StatsError(
                f"{where}: runs were evaluated on different prepared data (eval_data_fingerprint mismatch): "
                f"{prints}; select the runs of one (stats --fingerprint)"
            )


def check_pairing(df: pd.DataFrame, reference: str) -> None:
    """Refuse a run that does not cover exactly the reference's (patient, frame) cases and labels.

    Every run of a (dataset, backbone) is compared with the reference's first
    seed: averaging frames per patient would otherwise compare, say, an
    ED-only evaluation with the reference's ED+ES mean.

    Raises:
        StatsError: naming the run, and the cases or labels it lacks or adds.
    """
    for (dataset, backbone), group in df.groupby(["dataset", "backbone"], sort=False):
        runs = {key: g for key, g in group.groupby(["method", "seed"], sort=False)}
        ref_key = next((k for k in runs if k[0] == reference), None)
        if ref_key is None:
            continue  # compare_methods names a missing reference
        where = f"dataset={dataset!r} backbone={backbone!r}"
        ref_cases, ref_labels = _cases(runs[ref_key]), set(runs[ref_key]["label"])
        for (method, seed), g in runs.items():
            cases, labels = _cases(g), set(g["label"])
            if cases != ref_cases:
                raise StatsError(
                    f"{where}: {method!r} seed {seed} was evaluated on other (patient, frame) cases than the "
                    f"reference {reference!r} seed {ref_key[1]}: missing {_few(ref_cases - cases)}; "
                    f"extra {_few(cases - ref_cases)}"
                )
            if labels != ref_labels:
                raise StatsError(
                    f"{where}: {method!r} seed {seed} has labels {sorted(labels)}, the reference "
                    f"{reference!r} has {sorted(ref_labels)}"
                )


def _cases(g: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(g["patient"], g["frame"]))


def _few(items: set, limit: int = 8) -> str:
    """Up to ``limit`` items, sorted, and how many more."""
    shown = sorted(items)[:limit]
    return f"{shown}" + (f" and {len(items) - limit} more" if len(items) > limit else "")


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
    """:func:`patient_scores` of a table :func:`check_per_case` already checked.

    Besides the metrics, each row counts its cases with an empty reference
    structure (``n_ref_empty``) and, of those, the ones where something was
    predicted (``n_false_positive``).
    """
    keys = ["dataset", "backbone", "method", "seed", "frame", "patient", "label"]
    if average_frames:
        df = df.assign(frame="")
    df = df.assign(
        n_ref_empty=df["ref_empty"].astype(int), n_false_positive=(df["ref_empty"] & ~df["pred_empty"]).astype(int)
    )
    grouped = df.groupby(keys, sort=False)
    out = grouped[list(metrics)].mean()  # pandas' mean skips NaN
    out[["n_ref_empty", "n_false_positive"]] = grouped[["n_ref_empty", "n_false_positive"]].sum()
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
    counts = [c for c in ("n_ref_empty", "n_false_positive") if c in scores.columns]
    out = grouped[list(metrics)].mean()
    out[counts] = grouped[counts].sum()  # over the seeds: cases x seeds
    out["n_seeds"] = grouped["seed"].nunique()
    out = out.reset_index().assign(seed=POOLED)
    return out
