"""Oracle round trips: what the way back to the original grid costs by itself.

A prediction is made on the prepared grid and scored on the original one, so
even a perfect network loses some Dice on cases whose original grid differs
from the prepared one. Three oracles measure that loss per case:

``soft``
    the one-hot reference carried linearly to the prepared grid
    (:func:`soft_oracle`): the class probabilities a perfect network of the
    prepared grid would give, restored as evaluation restores probabilities
    (:func:`iac.data.preprocess.restore_probabilities`).
``hard_labels``
    the stored prepared label map (nearest-resampled by ``prepare``) restored by
    nearest neighbour (:func:`iac.data.preprocess.restore_to_grid`), the way
    predictions were restored before probabilities were.
``hard_probabilities``
    the same stored label map as one-hot probabilities, restored linearly.

Scores are the mean foreground Dice of :func:`iac.eval.metrics.foreground_dice`
against the original label map.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from iac.data.preprocess import RESAMPLE_RTOL, restore_probabilities, restore_to_grid, to_prepared_grid
from iac.eval.metrics import BACKGROUND, foreground_dice

# The oracles, in the column order of :func:`round_trip_scores`.
ORACLES = ("soft", "hard_labels", "hard_probabilities")


def soft_oracle(label_zyx: np.ndarray, geometry: dict, num_classes: int) -> np.ndarray:
    """The one-hot reference carried linearly to the prepared grid.

    Args:
        label_zyx: reference label map ``(Z, Y, X)`` on the original grid.
        geometry: the case's geometry (``PreparedDataset.geometry``).
        num_classes: classes including the background.

    Returns:
        float32 ``(K, Z, H, W)`` class probabilities on the prepared grid; the
        padding of the window is background.
    """
    label = np.asarray(label_zyx)
    return np.stack(
        [to_prepared_grid(label == k, geometry, fill=float(k == BACKGROUND)) for k in range(num_classes)]
    )


def one_hot(label_zhw: np.ndarray, num_classes: int) -> np.ndarray:
    """``(Z, H, W)`` labels -> float32 ``(K, Z, H, W)`` one-hot."""
    label = np.asarray(label_zhw)
    return np.stack([(label == k).astype(np.float32) for k in range(num_classes)])


def is_finer(spacing_xyz, target_xy) -> bool:
    """True when a case's in-plane spacing is finer than the prepared spacing along an axis."""
    return any(s < t * (1 - RESAMPLE_RTOL) for s, t in zip(spacing_xyz[:2], target_xy))


def round_trip_scores(data, split: str | None = None) -> pd.DataFrame:
    """Every oracle's mean foreground Dice per case of a prepared dataset.

    Args:
        data: a :class:`iac.data.store.PreparedDataset`.
        split: ``train``, ``val``, ``test`` or None for every case.

    Returns:
        One row per case: ``case``, ``patient``, ``spacing_x``, ``spacing_y``
        (original, mm), ``ratio`` (the smaller of original / prepared spacing
        over the in-plane axes), ``finer`` (:func:`is_finer`) and one column per
        oracle (:data:`ORACLES`).
    """
    rows = []
    target = data.spacing
    for case in data.cases(split):
        ref, spacing = data.original_label(case.case_id)
        ref = np.asarray(ref)
        geometry = data.geometry(case.case_id)
        stored = np.asarray(data.label(case.case_id))
        restored = {
            "soft": restore_probabilities(soft_oracle(ref, geometry, data.num_classes), geometry),
            "hard_labels": restore_to_grid(stored, geometry),
            "hard_probabilities": restore_probabilities(one_hot(stored, data.num_classes), geometry),
        }
        rows.append(
            {
                "case": case.case_id,
                "patient": case.patient,
                "spacing_x": spacing[0],
                "spacing_y": spacing[1],
                "ratio": min(s / t for s, t in zip(spacing[:2], target)),
                "finer": is_finer(spacing, target),
                **{name: foreground_dice(restored[name], ref, data.num_classes) for name in ORACLES},
            }
        )
    return pd.DataFrame(rows)
