"""Scoring ``nnUNetv2_predict`` output with the project's per-case metrics.

An exported cohort's volumes are the prepared arrays (:mod:`iac.nnunet.export`),
so nnU-Net's predictions lie on the prepared grid of each case. They are put
back on the original grid through the prepared folder and scored against the
original reference with :func:`iac.eval.metrics.case_metrics`, exactly as
``evaluate`` scores the project's own networks; ``stats`` then pairs them
patient by patient with everything else.

With ``nnUNetv2_predict --save_probabilities`` (``<case>.npz``), the class
probabilities are restored linearly and the argmax taken (``restore=
"probabilities"``, the project's default); otherwise the label map is
restored by nearest neighbour (``restore="labels"``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import SimpleITK as sitk

from iac.eval.evaluate import EvaluationResult, aggregate, structure_tolerances
from iac.eval.metrics import DEFAULT_EMPTY_POLICY, DEFAULT_NSD_TOLERANCE_MM, case_metrics

__all__ = ["PredictionError", "evaluate_predictions", "read_prediction"]


class PredictionError(ValueError):
    """A prediction folder that does not cover the split, or a prediction of the wrong shape."""


def read_prediction(folder: Path, case_id: str, shape_zhw: tuple[int, ...]) -> tuple[np.ndarray, str]:
    """One case's prediction on the prepared grid: probabilities ``(K, Z, H, W)`` or labels ``(Z, H, W)``.

    Returns:
        The array and how it is restored (``probabilities`` / ``labels``).
    """
    npz, nii = folder / f"{case_id}.npz", folder / f"{case_id}.nii.gz"
    if npz.is_file():
        with np.load(npz) as f:
            probs = np.asarray(f["probabilities"], dtype=np.float32)  # (K, Z, H, W)
        got, kind = tuple(probs.shape[1:]), "probabilities"
        array = probs
    elif nii.is_file():
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(nii))).astype(np.int64)  # (Z, H, W)
        got, kind = tuple(array.shape), "labels"
    else:
        raise PredictionError(f"{folder} has no prediction of case {case_id} ({nii.name} or {npz.name})")
    if got != tuple(shape_zhw):
        raise PredictionError(f"prediction of {case_id} in {folder} has shape {got}; the exported volume has "
                              f"{tuple(shape_zhw)} (was it predicted from this cohort's export?)")
    return array, kind


def evaluate_predictions(
    data,
    predictions: str | Path,
    split: str = "test",
    policy: str = DEFAULT_EMPTY_POLICY,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    nsd_class_tolerance_mm: Mapping[str, float] | None = None,
) -> tuple[EvaluationResult, str]:
    """Score ``nnUNetv2_predict``'s output folder on every case of ``split`` of the prepared cohort.

    Args:
        data: the :class:`iac.data.store.PreparedDataset` the nnU-Net dataset was exported from.
        predictions: the folder ``nnUNetv2_predict -o`` wrote.
        split: usually ``test`` (the export's ``imagesTs``).
        policy / nsd_tolerance_mm / nsd_class_tolerance_mm: as ``evaluate``.

    Returns:
        The per-case rows and aggregates (as :func:`iac.eval.evaluate.evaluate_network`), and how the
        predictions were restored.

    Raises:
        PredictionError: a case of the split without a prediction, or of the wrong shape.
    """
    folder = Path(predictions)
    if not folder.is_dir():
        raise PredictionError(f"predictions folder {folder} does not exist")
    cases = data.cases(split)
    if not cases:
        raise PredictionError(f"split {split!r} of {data.root} has no cases")
    tolerance = structure_tolerances(data, nsd_tolerance_mm, nsd_class_tolerance_mm)
    rows: list[dict[str, Any]] = []
    kinds = set()
    t0 = time.perf_counter()
    for case in cases:
        pred, kind = read_prediction(folder, case.case_id, tuple(np.asarray(data.label(case.case_id)).shape))
        kinds.add(kind)
        restored = data.to_original_grid(case.case_id, pred)  # (Z, Y, X) original grid
        ref, spacing = data.original_label(case.case_id)
        for r in case_metrics(restored, np.asarray(ref), spacing, data.label_names, data.regions, policy, tolerance):
            rows.append({"patient": case.patient, "frame": case.frame or "", "case": case.case_id, **r})
    df = pd.DataFrame(rows)
    restore = kinds.pop() if len(kinds) == 1 else "mixed"
    return EvaluationResult(df, aggregate(df), (time.perf_counter() - t0) / len(cases)), restore
