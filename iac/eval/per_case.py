"""The per-case score file: what ``evaluate`` writes and ``stats`` reads.

``per_case.csv`` holds one row per (patient, frame, label) with at least
:data:`COLUMNS` (and ``nsd``, normalised surface Dice, from schema version 2
on); a JSON sidecar beside it (same stem, ``per_case.json``) states how the
scores were made: the empty-structure policy, how predictions were restored
to the original grid, the NSD tolerances, the dataset, the fingerprint of the
evaluated data (``eval_data_fingerprint``) and of the data the model was
trained on (``data_fingerprint``), the split and the model URI. Both files are
written through :func:`save_per_case` and read back through
:func:`load_per_case`, which validates them and refuses scores whose
empty-structure policy is not stated, or whose NaN scores under policy
``"nan"`` are not exactly the rows with an empty reference.

Schema version 1 (before NSD) recorded the evaluated data's fingerprint as
``data_fingerprint``, restored hard labels by nearest neighbour, and its
``"nan"`` policy left a structure unscored only when reference *and*
prediction were empty; :func:`load_per_case` reads such files with
``eval_data_fingerprint`` and ``restore`` filled in accordingly, and refuses
their ``"nan"`` scores where a false positive on an empty reference was scored.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from iac.atomic import atomic_write_text
from iac.eval.metrics import check_policy

# Columns every per-case file has, in this order (extra columns follow).
COLUMNS = ("patient", "frame", "label", "dice", "hd95", "ref_empty", "pred_empty")
KEY_COLUMNS = ("patient", "frame", "label")
TEXT_COLUMNS = KEY_COLUMNS
SCORE_COLUMNS = ("dice", "hd95", "nsd")  # nsd is absent from schema version 1 files
SCORE_NAMES = {"dice": "Dice", "hd95": "HD95", "nsd": "NSD"}
# Scores that are fractions in [0, 1] (the others are distances in mm).
FRACTION_COLUMNS = ("dice", "nsd")
FLAG_COLUMNS = ("ref_empty", "pred_empty")
# Sidecar keys: the policy is required, the others are recorded (None when unknown).
POLICY_KEY = "empty_policy"
META_KEYS = (
    "dataset", "eval_data_fingerprint", "data_fingerprint", "split", "model", "restore", "nsd_tolerance_mm",
)
SCHEMA_VERSION = 2
# How schema version 1 restored predictions (nearest neighbour of the argmax).
V1_RESTORE = "labels"
# Spellings of booleans accepted when reading the CSV back.
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


class PerCaseError(ValueError):
    """A per-case file or its sidecar is missing, malformed or unstated."""


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of a per-case CSV (``per_case.csv`` -> ``per_case.json``)."""
    return Path(path).with_suffix(".json")


def _validate(df: pd.DataFrame, policy: str, source: str) -> pd.DataFrame:
    """Check columns, values and keys of a per-case table; return it normalised."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise PerCaseError(f"{source}: missing columns {missing}; a per-case table needs {list(COLUMNS)}")
    df = df.copy()
    for col in TEXT_COLUMNS:
        df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    if (df["patient"] == "").any():
        raise PerCaseError(f"{source}: {int((df['patient'] == '').sum())} rows have no patient id")
    if (df["label"] == "").any():
        raise PerCaseError(f"{source}: {int((df['label'] == '').sum())} rows have no label")
    scores = [c for c in SCORE_COLUMNS if c in df.columns]
    for col in scores:
        try:
            df[col] = pd.to_numeric(df[col], errors="raise").astype(float)
        except (ValueError, TypeError) as err:
            raise PerCaseError(f"{source}: column {col!r} is not numeric ({err})") from err
    for col in FLAG_COLUMNS:
        df[col] = _as_bool(df[col], col, source)
    _check_scores(df, scores, policy, source)
    dup = df.duplicated(list(KEY_COLUMNS), keep=False)
    if dup.any():
        first = df.loc[dup, list(KEY_COLUMNS)].iloc[0].to_dict()
        raise PerCaseError(f"{source}: {int(dup.sum())} rows repeat a (patient, frame, label), e.g. {first}")
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[list(COLUMNS) + extra].reset_index(drop=True)


def _check_scores(df: pd.DataFrame, scores: list[str], policy: str, source: str) -> None:
    """Ranges of the scores, and NaN exactly where the policy puts it.

    Raises:
        PerCaseError: a fraction outside [0, 1], an infinite or negative
            distance, NaN under ``"dice1_hd0"``, or, under ``"nan"``, a NaN
            score with a non-empty reference or a score with an empty one.
    """
    for col in scores:
        values = df[col].to_numpy()
        name = SCORE_NAMES[col]
        if col in FRACTION_COLUMNS and np.any((values < 0) | (values > 1)):
            raise PerCaseError(f"{source}: {name} values outside [0, 1]")
        if col not in FRACTION_COLUMNS and (np.any(values < 0) or np.any(np.isinf(values))):
            raise PerCaseError(f"{source}: {name} values must be finite and >= 0 mm")
        nan = np.isnan(values)
        if policy == "dice1_hd0" and nan.any():
            raise PerCaseError(f"{source}: NaN scores ({name}), but policy 'dice1_hd0' scores every structure")
        if policy == "nan" and not np.array_equal(nan, df["ref_empty"].to_numpy()):
            bad = df.loc[nan != df["ref_empty"].to_numpy(), list(KEY_COLUMNS)].head(3).to_dict("records")
            raise PerCaseError(
                f"{source}: under policy 'nan' a {name} score is NaN exactly where the reference is empty; "
                f"{int((nan != df['ref_empty'].to_numpy()).sum())} rows are not, e.g. {bad} (scores of an older "
                "evaluate left a structure unscored only when the prediction was empty too: re-run evaluate)"
            )


def _as_bool(col: pd.Series, name: str, source: str) -> pd.Series:
    """Booleans, or the strings True/False/1/0 (any case), as a bool column."""
    if col.dtype == bool:
        return col
    text = col.astype(str).str.strip().str.lower()
    bad = ~text.isin(_TRUE | _FALSE)
    if bad.any():
        examples = sorted(set(col[bad].astype(str)))[:5]
        raise PerCaseError(f"{source}: column {name!r} holds non-boolean values {examples}")
    return text.isin(_TRUE)


def save_per_case(
    rows: pd.DataFrame | Iterable[Mapping[str, Any]],
    path: str | Path,
    meta: Mapping[str, Any],
) -> Path:
    """Write ``per_case.csv`` and its JSON sidecar (atomically).

    Args:
        rows: per-case rows (a DataFrame or dicts) with :data:`COLUMNS`;
            ``frame`` may be absent or empty (datasets without frames).
        path: the CSV to write; the sidecar goes to :func:`sidecar_path`.
        meta: must hold ``empty_policy`` (see :data:`iac.eval.metrics.EMPTY_POLICIES`);
            :data:`META_KEYS` are recorded (None when absent); other JSON-able
            keys are kept.

    Returns:
        The CSV path.

    Raises:
        PerCaseError: no or unknown policy, missing columns, bad values.
    """
    path = Path(path)
    policy = meta.get(POLICY_KEY)
    if not policy:
        raise PerCaseError(
            f"meta for {path} states no {POLICY_KEY!r}; per-case scores need their empty-structure policy"
        )
    try:
        check_policy(policy)
    except ValueError as err:
        raise PerCaseError(f"meta for {path}: {err}") from err
    df = pd.DataFrame(list(rows)) if not isinstance(rows, pd.DataFrame) else rows
    if "frame" not in df.columns:
        df = df.assign(frame="")
    df = _validate(df, policy, str(path))
    sidecar = {"schema_version": SCHEMA_VERSION, POLICY_KEY: policy}
    sidecar.update({k: meta.get(k) for k in META_KEYS})
    sidecar.update({k: v for k, v in meta.items() if k not in sidecar})
    sidecar["n_rows"] = len(df)
    try:
        sidecar_text = json.dumps(sidecar, indent=2, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise PerCaseError(f"meta for {path} is not JSON-serialisable: {err}") from err
    atomic_write_text(path, df.to_csv(index=False, na_rep="nan", float_format="%.10g"))
    atomic_write_text(sidecar_path(path), sidecar_text + "\n")
    return path


def load_per_case(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read and validate a per-case CSV and its sidecar.

    Args:
        path: the ``per_case.csv`` written by :func:`save_per_case`.

    Returns:
        ``(table, meta)``: text keys as ``str`` (``frame`` is ``""`` where the
        dataset has none), scores as float, flags as bool; ``meta`` is the
        sidecar, with ``empty_policy`` guaranteed to be a known policy and a
        version 1 sidecar's keys upgraded.

    Raises:
        PerCaseError: missing file or sidecar, no stated or unknown policy,
            missing columns, wrong dtypes or values, a row count that does
            not match the sidecar.
    """
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise PerCaseError(f"per-case file {path} does not exist")
    if not side.is_file():
        raise PerCaseError(
            f"{path} has no sidecar {side.name} beside it, so its empty-structure policy is unknown; "
            "write per-case scores with iac.eval.per_case.save_per_case"
        )
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise PerCaseError(f"sidecar {side} is not valid JSON: {err}") from err
    if not isinstance(meta, dict) or not meta.get(POLICY_KEY):
        raise PerCaseError(
            f"sidecar {side} states no {POLICY_KEY!r}; refusing scores of unknown empty-structure policy"
        )
    try:
        check_policy(meta[POLICY_KEY])
    except ValueError as err:
        raise PerCaseError(f"sidecar {side}: {err}") from err
    df = pd.read_csv(
        path,
        dtype={c: str for c in TEXT_COLUMNS},
        keep_default_na=False,
        na_values={c: ["nan", "NaN"] for c in SCORE_COLUMNS},
    )
    df = _validate(df, meta[POLICY_KEY], str(path))
    if meta.get("n_rows") is not None and int(meta["n_rows"]) != len(df):
        raise PerCaseError(f"{path} has {len(df)} rows but its sidecar records {meta['n_rows']}")
    return df, _upgraded(meta)


def _upgraded(meta: dict[str, Any]) -> dict[str, Any]:
    """A sidecar in the current schema's terms (see the module docstring for version 1)."""
    meta = dict(meta)
    if int(meta.get("schema_version") or 1) == 1:
        meta.setdefault("eval_data_fingerprint", meta.get("data_fingerprint"))
        meta["data_fingerprint"] = None  # version 1 did not record the training data's
        meta.setdefault("restore", V1_RESTORE)
    return meta


class PerCaseTable:
    """Collects the rows of :func:`iac.eval.metrics.case_metrics` case by case."""

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []

    def add(self, patient: str, rows: Iterable[Mapping[str, Any]], frame: str | None = None) -> None:
        """Append one case's rows under ``patient`` (and ``frame``, "" when none)."""
        for row in rows:
            self._rows.append({"patient": str(patient), "frame": "" if frame is None else str(frame), **row})

    def __len__(self) -> int:
        return len(self._rows)

    def to_frame(self) -> pd.DataFrame:
        """The collected rows as a DataFrame with :data:`COLUMNS` first."""
        df = pd.DataFrame(self._rows, columns=None if self._rows else list(COLUMNS))
        extra = [c for c in df.columns if c not in COLUMNS]
        return df[list(COLUMNS) + extra]


def mean_scores(df: pd.DataFrame) -> dict[str, float]:
    """Mean scores per label over all rows (NaN scores left out).

    Keys are ``"<score>/<label>"`` (``dice``, ``hd95`` and, where present,
    ``nsd``), ready to log as metrics.
    """
    out: dict[str, float] = {}
    for label, group in df.groupby("label", sort=False):
        for col in (c for c in SCORE_COLUMNS if c in df.columns):
            value = float(np.nanmean(group[col].to_numpy(dtype=float))) if group[col].notna().any() else math.nan
            out[f"{col}/{label}"] = value
    return out
