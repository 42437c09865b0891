"""Per-case, per-structure Dice and HD95 (millimetres) with MONAI.

The scores themselves come from :func:`monai.metrics.compute_dice` and
:func:`monai.metrics.compute_hausdorff_distance` (``percentile=95``, voxel
spacing in mm). What MONAI leaves undefined, a structure that is empty in the
reference, the prediction or both, is settled here by a named
*empty-structure policy*, so that every row of ``per_case.csv`` has a score
and says how it got it (``ref_empty``, ``pred_empty``).

Policies (:data:`EMPTY_POLICIES`):

``"dice1_hd0"`` (default)
    both empty: Dice 1, HD95 0 (the prediction is right);
    exactly one empty: Dice 0, HD95 = the image diagonal in mm (the worst
    distance the image allows).
``"nan"``
    both empty: Dice and HD95 are NaN (no structure, no score; MONAI's
    ``ignore_empty`` convention); exactly one empty as in ``"dice1_hd0"``.

Orientation: label volumes are ``(Z, Y, X)`` arrays as read from the
prepared store (``original_label``), and the spacing is given in
``(x, y, z)`` order, the order the store and SimpleITK report it in.
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np

# Empty-structure policies understood by :func:`structure_scores`.
EMPTY_POLICIES = ("dice1_hd0", "nan")
DEFAULT_EMPTY_POLICY = "dice1_hd0"
# Label of the row holding the mean over the foreground classes.
MEAN_FG_LABEL = "mean_fg"
# Percentile of the surface distances reported as "HD95".
HD_PERCENTILE = 95.0
# Background label in every label map (never scored).
BACKGROUND = 0
# Voxels kept around the bounding box of a structure pair before scoring, so
# the crop never turns an interior voxel into a surface voxel.
_CROP_MARGIN = 1


def check_policy(policy: str) -> str:
    """Return ``policy`` if it is a known empty-structure policy.

    Raises:
        ValueError: naming the unknown policy and the valid ones.
    """
    if policy not in EMPTY_POLICIES:
        raise ValueError(
            f"unknown empty-structure policy {policy!r}; valid policies are {', '.join(EMPTY_POLICIES)}"
        )
    return policy


def _spacing_zyx(spacing_xyz: Sequence[float], ndim: int) -> tuple[float, ...]:
    """Reverse an ``(x, y, z)`` spacing into array order and validate it."""
    spacing = tuple(float(s) for s in spacing_xyz)
    if len(spacing) != ndim:
        raise ValueError(
            f"spacing_xyz has {len(spacing)} values {spacing} but the label volume has {ndim} axes"
        )
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_xyz must be positive finite millimetres, got {spacing}")
    return spacing[::-1]


def image_diagonal_mm(shape: Sequence[int], spacing_xyz: Sequence[float]) -> float:
    """Diagonal of the image box in mm: ``sqrt(sum((n_i * s_i) ** 2))``.

    Args:
        shape: array shape in ``(Z, Y, X)`` order.
        spacing_xyz: voxel spacing in mm in ``(x, y, z)`` order.
    """
    spacing = _spacing_zyx(spacing_xyz, len(shape))
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def _crop_to_union(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop two masks to the bounding box of their union plus a margin.

    Dice and the surface distances are unchanged: only voxels that are
    background in both masks are removed, and the margin keeps every border
    voxel of the structures next to at least one background voxel.
    """
    union = pred | ref
    slices = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hit = np.flatnonzero(union.any(axis=other))
        lo = max(int(hit[0]) - _CROP_MARGIN, 0)
        hi = min(int(hit[-1]) + 1 + _CROP_MARGIN, union.shape[axis])
        slices.append(slice(lo, hi))
    box = tuple(slices)
    return pred[box], ref[box]


def _as_batch(mask: np.ndarray):
    """``(Z, Y, X)`` bool mask -> ``(1, 1, Z, Y, X)`` float tensor (MONAI's B, C layout)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]


def structure_scores(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing_xyz: Sequence[float],
    policy: str = DEFAULT_EMPTY_POLICY,
) -> dict[str, float | bool]:
    """Dice and HD95 (mm) of one binary structure.

    Args:
        pred: predicted mask, ``(Z, Y, X)`` (any dtype; non-zero is inside).
        ref: reference mask, same shape.
        spacing_xyz: voxel spacing in mm in ``(x, y, z)`` order.
        policy: empty-structure policy, one of :data:`EMPTY_POLICIES`.

    Returns:
        ``{"dice", "hd95", "ref_empty", "pred_empty"}``.
    """
    check_policy(policy)
    pred = np.asarray(pred).astype(bool, copy=False)
    ref = np.asarray(ref).astype(bool, copy=False)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} differs from ref shape {ref.shape}")
    spacing = _spacing_zyx(spacing_xyz, ref.ndim)
    ref_empty, pred_empty = not ref.any(), not pred.any()
    if ref_empty and pred_empty:
        dice, hd95 = (math.nan, math.nan) if policy == "nan" else (1.0, 0.0)
    elif ref_empty or pred_empty:
        dice, hd95 = 0.0, image_diagonal_mm(ref.shape, spacing_xyz)
    else:
        # Imported here so that reading and testing scores (stats) never loads torch.
        from monai.metrics import compute_dice, compute_hausdorff_distance

        p, r = _crop_to_union(pred, ref)
        p_t, r_t = _as_batch(p), _as_batch(r)
        dice = float(compute_dice(p_t, r_t, include_background=True)[0, 0])
        with warnings.catch_warnings():
            # MONAI 1.5+ warns about its own internal use of a deprecated argument.
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai\.")
            hd = compute_hausdorff_distance(
                p_t, r_t, include_background=True, percentile=HD_PERCENTILE, spacing=list(spacing)
            )
        hd95 = float(hd[0, 0])
    return {"dice": dice, "hd95": hd95, "ref_empty": ref_empty, "pred_empty": pred_empty}


def foreground_dice(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> float:
    """Mean Dice over the foreground classes of one volume (no HD95; for validation).

    Scored as :func:`structure_scores` scores Dice under ``"dice1_hd0"``
    (MONAI ``compute_dice`` with ``ignore_empty=False``): a class empty in
    both scores 1, empty in exactly one scores 0.

    Args:
        pred: predicted label map, integer ``(Z, H, W)``.
        ref: reference label map, same shape.
        num_classes: classes including the background (label 0).
    """
    import torch
    from monai.metrics import compute_dice

    pred_t = torch.as_tensor(np.asarray(pred).astype(np.int64))
    ref_t = torch.as_tensor(np.asarray(ref).astype(np.int64))
    if pred_t.shape != ref_t.shape:
        raise ValueError(f"pred shape {tuple(pred_t.shape)} differs from ref shape {tuple(ref_t.shape)}")
    # (1, K, Z, H, W) boolean one-hot: one byte per voxel and class.
    p = torch.stack([pred_t == k for k in range(num_classes)])[None]
    y = torch.stack([ref_t == k for k in range(num_classes)])[None]
    dice = compute_dice(p, y, include_background=False, ignore_empty=False)  # (1, K-1)
    return float(dice.mean())


def case_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing_xyz: Sequence[float],
    label_names: Mapping[int, str],
    regions: Mapping[str, Sequence[int]] | None = None,
    policy: str = DEFAULT_EMPTY_POLICY,
) -> list[dict[str, object]]:
    """Per-class, per-region and mean foreground scores of one case.

    Args:
        pred: predicted label map, integer ``(Z, Y, X)``.
        ref: reference label map, same shape.
        spacing_xyz: voxel spacing in mm in ``(x, y, z)`` order (as
            ``PreparedDataset.original_label`` returns it).
        label_names: ``{label: name}``; label 0 (background) is skipped.
        regions: ``{name: labels}`` scored as the union of those labels
            (BraTS whole tumour, KiTS kidney + tumour, ...); ``None`` = none.
        policy: empty-structure policy, one of :data:`EMPTY_POLICIES`.

    Returns:
        One row per foreground class (``label`` = its name), then one per
        region, then ``label="mean_fg"``: each row holds ``label``, ``dice``,
        ``hd95`` (mm), ``ref_empty``, ``pred_empty``. The ``mean_fg`` row
        averages the foreground *classes* (not the regions) as they were
        scored under ``policy``: with ``"dice1_hd0"`` a class empty in both
        counts as Dice 1 / HD95 0 and a class empty on one side as Dice 0 /
        diagonal; with ``"nan"`` classes empty in both are left out of the
        mean (NaN when every class is). Its ``ref_empty`` / ``pred_empty``
        are true only when every foreground class is empty on that side.
        The caller adds ``patient`` and ``frame``.
    """
    check_policy(policy)
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} differs from ref shape {ref.shape}")
    foreground = {int(k): str(v) for k, v in label_names.items() if int(k) != BACKGROUND}
    if not foreground:
        raise ValueError(f"label_names {dict(label_names)} has no foreground label (0 is background)")
    regions = dict(regions or {})
    clash = set(regions) & (set(foreground.values()) | {MEAN_FG_LABEL})
    if clash:
        raise ValueError(f"region names {sorted(clash)} clash with class names or {MEAN_FG_LABEL!r}")
    for name, members in regions.items():
        unknown = sorted(set(int(m) for m in members) - set(foreground))
        if not members or unknown:
            raise ValueError(
                f"region {name!r} lists labels {list(members)}; unknown {unknown}, "
                f"valid foreground labels are {sorted(foreground)}"
            )

    rows: list[dict[str, object]] = []
    for label, name in sorted(foreground.items()):
        rows.append({"label": name, **structure_scores(pred == label, ref == label, spacing_xyz, policy)})
    class_rows = list(rows)
    for name, members in regions.items():
        labels = [int(m) for m in members]
        scores = structure_scores(np.isin(pred, labels), np.isin(ref, labels), spacing_xyz, policy)
        rows.append({"label": name, **scores})

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN mean under policy "nan"
        mean_dice = float(np.nanmean([r["dice"] for r in class_rows]))
        mean_hd = float(np.nanmean([r["hd95"] for r in class_rows]))
    rows.append(
        {
            "label": MEAN_FG_LABEL,
            "dice": mean_dice,
            "hd95": mean_hd,
            "ref_empty": all(r["ref_empty"] for r in class_rows),
            "pred_empty": all(r["pred_empty"] for r in class_rows),
        }
    )
    return rows
