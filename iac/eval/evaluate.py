"""Patient-level evaluation: predict, restack on the original grid, score.

Every slice of a case is predicted, the slices are stacked back into the
case's volume and put back on its original grid (inverse crop/pad, then the
class probabilities resampled linearly and the argmax taken, as nnU-Net does;
or the argmax by nearest neighbour with ``restore="labels"``), and Dice, HD95
and normalised surface Dice in millimetres are computed per class and region
against the original label map, with the voxel spacing of the original image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from iac.eval.inference import predict_original_grid
from iac.eval.metrics import (
    BACKGROUND,
    DEFAULT_EMPTY_POLICY,
    DEFAULT_NSD_TOLERANCE_MM,
    MEAN_FG_LABEL,
    SCORES,
    case_metrics,
    nsd_tolerances,
)


@dataclass
class EvaluationResult:
    """Per-case rows and aggregate metrics."""

    per_case: pd.DataFrame
    aggregates: dict[str, float]
    seconds_per_case: float


def evaluate_network(
    net: torch.nn.Module,
    data,
    split: str = "test",
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    policy: str = DEFAULT_EMPTY_POLICY,
    predictions_dir: Path | None = None,
    progress: bool = True,
    restore: str = "probabilities",
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
    nsd_class_tolerance_mm: Mapping[str, float] | None = None,
) -> EvaluationResult:
    """Evaluate a network on every case of one split of a prepared dataset.

    Args:
        net: the segmentation network (any device; moved to ``device``).
        data: a :class:`iac.data.store.PreparedDataset`.
        split: ``train``, ``val`` or ``test``.
        device: where to predict.
        batch_size: slices per forward pass.
        policy: empty-structure policy of :mod:`iac.eval.metrics`.
        predictions_dir: when given, each case's prediction is written there as
            NIfTI on its original grid (``<case_id>.nii.gz``).
        progress: show a progress bar.
        restore: how predictions go back to the original grid, ``"probabilities"``
            or ``"labels"`` (see :func:`iac.eval.inference.predict_original_grid`).
        nsd_tolerance_mm: NSD tolerance in mm of every class and region without its own.
        nsd_class_tolerance_mm: ``{class or region name: mm}`` overrides.

    Returns:
        Rows with ``patient``, ``frame``, ``case``, ``label``, ``dice``,
        ``hd95``, ``nsd``, ``ref_empty``, ``pred_empty``, and aggregate metrics.
    """
    import time

    from tqdm.auto import tqdm

    from iac.progress import bars_enabled

    cases = data.cases(split)
    if not cases:
        raise ValueError(f"split {split!r} of {data.root} has no cases")
    tolerance = structure_tolerances(data, nsd_tolerance_mm, nsd_class_tolerance_mm)  # checked before predicting
    net = net.to(device).eval()
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for case in tqdm(cases, desc=f"evaluate {split}", disable=not (progress and bars_enabled())):
        image, geometry = data.image(case.case_id), data.geometry(case.case_id)
        pred = predict_original_grid(net, image, geometry, restore, device, batch_size)  # (Z, Y, X), original grid
        ref, spacing = data.original_label(case.case_id)
        if predictions_dir is not None:
            _write_prediction(data, case.case_id, pred, Path(predictions_dir))
        for r in case_metrics(pred, np.asarray(ref), spacing, data.label_names, data.regions, policy, tolerance):
            rows.append({"patient": case.patient, "frame": case.frame or "", "case": case.case_id, **r})
    seconds = (time.perf_counter() - t0) / len(cases)
    df = pd.DataFrame(rows)
    return EvaluationResult(per_case=df, aggregates=aggregate(df), seconds_per_case=seconds)


def structure_tolerances(
    data, default_mm: float = DEFAULT_NSD_TOLERANCE_MM, per_name: Mapping[str, float] | None = None
) -> dict[str, float]:
    """The NSD tolerance in mm of every class and region of ``data``.

    Args:
        data: a :class:`iac.data.store.PreparedDataset` (``label_names``, ``regions``).
        default_mm: the tolerance of a structure without its own.
        per_name: ``{class or region name: mm}``.

    Raises:
        ValueError: naming the parameter and the valid names for an unknown name.
    """
    names = [n for k, n in sorted(data.label_names.items()) if int(k) != BACKGROUND] + list(data.regions or {})
    return nsd_tolerances(names, float(default_mm), per_name)


def aggregate(df: pd.DataFrame) -> dict[str, float]:
    """Mean scores per label, per frame (where frames exist) and per patient (NaN scores left out).

    ``dice_patient_mean_fg`` (frames averaged per patient, then over patients)
    is the headline number; it is what model selection and ``stats`` use.
    """
    out: dict[str, float] = {}
    scores = [c for c in SCORES if c in df.columns]
    for label, g in df.groupby("label", sort=False):
        out.update({f"{c}_{label}": float(g[c].mean()) for c in scores})
    fg = df[df["label"] == MEAN_FG_LABEL]
    per_patient = fg.groupby("patient")[scores].mean()
    out.update({f"{c}_patient_mean_fg": float(per_patient[c].mean()) for c in scores})
    for f in (f for f in fg["frame"].unique() if f):
        g = fg[fg["frame"] == f]
        out.update({f"{c}_{f}_mean_fg": float(g[c].mean()) for c in scores})
    out["n_patients"] = float(fg["patient"].nunique())
    out["n_cases"] = float(len(fg))
    return out


def _write_prediction(data, case_id: str, pred: np.ndarray, out_dir: Path) -> None:
    import SimpleITK as sitk

    out_dir.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(pred.astype(np.uint8))
    geom = data.geometry(case_id)  # original size, spacing, origin, direction
    img.SetSpacing(tuple(float(s) for s in geom["spacing"]))
    img.SetOrigin(tuple(float(s) for s in geom["origin"]))
    img.SetDirection(tuple(float(s) for s in geom["direction"]))
    sitk.WriteImage(img, str(out_dir / f"{case_id}.nii.gz"))
