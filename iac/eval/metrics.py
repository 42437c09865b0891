"""Per-case, per-structure Dice, HD95 and normalised surface Dice (millimetres) with MONAI.

The scores themselves come from :func:`monai.metrics.compute_dice`,
:func:`monai.metrics.compute_hausdorff_distance` (``percentile=95``, voxel
spacing in mm) and :func:`monai.metrics.compute_surface_dice` (NSD: the share
of both surfaces within a tolerance ``tau`` in mm of the other, surface
elements weighted by their area, ``use_subvoxels=True``, as in Nikolov et
al.'s original). What MONAI leaves undefined, a structure that is empty in the
reference, the prediction or both, is settled here by a named
*empty-structure policy*, so that every row of ``per_case.csv`` says how it
got its scores (``ref_empty``, ``pred_empty``).

Policies (:data:`EMPTY_POLICIES`):

``"dice1_hd0"`` (default)
    both empty: Dice 1, HD95 0, NSD 1 (the prediction is right);
    exactly one empty: Dice 0, NSD 0, HD95 = the image diagonal in mm (the
    worst distance the image allows).
``"nan"``
    reference empty: Dice, HD95 and NSD are NaN whatever was predicted
    (MONAI's ``ignore_empty=True``: a structure that is not there has no
    overlap score), so which cases are scored depends on the reference
    alone, never on a method; a false positive on an empty reference is
    recorded by ``ref_empty`` / ``pred_empty`` (``stats`` compares those
    separately). Prediction empty, reference not: as in ``"dice1_hd0"``.

Orientation: label volumes are ``(Z, Y, X)`` arrays as read from the
prepared store (``original_label``), and the spacing is given in
``(x, y, z)`` order, the order the store and SimpleITK report it in.
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np

from iac.config import DEFAULT_NSD_TOLERANCE_MM  # NSD tolerance tau in mm of a structure without its own
from iac.config import EMPTY_POLICIES  # empty-structure policies understood by :func:`structure_scores`

DEFAULT_EMPTY_POLICY = "dice1_hd0"
# Label of the row holding the mean over the foreground classes.
MEAN_FG_LABEL = "mean_fg"
# The scores of every row, in column order.
SCORES = ("dice", "hd95", "nsd")
# Percentile of the surface distances reported as "HD95".
HD_PERCENTILE = 95.0
# NSD weighs surface elements by their area (MONAI use_subvoxels=True): with
# anisotropic voxels a boundary voxel's share of the surface depends on its face.
NSD_SUBVOXELS = True
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


def _empty_scores(ref_empty: bool, pred_empty: bool, policy: str, diagonal: float) -> tuple[float, float, float]:
    """``(dice, hd95, nsd)`` of a structure empty on at least one side, under ``policy``."""
    if policy == "nan" and ref_empty:
        return math.nan, math.nan, math.nan  # depends on the reference only
    if ref_empty and pred_empty:
        return 1.0, 0.0, 1.0
    return 0.0, diagonal, 0.0


def _monai_scores(pred: np.ndarray, ref: np.ndarray, spacing_zyx: tuple[float, ...], tolerance_mm: float):
    """``(dice, hd95, nsd)`` of two non-empty masks with MONAI (cropped to their union first)."""
    # Imported here so that reading and testing scores (stats) never loads torch.
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    p, r = _crop_to_union(pred, ref)
    p_t, r_t = _as_batch(p), _as_batch(r)
    dice = float(compute_dice(p_t, r_t, include_background=True)[0, 0])
    with warnings.catch_warnings():
        # MONAI 1.5+ warns about its own internal use of a deprecated argument.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"monai\.")
        hd = compute_hausdorff_distance(
            p_t, r_t, include_background=True, percentile=HD_PERCENTILE, spacing=list(spacing_zyx)
        )
        nsd = compute_surface_dice(
            p_t, r_t, [float(tolerance_mm)], include_background=True, spacing=list(spacing_zyx),
            use_subvoxels=NSD_SUBVOXELS,
        )
    return dice, float(hd[0, 0]), float(nsd[0, 0])


def structure_scores(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing_xyz: Sequence[float],
    policy: str = DEFAULT_EMPTY_POLICY,
    nsd_tolerance_mm: float = DEFAULT_NSD_TOLERANCE_MM,
) -> dict[str, float | bool]:
    """Dice, HD95 (mm) and normalised surface Dice of one binary structure.

    Args:
        pred: predicted mask, ``(Z, Y, X)`` (any dtype; non-zero is inside).
        ref: reference mask, same shape.
        spacing_xyz: voxel spacing in mm in ``(x, y, z)`` order.
        policy: empty-structure policy, one of :data:`EMPTY_POLICIES`.
        nsd_tolerance_mm: the NSD tolerance tau in mm (> 0).

    Returns:
        ``{"dice", "hd95", "nsd", "ref_empty", "pred_empty"}``.
    """
    check_policy(policy)
    if not (isinstance(nsd_tolerance_mm, (int, float)) and math.isfinite(nsd_tolerance_mm) and nsd_tolerance_mm > 0):
        raise ValueError(f"nsd_tolerance_mm must be a positive finite distance in mm, got {nsd_tolerance_mm!r}")
    pred = np.asarray(pred).astype(bool, copy=False)
    ref = np.asarray(ref).astype(bool, copy=False)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} differs from ref shape {ref.shape}")
    spacing = _spacing_zyx(spacing_xyz, ref.ndim)
    ref_empty, pred_empty = not ref.any(), not pred.any()
    if ref_empty or pred_empty:
        dice, hd95, nsd = _empty_scores(ref_empty, pred_empty, policy, image_diagonal_mm(ref.shape, spacing_xyz))
    else:
        dice, hd95, nsd = _monai_scores(pred, ref, spacing, nsd_tolerance_mm)
    return {"dice": dice, "hd95": hd95, "nsd": nsd, "ref_empty": ref_empty, "pred_empty": pred_empty}


def nsd_tolerances(
    names: Sequence[str], default_mm: float = DEFAULT_NSD_TOLERANCE_MM, per_name: Mapping[str, float] | None = None
) -> dict[str, float]:
    """The NSD tolerance of every class and region name: its own where given, else ``default_mm``.

    Raises:
        ValueError: naming ``nsd_class_tolerance_mm`` when it lists a name that is
            neither a class nor a region (with the valid names).
    """
    per_name = dict(per_name or {})
    unknown = sorted(set(per_name) - set(names))
    if unknown:
        raise ValueError(
            f"nsd_class_tolerance_mm names {unknown}, which are not classes or regions of this dataset; "
            f"valid names: {', '.join(names)}"
        )
    return {name: float(per_name.get(name, default_mm)) for name in names}


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
    nsd_tolerance_mm: float | Mapping[str, float] = DEFAULT_NSD_TOLERANCE_MM,
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
        nsd_tolerance_mm: NSD tolerance in mm for every structure, or
            ``{name: mm}`` for every class and region name (see :func:`nsd_tolerances`).

    Returns:
        One row per foreground class (``label`` = its name), then one per
        region, then ``label="mean_fg"``: each row holds ``label``, ``dice``,
        ``hd95`` (mm), ``nsd``, ``ref_empty``, ``pred_empty``. The ``mean_fg``
        row averages the foreground *classes* (not the regions) as they were
        scored under ``policy``: with ``"dice1_hd0"`` a class empty in both
        counts as Dice 1 / HD95 0 / NSD 1 and a class empty on one side as
        Dice 0 / diagonal / NSD 0; with ``"nan"`` classes with an empty
        reference are left out of the mean (NaN when every class has one).
        Its ``ref_empty`` / ``pred_empty`` are true only when every foreground
        class is empty on that side. The caller adds ``patient`` and ``frame``.
    """
    check_policy(policy)
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"pred shape {pred.shape} differs from ref shape {ref.shape}")
    structures, n_classes = _structures(label_names, regions)
    if isinstance(nsd_tolerance_mm, Mapping):
        tolerance = nsd_tolerances(list(structures), per_name=nsd_tolerance_mm)
    else:
        tolerance = nsd_tolerances(list(structures), float(nsd_tolerance_mm))
    rows: list[dict[str, object]] = []
    for name, labels in structures.items():
        scores = structure_scores(np.isin(pred, labels), np.isin(ref, labels), spacing_xyz, policy, tolerance[name])
        rows.append({"label": name, **scores})
    rows.append(_mean_row(rows[:n_classes]))
    return rows


def _structures(
    label_names: Mapping[int, str], regions: Mapping[str, Sequence[int]] | None
) -> tuple[dict[str, list[int]], int]:
    """``({name: labels}, number of classes)``: the foreground classes in label order, then the regions.

    Raises:
        ValueError: no foreground label, a region name that clashes, a region
            listing no or unknown labels.
    """
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
    structures = {name: [label] for label, name in sorted(foreground.items())}
    structures.update({name: [int(m) for m in members] for name, members in regions.items()})
    return structures, len(foreground)


def _mean_row(class_rows: list[dict[str, object]]) -> dict[str, object]:
    """The ``mean_fg`` row: scores averaged over the classes (NaN left out), flags true when true for every class."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN mean under policy "nan"
        means = {k: float(np.nanmean([r[k] for r in class_rows])) for k in SCORES}
    return {
        "label": MEAN_FG_LABEL,
        **means,
        "ref_empty": all(r["ref_empty"] for r in class_rows),
        "pred_empty": all(r["pred_empty"] for r in class_rows),
    }
