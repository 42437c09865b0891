"""A prepared cohort as an nnU-Net v2 raw dataset (the reverse of the ``nnunet`` layout).

What is written, under ``<raw>/Dataset<ID>_<name>/``:

- ``imagesTr/<case>_<CCCC>.nii.gz``, ``labelsTr/<case>.nii.gz``: every case of
  the ``train`` and ``val`` patients; ``imagesTs/`` and ``labelsTs/`` the
  ``test`` patients (nnU-Net never trains on them; ``evaluate`` scores them).
- The volumes are the prepared arrays (in-plane target spacing, cropped or
  padded to the slice size, intensities normalised) with the prepared spacing,
  so a prediction on them maps back to the original grid through the prepared
  folder (``PreparedDataset.to_original_grid``) and is scored against the same
  reference as every other model. Channels are named ``<name> (prepared)``:
  nnU-Net then applies its z-score normalisation (its CT scheme would clip
  intensities that are already normalised).
- ``dataset.json`` (nnU-Net's keys) plus an ``iac`` block: the prepared
  dataset's name and fingerprint, and each case's patient and frame, which the
  search trainer uses to split a fold's training cases by patient.
- ``splits_final.json``: fold 0 is the prepared dataset's own ``train`` / ``val``
  split; with ``folds > 1`` the train and val patients are pooled and dealt
  into ``folds`` patient-grouped folds. Either way every frame of a patient is
  in one fold, so pairing and fingerprints in ``stats`` hold. nnU-Net reads the
  file from ``nnUNet_preprocessed/Dataset<ID>_<name>/``; it is written there too
  when that folder is given.

The whole dataset folder is written atomically.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from iac.atomic import atomic_write_text
from iac.data.store import PreparedDataset, atomic_folder

__all__ = ["ExportError", "ExportResult", "export_nnunet_raw", "dataset_folder_name", "patient_folds",
           "DEFAULT_FOLDS", "SPLIT_SEED"]

# Folds of splits_final.json: 1 = the prepared dataset's own train/val split.
DEFAULT_FOLDS = 1
# Seed of the patient shuffle when folds > 1 (nnU-Net's own split seed).
SPLIT_SEED = 12345
# Suffix of the channel names: keeps nnU-Net's z-score normalisation on prepared intensities.
CHANNEL_SUFFIX = " (prepared)"
FILE_ENDING = ".nii.gz"
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class ExportError(ValueError):
    """Export settings that cannot give a valid nnU-Net raw dataset."""


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what it holds."""

    folder: Path
    dataset_id: int
    n_train_cases: int
    n_test_cases: int
    splits: list[dict[str, list[str]]]


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's folder name, ``Dataset<ID>_<name>`` with a three-digit id."""
    if not 1 <= int(dataset_id) <= 999:
        raise ExportError(f"dataset_id must be 1..999 (nnU-Net's three digits), got {dataset_id}")
    if not _NAME.match(name):
        raise ExportError(f"dataset name {name!r} must be letters, digits, '_' or '-'")
    return f"Dataset{int(dataset_id):03d}_{name}"


def patient_folds(ds: PreparedDataset, folds: int = DEFAULT_FOLDS, seed: int = SPLIT_SEED) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json`` content: per fold, ``train`` and ``val`` case ids, grouped by patient.

    Args:
        ds: the prepared dataset.
        folds: 1 = its own train/val split; more = patient-grouped folds over train + val.
        seed: shuffle of the patients when ``folds > 1``.
    """
    if folds < 1:
        raise ExportError(f"folds must be at least 1, got {folds}")

    def cases_of(patients: set[str]) -> list[str]:
        return sorted(c.case_id for c in ds.cases() if c.patient in patients)

    if folds == 1:
        return [{"train": cases_of(set(ds.patients("train"))), "val": cases_of(set(ds.patients("val")))}]
    pool = sorted(set(ds.patients("train")) | set(ds.patients("val")))
    if len(pool) < folds:
        raise ExportError(f"folds={folds} needs at least {folds} train/val patients; the cohort has {len(pool)}")
    order = list(np.random.default_rng(seed).permutation(pool))
    groups = [set(order[k::folds]) for k in range(folds)]
    return [{"train": cases_of(set(pool) - g), "val": cases_of(g)} for g in groups]


def _write_volume(array_zhw: np.ndarray, spacing_xyz: tuple[float, float, float], path: Path) -> None:
    img = sitk.GetImageFromArray(np.ascontiguousarray(array_zhw))  # (Z, H, W) -> size (W, H, Z)
    img.SetSpacing(tuple(float(s) for s in spacing_xyz))
    sitk.WriteImage(img, str(path), useCompression=True)


def export_nnunet_raw(
    prepared: str | Path | PreparedDataset,
    raw_root: str | Path,
    dataset_id: int,
    name: str | None = None,
    folds: int = DEFAULT_FOLDS,
    preprocessed_root: str | Path | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write a prepared cohort as the nnU-Net raw dataset ``<raw_root>/Dataset<ID>_<name>``.

    Args:
        prepared: the prepared folder (or its :class:`PreparedDataset`).
        raw_root: nnU-Net's ``nnUNet_raw`` folder.
        dataset_id: nnU-Net dataset id, 1..999; no other folder of ``raw_root`` may use it.
        name: dataset name in the folder name; default the prepared dataset's name.
        folds: folds of ``splits_final.json`` (see the module docstring).
        preprocessed_root: nnU-Net's ``nnUNet_preprocessed``; ``splits_final.json`` is also written there.
        overwrite: replace an existing export of the same id and name.

    Returns:
        The folder, id, case counts and the splits.

    Raises:
        ExportError: a bad id or name, an id already taken by another dataset, too few patients for ``folds``.
        FileExistsError: the folder exists and ``overwrite`` is False.
    """
    ds = prepared if isinstance(prepared, PreparedDataset) else PreparedDataset(prepared)
    raw_root = Path(raw_root)
    folder_name = dataset_folder_name(dataset_id, name or ds.name)
    prefix = f"Dataset{int(dataset_id):03d}_"
    taken = [p.name for p in raw_root.glob(prefix + "*") if p.is_dir() and p.name != folder_name] if raw_root.is_dir() else []
    if taken:
        raise ExportError(f"dataset id {dataset_id} is already used by {raw_root / taken[0]}; choose another dataset_id")
    splits = patient_folds(ds, folds)
    test_patients = set(ds.patients("test"))
    spacing_xy = ds.spacing
    iac_block: dict[str, Any] = {"prepared_name": ds.name, "data_fingerprint": ds.fingerprint,
                                 "patients": {}, "frames": {}, "test_cases": []}
    n_train = n_test = 0
    with atomic_folder(raw_root / folder_name, overwrite=overwrite) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()
        for case in ds.cases():
            test = case.patient in test_patients
            images, labels = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
            z_spacing = float(ds.geometry(case.case_id)["spacing"][2])
            spacing = (float(spacing_xy[0]), float(spacing_xy[1]), z_spacing)
            image = np.asarray(ds.image(case.case_id), dtype=np.float32)  # (C, Z, H, W)
            for c in range(image.shape[0]):
                _write_volume(image[c], spacing, tmp / images / f"{case.case_id}_{c:04d}{FILE_ENDING}")
            _write_volume(np.asarray(ds.label(case.case_id), dtype=np.uint8), spacing,
                          tmp / labels / f"{case.case_id}{FILE_ENDING}")
            iac_block["patients"][case.case_id] = case.patient
            iac_block["frames"][case.case_id] = case.frame
            if test:
                iac_block["test_cases"].append(case.case_id)
                n_test += 1
            else:
                n_train += 1
        dataset_json = {
            "channel_names": {str(c): f"{n}{CHANNEL_SUFFIX}" for c, n in enumerate(ds.channel_names)},
            "labels": {("background" if v == 0 else n): v for v, n in sorted(ds.label_names.items())},
            "numTraining": n_train,
            "file_ending": FILE_ENDING,
            "name": folder_name,
            "description": f"prepared cohort {ds.name} exported by iac (fingerprint {ds.fingerprint[:12]})",
            "iac": iac_block,
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        (tmp / "splits_final.json").write_text(json.dumps(splits, indent=2))
    if preprocessed_root is not None:
        target = Path(preprocessed_root) / folder_name
        target.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target / "splits_final.json", json.dumps(splits, indent=2))
    return ExportResult(raw_root / folder_name, int(dataset_id), n_train, n_test, splits)
