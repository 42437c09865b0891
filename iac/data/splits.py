"""Patient-level train/val/test splits.

Splits are by patient (all cases of a patient land in one split), seeded and
stable: the same patient set and seed always give the same split, whatever
order the patients were found in. A JSON split file can fix the split instead.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np

from iac.config import SPLIT_NAMES as SPLITS
from iac.data.layouts.base import DataError


def split_patients(
    patients: Iterable[str], seed: int, val_fraction: float, test_fraction: float
) -> dict[str, list[str]]:
    """Seeded random split of patient ids.

    Args:
        patients: patient ids (duplicates are ignored).
        seed: split seed.
        val_fraction: share of patients in ``val`` (rounded half up).
        test_fraction: share of patients in ``test`` (rounded half up).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted, disjoint, covering all patients.

    Raises:
        ValueError: for fractions outside [0, 1) or leaving no training patient.
    """
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac}")
    ids = sorted(set(patients))
    n = len(ids)
    n_test = math.floor(n * test_fraction + 0.5)
    n_val = math.floor(n * val_fraction + 0.5)
    if n - n_test - n_val < 1:
        raise ValueError(
            f"{n} patient(s) with val_fraction={val_fraction} and test_fraction={test_fraction} "
            "leave no training patient; lower the fractions or add patients"
        )
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [ids[i] for i in order]
    return {
        "train": sorted(shuffled[n_test + n_val :]),
        "val": sorted(shuffled[n_test : n_test + n_val]),
        "test": sorted(shuffled[:n_test]),
    }



def split_search_halves(patients: Iterable[str], seed: int) -> tuple[list[str], list[str]]:
    """Split the training patients into the search's weight half and architecture half.

    The bilevel search steps the cell weights on one half and the
    architecture weights on the other (DARTS' train/valid halves); the halves
    are disjoint by patient, seeded, and each sorted.

    Raises:
        ValueError: fewer than 2 patients.
    """
    order = sorted(patients)
    if len(order) < 2:
        raise ValueError(
            f"the search needs at least 2 training patients to split into weight/architecture halves, got {len(order)}"
        )
    np.random.default_rng(seed).shuffle(order)
    half = len(order) // 2
    return sorted(order[:half]), sorted(order[half:])

def check_splits(splits: dict[str, list[str]], patients: Iterable[str], origin: str) -> dict[str, list[str]]:
    """Validate a split against the dataset's patients.

    Args:
        splits: ``{"train": [...], "val": [...], "test": [...]}`` (``val``/``test`` may be missing).
        patients: the dataset's patient ids.
        origin: where the split came from, for error messages (e.g. the split file).

    Returns:
        The split with all three keys, each sorted.

    Raises:
        DataError: for unknown keys, unknown or unassigned patients, a patient in two splits,
            or an empty ``train``.
    """
    if not isinstance(splits, dict):
        raise DataError(f"{origin}: expected a JSON object with keys {', '.join(SPLITS)}")
    extra = sorted(set(splits) - set(SPLITS))
    if extra:
        raise DataError(f"{origin}: unknown split name(s) {extra}; expected {', '.join(SPLITS)}")
    out = {k: sorted(str(p) for p in splits.get(k, [])) for k in SPLITS}
    known = set(patients)
    seen: dict[str, str] = {}
    for name, ids in out.items():
        for pid in ids:
            if pid in seen:
                raise DataError(f"{origin}: patient {pid} is in both {seen[pid]!r} and {name!r}")
            seen[pid] = name
    unknown = sorted(set(seen) - known)
    if unknown:
        raise DataError(f"{origin}: patient(s) not in the dataset: {', '.join(unknown[:10])}")
    missing = sorted(known - set(seen))
    if missing:
        raise DataError(f"{origin}: patient(s) not assigned to any split: {', '.join(missing[:10])}")
    if not out["train"]:
        raise DataError(f"{origin}: the 'train' split is empty")
    return out


def load_split_file(path: Path, patients: Iterable[str], ignore: Iterable[str] = ()) -> dict[str, list[str]]:
    """Read and validate a JSON split file ``{"train": [...], "val": [...], "test": [...]}``.

    Args:
        path: the split file.
        patients: the dataset's (valid) patient ids.
        ignore: patient ids to drop silently (patients whose cases were all skipped as bad).

    Raises:
        DataError: naming the file when it is missing, not JSON, or does not match the patients.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"split file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"split file {path} is not valid JSON: {err}") from err
    drop = set(ignore)
    if isinstance(data, dict):
        data = {k: [p for p in v if p not in drop] for k, v in data.items() if isinstance(v, list)} | {
            k: v for k, v in data.items() if not isinstance(v, list)
        }
        bad_values = [k for k, v in data.items() if not isinstance(v, list)]
        if bad_values:
            raise DataError(f"split file {path}: {bad_values} must be lists of patient ids")
    return check_splits(data, patients, f"split file {path}")
