"""Validating one case completely before anything is written.

:func:`check_case` reads every file of a case and refuses it, naming the file,
when a file is missing or unreadable, the images and the label map are not on
one grid, the labels are not integers of the declared set, an intensity is not
finite, or no slice is usable. What it learns (geometry, input digests, CT
foreground samples) comes back as a small :class:`CaseCheck`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from iac.data.io import as_3d, file_digest, load_channels, read_image
from iac.data.layouts.base import CaseSource, DataError, LayoutInfo

# Geometry agreement between channels and label: relative tolerance on spacing,
# absolute tolerance (mm) on origin, absolute tolerance on direction cosines.
SPACING_RTOL = 1e-3
ORIGIN_ATOL_MM = 1e-2
DIRECTION_ATOL = 1e-3


@dataclass(frozen=True)
class CaseCheck:
    """What validating one case learnt (small; returned from worker processes).

    Attributes:
        case_id: the case.
        patient: its patient.
        size: original size ``(x, y, z)``.
        spacing: original spacing ``(x, y, z)`` in mm.
        digests: sha256 of every input file's bytes, images then label.
        ct_samples: per channel, a seeded sample of foreground intensities (CT only), else empty.
    """

    case_id: str
    patient: str
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    digests: tuple[str, ...]
    ct_samples: tuple[np.ndarray, ...] = ()


def _same_geometry(a: sitk.Image, b: sitk.Image) -> str | None:
    """None when ``a`` and ``b`` share one grid, else what differs."""
    if a.GetSize() != b.GetSize():
        return f"size {b.GetSize()} differs from the image's {a.GetSize()}"
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=SPACING_RTOL, atol=0.0):
        return f"spacing {b.GetSpacing()} differs from the image's {a.GetSpacing()}"
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0.0, atol=ORIGIN_ATOL_MM):
        return f"origin {b.GetOrigin()} differs from the image's {a.GetOrigin()}"
    if not np.allclose(a.GetDirection(), b.GetDirection(), rtol=0.0, atol=DIRECTION_ATOL):
        return f"direction {b.GetDirection()} differs from the image's {a.GetDirection()}"
    return None


def label_array(label: sitk.Image, path: Path, info: LayoutInfo) -> np.ndarray:
    """The stored label map ``(Z, Y, X)`` uint8 of a label image, after the layout's label map.

    Raises:
        DataError: naming ``path`` for non-integer values or values outside the declared set.
    """
    raw = sitk.GetArrayFromImage(label)
    if not np.issubdtype(raw.dtype, np.integer):
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            raise DataError(f"{path}: label map holds non-integer values (expected integer labels)")
    values = np.unique(raw).astype(np.int64)
    mapped = np.array([info.label_map.get(int(v), int(v)) for v in values], dtype=np.int64)
    allowed = set(info.label_names)
    bad = [int(v) for v, m in zip(values, mapped) if int(m) not in allowed]
    if bad:
        raise DataError(
            f"{path}: label values {bad} outside the declared set {sorted(allowed)} of {info.name}"
            + (f" (raw values map through {info.label_map})" if info.label_map else "")
        )
    lut_size = int(values.max()) + 1 if values.size else 1
    lut = np.zeros(lut_size, dtype=np.uint8)
    lut[values] = mapped.astype(np.uint8)
    return lut[raw.astype(np.int64)]


def check_case(
    case: CaseSource,
    info: LayoutInfo,
    channels: Sequence[int] | None = None,
    ct_samples_per_case: int = 0,
) -> CaseCheck:
    """Validate one case completely before anything is written.

    Checks: every file present and readable, images and label on one grid,
    integer labels within the declared set, finite intensities, at least one
    usable (non-constant) slice.

    Args:
        case: the case as the layout found it.
        info: the layout's label and channel declaration.
        channels: channel indices to keep (None: all).
        ct_samples_per_case: foreground intensities sampled per channel for CT statistics (0: none).

    Returns:
        The case's geometry, input digests and CT samples.

    Raises:
        DataError: naming the offending file and the problem.
    """
    if case.label is None:
        raise DataError(f"no label file for image {case.images[0]} (case {case.case_id})")
    if not Path(case.label).exists():
        raise DataError(f"missing label file {case.label} for image {case.images[0]}")
    vols = load_channels(case, channels)
    label_img = as_3d(read_image(case.label), case.label)
    ref = vols[0]
    files = case.images if case.channel_axis_4d or channels is None else [case.images[i] for i in channels]
    _check_one_grid(case, vols, label_img, files)
    labels = label_array(label_img, case.label, info)
    samples = _check_intensities(case, vols, labels, files, ct_samples_per_case)
    digests = tuple(file_digest(Path(p)) for p in (*case.images, case.label))
    return CaseCheck(
        case_id=case.case_id,
        patient=case.patient,
        size=tuple(int(s) for s in ref.GetSize()),
        spacing=tuple(float(s) for s in ref.GetSpacing()),
        digests=digests,
        ct_samples=tuple(samples),
    )


def _check_one_grid(case: CaseSource, vols: list[sitk.Image], label_img: sitk.Image, files: Sequence[Path]) -> None:
    """Refuse channels or a label map that are not on the first channel's grid.

    Raises:
        DataError: naming the channel's or the label's file and what differs.
    """
    ref = vols[0]
    for i, vol in enumerate(vols[1:], start=1):
        problem = _same_geometry(ref, vol)
        if problem:
            name = case.images[0] if case.channel_axis_4d else files[i]
            raise DataError(f"{name}: channel {i} {problem} ({files[0]})")
    problem = _same_geometry(ref, label_img)
    if problem:
        raise DataError(f"{case.label}: label/image mismatch: label {problem} ({files[0]})")


def _check_intensities(
    case: CaseSource,
    vols: list[sitk.Image],
    labels: np.ndarray,
    files: Sequence[Path],
    ct_samples_per_case: int,
) -> list[np.ndarray]:
    """Refuse non-finite intensities or a volume without a usable slice; sample CT foreground.

    Args:
        case: the case (its id seeds the sampling).
        vols: one 3-D image per channel.
        labels: the stored label map ``(Z, Y, X)``; its foreground is sampled.
        files: the channels' files, for error messages.
        ct_samples_per_case: foreground intensities sampled per channel (0: none).

    Returns:
        Per channel, the sampled foreground intensities (empty when not sampling).

    Raises:
        DataError: naming the file with NaN/Inf intensities, or the first file when
            every slice has constant intensity.
    """
    samples = []
    fg = labels > 0
    usable = np.zeros(labels.shape[0], dtype=bool)
    for i, vol in enumerate(vols):
        arr = sitk.GetArrayViewFromImage(vol)
        name = case.images[0] if case.channel_axis_4d else files[i]
        finite = np.isfinite(arr)
        if not finite.all():
            raise DataError(f"{name}: {int((~finite).sum())} NaN/Inf intensities (expected finite values)")
        flat = arr.reshape(arr.shape[0], -1)
        usable |= flat.max(axis=1) > flat.min(axis=1)
        if ct_samples_per_case > 0:
            vals = arr[fg]
            rng = np.random.default_rng(zlib.crc32(case.case_id.encode()))
            if vals.size > ct_samples_per_case:
                vals = rng.choice(vals, size=ct_samples_per_case, replace=False)
            samples.append(np.asarray(vals, dtype=np.float32))
    if not usable.any():
        raise DataError(f"{files[0]}: no usable slices (every slice has constant intensity)")
    return samples
