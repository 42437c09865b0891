"""Preprocessing one volume as the prepared dataset was (SimpleITK in, numpy out).

The steps, in order, as nnU-Net does them for a 2-D configuration:

1. read every channel and the label map with SimpleITK, keeping spacing,
   origin and direction (:mod:`iac.data.io`); check that they agree
   (:func:`iac.data.check.check_case`);
2. resample in-plane to the target spacing (images linear, labels nearest);
   the slice axis is left untouched, so slices stay the acquired ones;
3. normalise intensities: MR per volume and channel (z-score), CT clipped to
   foreground percentiles of the training cases then normalised with their
   dataset-level mean and standard deviation;
4. crop or pad each slice to ``slice_size`` (a crop never removes labelled
   voxels: it fails instead).

:func:`preprocess_volume` runs steps 2-4 on a raw volume from the parameters a
prepared dataset's manifest stores. Predictions go back to the volume's original
grid by :func:`restore_probabilities` (class probabilities: inverse crop/pad,
linear resampling, then argmax, as nnU-Net does) or :func:`restore_to_grid`
(a hard label map, nearest neighbour); :func:`to_prepared_grid` carries a float
map the other way.
Arrays are numpy ``(Z, Y, X)`` per channel; SimpleITK sizes and spacings are ``(x, y, z)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from iac.data.io import geometry_of
from iac.data.layouts.base import DataError

MODALITIES = ("MR", "CT")
# Spacing differences below this (relative) are treated as equal: no resampling.
RESAMPLE_RTOL = 1e-3
# Guard against division by zero for constant volumes.
STD_FLOOR = 1e-8
# Label of the background class (what lies outside the preprocessing window).
BACKGROUND = 0


@dataclass(frozen=True)
class PreprocessParams:
    """Everything needed to preprocess a raw volume as the prepared dataset was.

    Attributes:
        target_spacing: in-plane spacing ``(x, y)`` in mm.
        slice_size: side of the square slices in pixels.
        modality: ``MR`` (per-volume z-score) or ``CT`` (clip + dataset statistics).
        channel_names: channel names in stored order.
        label_map: raw label value -> stored value (empty: identity).
        ct_clip: per channel ``(low, high)`` intensity clip values (CT only).
        ct_mean: per channel mean after clipping (CT only).
        ct_std: per channel standard deviation after clipping (CT only).
    """

    target_spacing: tuple[float, float]
    slice_size: int
    modality: str = "MR"
    channel_names: tuple[str, ...] = ("image",)
    label_map: dict[int, int] = field(default_factory=dict)
    ct_clip: tuple[tuple[float, float], ...] = ()
    ct_mean: tuple[float, ...] = ()
    ct_std: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (label map keys as strings)."""
        d = asdict(self)
        d["target_spacing"] = list(self.target_spacing)
        d["channel_names"] = list(self.channel_names)
        d["label_map"] = {str(k): int(v) for k, v in self.label_map.items()}
        d["ct_clip"] = [list(c) for c in self.ct_clip]
        d["ct_mean"] = list(self.ct_mean)
        d["ct_std"] = list(self.ct_std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessParams":
        """Inverse of :meth:`to_dict`."""
        return cls(
            target_spacing=tuple(float(s) for s in d["target_spacing"]),
            slice_size=int(d["slice_size"]),
            modality=str(d["modality"]),
            channel_names=tuple(d["channel_names"]),
            label_map={int(k): int(v) for k, v in d.get("label_map", {}).items()},
            ct_clip=tuple((float(a), float(b)) for a, b in d.get("ct_clip", [])),
            ct_mean=tuple(float(m) for m in d.get("ct_mean", [])),
            ct_std=tuple(float(s) for s in d.get("ct_std", [])),
        )


# --------------------------------------------------------------------------- statistics and sizes


def ct_statistics(
    samples: Sequence[Sequence[np.ndarray]], percentiles: tuple[float, float]
) -> tuple[tuple[tuple[float, float], ...], tuple[float, ...], tuple[float, ...]]:
    """Dataset-level CT clip values, mean and std from training foreground samples (nnU-Net).

    Args:
        samples: per case, per channel foreground intensity samples.
        percentiles: lower and upper clip percentiles.

    Returns:
        ``(clip per channel, mean per channel, std per channel)``.

    Raises:
        DataError: when no training case has foreground voxels.
    """
    n_ch = len(samples[0]) if samples else 0
    clips, means, stds = [], [], []
    for c in range(n_ch):
        vals = np.concatenate([s[c] for s in samples]) if samples else np.empty(0)
        if vals.size == 0:
            raise DataError("CT normalisation needs foreground voxels in the training cases; none have any")
        lo, hi = np.percentile(vals, percentiles)
        clipped = np.clip(vals, lo, hi)
        clips.append((float(lo), float(hi)))
        means.append(float(clipped.mean()))
        stds.append(float(max(clipped.std(), STD_FLOOR)))
    return tuple(clips), tuple(means), tuple(stds)


def resampled_size(size_xy: Sequence[int], spacing_xy: Sequence[float], target: Sequence[float]) -> tuple[int, int]:
    """In-plane size ``(x, y)`` after resampling to ``target`` spacing (extent preserved)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(size_xy, spacing_xy, target))


def derive_slice_size(extents: Sequence[int], multiple: int) -> int:
    """Largest in-plane extent rounded up to a multiple of ``multiple``."""
    largest = max(extents)
    return int(-(-largest // multiple) * multiple)


# --------------------------------------------------------------------------- preprocessing


def _needs_resampling(spacing_xy: Sequence[float], target: Sequence[float]) -> bool:
    return not np.allclose(spacing_xy, target, rtol=RESAMPLE_RTOL, atol=0.0)


def _resample(
    img: sitk.Image,
    grid: tuple[Sequence[int], Sequence[float], Sequence[float], Sequence[float]],
    interpolator: int,
    default: float = 0.0,
) -> sitk.Image:
    """Resample ``img`` onto ``grid`` = ``(size, spacing, origin, direction)`` (SimpleITK order)."""
    size, spacing, origin, direction = grid
    f = sitk.ResampleImageFilter()
    f.SetSize(tuple(int(s) for s in size))
    f.SetOutputSpacing(tuple(float(s) for s in spacing))
    f.SetOutputOrigin(tuple(float(o) for o in origin))
    f.SetOutputDirection(tuple(float(d) for d in direction))
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(float(default))
    f.SetOutputPixelType(img.GetPixelID())
    return f.Execute(img)


def _resample_inplane(img: sitk.Image, target: Sequence[float], interpolator: int) -> sitk.Image:
    """Resample ``img`` to ``target`` in-plane spacing; z spacing and slice positions unchanged.

    The new grid covers the same physical extent (corner-aligned), as
    ``resampled_size`` computes it.
    """
    sx, sy, sz = img.GetSpacing()
    nx, ny = resampled_size(img.GetSize()[:2], (sx, sy), target)
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    shift = np.array([(target[0] - sx) / 2, (target[1] - sy) / 2, 0.0])  # index-space corner alignment
    origin = np.asarray(img.GetOrigin()) + direction @ shift
    grid = ((nx, ny, img.GetSize()[2]), (target[0], target[1], sz), origin, img.GetDirection())
    return _resample(img, grid, interpolator)


def _normalise(arr: np.ndarray, params: PreprocessParams, channel: int) -> np.ndarray:
    """Normalise one channel ``(Z, Y, X)``; float32 out."""
    arr = arr.astype(np.float32)
    if params.modality == "CT":
        lo, hi = params.ct_clip[channel]
        arr = np.clip(arr, lo, hi)
        return (arr - params.ct_mean[channel]) / params.ct_std[channel]
    return (arr - arr.mean()) / max(float(arr.std()), STD_FLOOR)


def crop_start(extent: int, size: int, fg: tuple[int, int] | None, name: str, axis: str) -> int:
    """Start index of the ``size`` window along one in-plane axis of length ``extent``.

    Negative starts pad. Without foreground the window is centred; with a
    foreground span ``(first, last)`` it is centred but shifted to keep the span.

    Raises:
        DataError: when the foreground span is longer than ``size``.
    """
    start = (extent - size) // 2
    if extent <= size or fg is None:
        return start
    first, last = fg
    if last - first + 1 > size:
        raise DataError(
            f"{name}: cropping to slice size {size} would remove labelled voxels "
            f"(labels span {last - first + 1} pixels along {axis}); use a slice size >= {last - first + 1} "
            "or leave it unset to derive it from the data"
        )
    return int(min(max(start, last - size + 1), first))


def _window(arr: np.ndarray, start: tuple[int, int], size: int, fill: float) -> np.ndarray:
    """Crop/pad the last two axes of ``arr`` (..., Y, X) to (..., size, size) from ``start`` (y, x)."""
    out = np.full(arr.shape[:-2] + (size, size), fill, dtype=arr.dtype)
    sy, sx = start
    ny, nx = arr.shape[-2:]
    ys, ye = max(sy, 0), min(sy + size, ny)
    xs, xe = max(sx, 0), min(sx + size, nx)
    if ye > ys and xe > xs:
        out[..., ys - sy : ye - sy, xs - sx : xe - sx] = arr[..., ys:ye, xs:xe]
    return out


def preprocess_case(
    images: sitk.Image | list[sitk.Image],
    params: PreprocessParams,
    label: np.ndarray | None = None,
    name: str = "volume",
) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Preprocess a volume and (optionally) its stored label map on the same grid.

    Args:
        images: one 3-D image per channel (all on one grid).
        params: preprocessing parameters.
        label: the stored label map ``(Z, Y, X)`` uint8 on the original grid, or None.
        name: file name used in error messages.

    Returns:
        ``(image (C, Z, H, W) float32, label (Z, H, W) uint8 or None, geometry)`` where
        ``geometry`` (JSON-able) lets :func:`restore_to_grid` undo the steps.

    Raises:
        DataError: for a channel count that does not match ``params``, or a crop removing labels.
    """
    vols = [images] if isinstance(images, sitk.Image) else list(images)
    if len(vols) != len(params.channel_names):
        raise DataError(
            f"{name}: got {len(vols)} channel(s), the parameters expect {len(params.channel_names)} "
            f"({', '.join(params.channel_names)})"
        )
    geometry = geometry_of(vols[0])
    vols, label, resampling = _resample_case(vols, label, params.target_spacing)
    geometry.update(resampling)
    chans = [_normalise(sitk.GetArrayViewFromImage(v), params, c) for c, v in enumerate(vols)]
    arr = np.stack(chans)  # (C, Z, Y, X)

    size = params.slice_size
    ny, nx = arr.shape[-2:]
    fg_y, fg_x = _foreground_span(label)
    start = (crop_start(ny, size, fg_y, name, "y"), crop_start(nx, size, fg_x, name, "x"))
    geometry["crop_start"] = list(start)
    geometry["slice_size"] = size
    fill = arr.reshape(arr.shape[0], -1).min(axis=1)  # pad with each channel's minimum
    out = np.stack([_window(arr[c], start, size, float(fill[c])) for c in range(arr.shape[0])])
    out_label = None if label is None else _window(label, start, size, 0)
    return out.astype(np.float32), out_label, geometry


def _resample_case(
    vols: list[sitk.Image], label: np.ndarray | None, target: Sequence[float]
) -> tuple[list[sitk.Image], np.ndarray | None, dict[str, Any]]:
    """Resample every channel (linear) and the label map (nearest) in-plane to ``target``.

    Args:
        vols: one 3-D image per channel, all on the first one's grid.
        label: the stored label map ``(Z, Y, X)`` on that grid, or None.
        target: in-plane spacing ``(x, y)`` in mm.

    Returns:
        ``(channels, label, geometry entries)``; nothing is resampled when the
        spacing already matches, and the entries then only say ``resampled: False``.
    """
    ref = vols[0]
    resample = _needs_resampling(ref.GetSpacing()[:2], target)
    if not resample:
        return vols, label, {"resampled": False}
    vols = [_resample_inplane(v, target, sitk.sitkLinear) for v in vols]
    if label is not None:
        lab_img = sitk.GetImageFromArray(label)
        lab_img.CopyInformation(ref)
        label = sitk.GetArrayFromImage(_resample_inplane(lab_img, target, sitk.sitkNearestNeighbor))
    entries = {
        "resampled_size": [int(s) for s in vols[0].GetSize()[:2]],
        "resampled_spacing": [float(s) for s in vols[0].GetSpacing()[:2]],
        "resampled_origin": [float(o) for o in vols[0].GetOrigin()],
        "resampled": True,
    }
    return vols, label, entries


def _foreground_span(label: np.ndarray | None) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """First and last labelled row ``(y)`` and column ``(x)`` of a label map ``(Z, Y, X)``; None without labels."""
    if label is None or not label.any():
        return None, None
    ys = np.flatnonzero(label.any(axis=(0, 2)))
    xs = np.flatnonzero(label.any(axis=(0, 1)))
    return (int(ys[0]), int(ys[-1])), (int(xs[0]), int(xs[-1]))


def preprocess_volume(
    image: sitk.Image | list[sitk.Image], params: PreprocessParams | dict[str, Any]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Preprocess a raw volume as a prepared dataset was (no label: centred crop).

    Args:
        image: one 3-D SimpleITK image per channel, or a single image.
        params: :class:`PreprocessParams` or its dict form (the manifest's ``preprocessing``).

    Returns:
        ``(array (C, Z, H, W) float32, geometry)`` for :func:`restore_to_grid`.
    """
    if isinstance(params, dict):
        params = PreprocessParams.from_dict(params)
    arr, _, geometry = preprocess_case(image, params)
    return arr, geometry


# --------------------------------------------------------------------------- back to the original grid
#
# Preprocessing resamples in-plane only, so every slice maps to the slice of the
# same index; a run of slices starting at ``first_slice`` is restored with both
# grids' origins moved by ``first_slice`` slices (evaluation restores a case a
# few slices at a time to bound the memory the class probabilities take).


def _grids(geometry: dict[str, Any], n_slices: int, first_slice: int) -> tuple[tuple, tuple]:
    """``(resampled grid, original grid)`` of ``n_slices`` slices from ``first_slice``.

    Each grid is ``(size, spacing, origin, direction)`` in SimpleITK order; the
    resampled grid is the original one when the case was not resampled.
    """
    nx, ny, _ = (int(s) for s in geometry["size"])
    spacing, direction = list(geometry["spacing"]), list(geometry["direction"])
    shift = np.asarray(direction).reshape(3, 3) @ np.array([0.0, 0.0, first_slice * spacing[2]])
    origin = np.asarray(geometry["origin"], dtype=float) + shift
    original = ((nx, ny, n_slices), spacing, origin, direction)
    if not geometry.get("resampled"):
        return original, original
    rx, ry = (int(s) for s in geometry["resampled_size"])
    r_origin = np.asarray(geometry["resampled_origin"], dtype=float) + shift
    resampled = ((rx, ry, n_slices), [*geometry["resampled_spacing"], spacing[2]], r_origin, direction)
    return resampled, original


def _unwindow(arr: np.ndarray, geometry: dict[str, Any], shape_yx: tuple[int, int], fill: float) -> np.ndarray:
    """Inverse of :func:`_window`: ``(Z, size, size)`` -> ``(Z, Y, X)``; what was padding is cut, the rest ``fill``."""
    size = int(geometry["slice_size"])
    sy, sx = (int(s) for s in geometry["crop_start"])
    ry, rx = shape_yx
    full = np.full((arr.shape[0], ry, rx), fill, dtype=arr.dtype)
    ys, ye = max(sy, 0), min(sy + size, ry)
    xs, xe = max(sx, 0), min(sx + size, rx)
    if ye > ys and xe > xs:
        full[:, ys:ye, xs:xe] = arr[:, ys - sy : ye - sy, xs - sx : xe - sx]
    return full


def _check_slices(shape: tuple[int, ...], geometry: dict[str, Any], first_slice: int, what: str) -> None:
    """Refuse a ``(Z, H, W)`` stack that does not fit the geometry's slice size and slice count."""
    size, nz = int(geometry["slice_size"]), int(geometry["size"][2])
    if len(shape) != 3 or shape[1:] != (size, size) or not 0 <= first_slice <= nz - shape[0] or shape[0] < 1:
        raise ValueError(
            f"{what} has shape {shape} from slice {first_slice}; this geometry has {nz} slices of {size}x{size}"
        )


def restore_to_grid(label_zhw: np.ndarray, geometry: dict[str, Any]) -> np.ndarray:
    """Put a label map from the preprocessed grid back on the original grid (nearest neighbour).

    Undoes the crop/pad (voxels outside the window become background) and the
    in-plane resampling of a hard label map. :func:`restore_probabilities`
    restores class probabilities instead, which is what evaluation and the
    pyfunc model use.

    Args:
        label_zhw: label map ``(Z, H, W)`` on the preprocessed grid.
        geometry: the geometry :func:`preprocess_case` returned (stored per case in the manifest).

    Returns:
        uint8 label map ``(Z, Y, X)`` on the original grid.

    Raises:
        ValueError: when ``label_zhw`` does not match the geometry's slice count or slice size.
    """
    label_zhw = np.asarray(label_zhw)
    expected = (int(geometry["size"][2]), int(geometry["slice_size"]), int(geometry["slice_size"]))
    if label_zhw.shape != expected:
        raise ValueError(f"label_zhw has shape {label_zhw.shape}, expected {expected} for this geometry")
    resampled, original = _grids(geometry, label_zhw.shape[0], 0)
    full = _unwindow(label_zhw.astype(np.uint8), geometry, tuple(resampled[0][1::-1]), 0)
    if not geometry.get("resampled"):
        return full
    img = _grid_image(full, resampled)
    return sitk.GetArrayFromImage(_resample(img, original, sitk.sitkNearestNeighbor)).astype(np.uint8)


def restore_probabilities(probs_kzhw: np.ndarray, geometry: dict[str, Any], first_slice: int = 0) -> np.ndarray:
    """Label map on the original grid from class probabilities on the preprocessed grid (nnU-Net's way).

    Each class's probability map is put back through the inverse crop/pad
    (outside the window: background probability 1, the others 0), resampled
    linearly onto the original grid, and the label is the argmax there (ties
    go to the lower label). Restoring the argmax instead (:func:`restore_to_grid`)
    loses what the probabilities say between the coarser grid's voxels, which
    is what costs Dice on cases finer than the prepared spacing.

    Args:
        probs_kzhw: probabilities (or any per-class scores whose argmax is the
            label) ``(K, Z, H, W)``, for ``Z`` slices of the case from ``first_slice``.
        geometry: the case's geometry (see :func:`preprocess_case`).
        first_slice: index of the first of the ``Z`` slices in the case.

    Returns:
        uint8 label map ``(Z, Y, X)`` for those slices on the original grid.

    Raises:
        ValueError: when the slices do not fit the geometry.
    """
    probs = np.asarray(probs_kzhw, dtype=np.float32)
    if probs.ndim != 4:
        raise ValueError(f"probs_kzhw must be (K, Z, H, W), got shape {probs.shape}")
    _check_slices(probs.shape[1:], geometry, first_slice, "probs_kzhw")
    resampled, original = _grids(geometry, probs.shape[1], first_slice)
    best = labels = None
    for k in range(probs.shape[0]):
        fill = 1.0 if k == BACKGROUND else 0.0  # outside the window and the image: background
        full = _unwindow(probs[k], geometry, tuple(resampled[0][1::-1]), fill)
        if geometry.get("resampled"):
            full = sitk.GetArrayFromImage(_resample(_grid_image(full, resampled), original, sitk.sitkLinear, fill))
        if best is None:
            best, labels = full, np.zeros(full.shape, dtype=np.uint8)
            continue
        better = full > best  # strictly: a tie keeps the lower label, as np.argmax does
        best[better] = full[better]
        labels[better] = k
    return labels


def to_prepared_grid(volume_zyx: np.ndarray, geometry: dict[str, Any], fill: float = 0.0) -> np.ndarray:
    """A float map on a case's original grid carried to its preprocessed grid (linear, then crop/pad).

    The forward twin of :func:`restore_probabilities` for one class's map: the
    soft oracle of :mod:`iac.eval.oracle` carries the one-hot reference this way.

    Args:
        volume_zyx: ``(Z, Y, X)`` map on the original grid.
        geometry: the case's geometry.
        fill: value outside the original image (padding of the window).

    Returns:
        float32 ``(Z, H, W)`` on the preprocessed grid.
    """
    vol = np.asarray(volume_zyx, dtype=np.float32)
    nx, ny, nz = (int(s) for s in geometry["size"])
    if vol.shape != (nz, ny, nx):
        raise ValueError(f"volume_zyx has shape {vol.shape}, expected {(nz, ny, nx)} for this geometry")
    resampled, original = _grids(geometry, nz, 0)
    if geometry.get("resampled"):
        vol = sitk.GetArrayFromImage(_resample(_grid_image(vol, original), resampled, sitk.sitkLinear, fill))
    size = int(geometry["slice_size"])
    return _window(vol, tuple(int(s) for s in geometry["crop_start"]), size, fill)


def _grid_image(arr: np.ndarray, grid: tuple) -> sitk.Image:
    """``arr`` ``(Z, Y, X)`` as a SimpleITK image placed on ``grid`` = ``(size, spacing, origin, direction)``."""
    img = sitk.GetImageFromArray(arr)
    _, spacing, origin, direction = grid
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(o) for o in origin))
    img.SetDirection(tuple(float(d) for d in direction))
    return img
