"""Reading, validating and preprocessing one volume (SimpleITK in, numpy out).

The steps, in order, as nnU-Net does them for a 2-D configuration:

1. read every channel and the label map with SimpleITK, keeping spacing,
   origin and direction; check that they agree (:func:`check_case`);
2. resample in-plane to the target spacing (images linear, labels nearest);
   the slice axis is left untouched, so slices stay the acquired ones;
3. normalise intensities: MR per volume and channel (z-score), CT clipped to
   foreground percentiles of the training cases then normalised with their
   dataset-level mean and standard deviation;
4. crop or pad each slice to ``slice_size`` (a crop never removes labelled
   voxels: it fails instead).

:func:`preprocess_volume` runs steps 2-4 on a raw volume from the parameters a
prepared dataset's manifest stores; :func:`restore_to_grid` undoes the crop/pad
and the resampling of a label map, giving it back on the volume's original grid.
Arrays are numpy ``(Z, Y, X)`` per channel; SimpleITK sizes and spacings are ``(x, y, z)``.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import SimpleITK as sitk

from iac.data.layouts.base import CaseSource, DataError, LayoutInfo

MODALITIES = ("MR", "CT")
# Geometry agreement between channels and label: relative tolerance on spacing,
# absolute tolerance (mm) on origin, absolute tolerance on direction cosines.
SPACING_RTOL = 1e-3
ORIGIN_ATOL_MM = 1e-2
DIRECTION_ATOL = 1e-3
# Spacing differences below this (relative) are treated as equal: no resampling.
RESAMPLE_RTOL = 1e-3
# Guard against division by zero for constant volumes.
STD_FLOOR = 1e-8
# Size of a NIfTI-1 header.
NIFTI1_HEADER_BYTES = 348
# Bytes read at a time when hashing or checking a file.
HASH_CHUNK = 1 << 20


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


# --------------------------------------------------------------------------- reading


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _nifti_expected_bytes(header: bytes) -> int | None:
    """Bytes a NIfTI-1 file must hold (header + voxels), or None when it is not NIfTI-1."""
    if len(header) < NIFTI1_HEADER_BYTES:
        return None
    for order in ("<", ">"):
        if int(np.frombuffer(header[0:4], dtype=f"{order}i4")[0]) == NIFTI1_HEADER_BYTES:
            dims = np.frombuffer(header[40:56], dtype=f"{order}i2")
            bitpix = int(np.frombuffer(header[72:74], dtype=f"{order}i2")[0])
            offset = int(np.frombuffer(header[108:112], dtype=f"{order}f4")[0])
            n = int(np.prod([max(int(d), 1) for d in dims[1 : 1 + max(int(dims[0]), 0)]]))
            return offset + n * bitpix // 8
    return None


def check_complete(path: Path) -> None:
    """Fail for a truncated NIfTI file (ITK pads a truncated file with zeros instead of failing).

    Raises:
        DataError: naming the file when its gzip stream ends early or it holds fewer voxels
            than its header declares.
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                header = f.read(NIFTI1_HEADER_BYTES)
                size = len(header) + sum(len(c) for c in iter(lambda: f.read(HASH_CHUNK), b""))
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise DataError(f"cannot read {path}: truncated or corrupt gzip stream ({err})") from err
    elif name.endswith(".nii"):
        with open(path, "rb") as f:
            header = f.read(NIFTI1_HEADER_BYTES)
        size = path.stat().st_size
    else:
        return
    if name.endswith((".nii", ".nii.gz")):
        expected = _nifti_expected_bytes(header)
        if expected is not None and size < expected:
            raise DataError(f"cannot read {path}: truncated file ({size} of {expected} bytes)")


def read_image(path: Path) -> sitk.Image:
    """Read a medical image with SimpleITK.

    Raises:
        DataError: naming the file when it is missing, unreadable or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file {path}")
    check_complete(path)
    try:
        img = sitk.ReadImage(str(path))
        # Force decoding of the voxel buffer now: truncated files fail here.
        sitk.GetArrayViewFromImage(img)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        reason = first[-1] if first else type(err).__name__
        raise DataError(f"cannot read {path}: unreadable or truncated image file ({reason})") from err
    return img


def _sub_geometry(img: sitk.Image) -> tuple[tuple, tuple, tuple]:
    """Spacing, origin and direction of the first three axes (a 4-D file's spatial part)."""
    d = img.GetDimension()
    direction = np.asarray(img.GetDirection()).reshape(d, d)[:3, :3]
    return tuple(img.GetSpacing()[:3]), tuple(img.GetOrigin()[:3]), tuple(direction.reshape(-1))


def _as_3d(img: sitk.Image, path: Path) -> sitk.Image:
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(f"{path}: expected a scalar image, got {img.GetNumberOfComponentsPerPixel()} components per voxel")
    if img.GetDimension() == 2:
        img = sitk.JoinSeries(img)
    if img.GetDimension() != 3:
        raise DataError(f"{path}: expected a 3-D volume, got a {img.GetDimension()}-D image")
    return img


def load_channels(
    case: CaseSource, channels: Sequence[int] | None = None
) -> list[sitk.Image]:
    """Read a case's image channels as 3-D SimpleITK images.

    Args:
        case: the case; one file per channel, or one 4-D file when ``case.channel_axis_4d``.
        channels: indices of the channels to keep (None: all).

    Raises:
        DataError: naming the file for unreadable, non-scalar or wrongly shaped images.
    """
    if case.channel_axis_4d:
        path = case.images[0]
        img = read_image(path)
        if img.GetDimension() == 3:
            vols = [img]
        elif img.GetDimension() == 4:
            arr = sitk.GetArrayFromImage(img)  # (C, Z, Y, X): the file's last axis holds channels
            spacing, origin, direction = _sub_geometry(img)
            vols = []
            for c in range(arr.shape[0]):
                v = sitk.GetImageFromArray(arr[c])
                v.SetSpacing(spacing)
                v.SetOrigin(origin)
                v.SetDirection(direction)
                vols.append(v)
        else:
            raise DataError(f"{path}: expected a 4-D multi-channel volume, got a {img.GetDimension()}-D image")
    else:
        paths = case.images if channels is None else [case.images[i] for i in channels]
        return [_as_3d(read_image(p), p) for p in paths]
    return vols if channels is None else [vols[i] for i in channels]


def geometry_of(img: sitk.Image) -> dict[str, list]:
    """JSON-able geometry (``size``, ``spacing``, ``origin``, ``direction``) of a 3-D image."""
    return {
        "size": [int(s) for s in img.GetSize()],
        "spacing": [float(s) for s in img.GetSpacing()],
        "origin": [float(o) for o in img.GetOrigin()],
        "direction": [float(d) for d in img.GetDirection()],
    }


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
    label_img = _as_3d(read_image(case.label), case.label)
    ref = vols[0]
    files = case.images if case.channel_axis_4d or channels is None else [case.images[i] for i in channels]
    for i, vol in enumerate(vols[1:], start=1):
        problem = _same_geometry(ref, vol)
        if problem:
            name = case.images[0] if case.channel_axis_4d else files[i]
            raise DataError(f"{name}: channel {i} {problem} ({files[0]})")
    problem = _same_geometry(ref, label_img)
    if problem:
        raise DataError(f"{case.label}: label/image mismatch: label {problem} ({files[0]})")
    labels = label_array(label_img, case.label, info)

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
    digests = tuple(file_digest(Path(p)) for p in (*case.images, case.label))
    return CaseCheck(
        case_id=case.case_id,
        patient=case.patient,
        size=tuple(int(s) for s in ref.GetSize()),
        spacing=tuple(float(s) for s in ref.GetSpacing()),
        digests=digests,
        ct_samples=tuple(samples),
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
    f = sitk.ResampleImageFilter()
    f.SetSize((nx, ny, img.GetSize()[2]))
    f.SetOutputSpacing((float(target[0]), float(target[1]), sz))
    f.SetOutputOrigin(tuple(float(o) for o in origin))
    f.SetOutputDirection(img.GetDirection())
    f.SetInterpolator(interpolator)
    f.SetDefaultPixelValue(0)
    f.SetOutputPixelType(img.GetPixelID())
    return f.Execute(img)


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
    ref = vols[0]
    geometry = geometry_of(ref)
    spacing_xy = ref.GetSpacing()[:2]
    resample = _needs_resampling(spacing_xy, params.target_spacing)
    if resample:
        vols = [_resample_inplane(v, params.target_spacing, sitk.sitkLinear) for v in vols]
        geometry.update(
            resampled_size=[int(s) for s in vols[0].GetSize()[:2]],
            resampled_spacing=[float(s) for s in vols[0].GetSpacing()[:2]],
            resampled_origin=[float(o) for o in vols[0].GetOrigin()],
        )
        if label is not None:
            lab_img = sitk.GetImageFromArray(label)
            lab_img.CopyInformation(ref)
            label = sitk.GetArrayFromImage(_resample_inplane(lab_img, params.target_spacing, sitk.sitkNearestNeighbor))
    geometry["resampled"] = bool(resample)
    chans = [_normalise(sitk.GetArrayViewFromImage(v), params, c) for c, v in enumerate(vols)]
    arr = np.stack(chans)  # (C, Z, Y, X)

    size = params.slice_size
    ny, nx = arr.shape[-2:]
    fg_y = fg_x = None
    if label is not None and label.any():
        ys = np.flatnonzero(label.any(axis=(0, 2)))
        xs = np.flatnonzero(label.any(axis=(0, 1)))
        fg_y, fg_x = (int(ys[0]), int(ys[-1])), (int(xs[0]), int(xs[-1]))
    start = (crop_start(ny, size, fg_y, name, "y"), crop_start(nx, size, fg_x, name, "x"))
    geometry["crop_start"] = list(start)
    geometry["slice_size"] = size
    fill = arr.reshape(arr.shape[0], -1).min(axis=1)  # pad with each channel's minimum
    out = np.stack([_window(arr[c], start, size, float(fill[c])) for c in range(arr.shape[0])])
    out_label = None if label is None else _window(label, start, size, 0)
    return out.astype(np.float32), out_label, geometry


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


def restore_to_grid(label_zhw: np.ndarray, geometry: dict[str, Any]) -> np.ndarray:
    """Put a label map from the preprocessed grid back on the original grid.

    Undoes the crop/pad (voxels outside the window become background) and the
    in-plane resampling (nearest neighbour).

    Args:
        label_zhw: label map ``(Z, H, W)`` on the preprocessed grid.
        geometry: the geometry :func:`preprocess_case` returned (stored per case in the manifest).

    Returns:
        uint8 label map ``(Z, Y, X)`` on the original grid.

    Raises:
        ValueError: when ``label_zhw`` does not match the geometry's slice count or slice size.
    """
    size = int(geometry["slice_size"])
    nx, ny, nz = (int(s) for s in geometry["size"])
    if label_zhw.shape != (nz, size, size):
        raise ValueError(f"label_zhw has shape {label_zhw.shape}, expected {(nz, size, size)} for this geometry")
    if geometry.get("resampled"):
        rx, ry = (int(s) for s in geometry["resampled_size"])
    else:
        rx, ry = nx, ny
    sy, sx = (int(s) for s in geometry["crop_start"])
    # Inverse window: place the slice back at its start, cutting what was padding.
    full = np.zeros((nz, ry, rx), dtype=np.uint8)
    ys, ye = max(sy, 0), min(sy + size, ry)
    xs, xe = max(sx, 0), min(sx + size, rx)
    if ye > ys and xe > xs:
        full[:, ys:ye, xs:xe] = label_zhw[:, ys - sy : ye - sy, xs - sx : xe - sx]
    if not geometry.get("resampled"):
        return full
    img = sitk.GetImageFromArray(full)
    img.SetSpacing((*geometry["resampled_spacing"], geometry["spacing"][2]))
    img.SetOrigin(geometry["resampled_origin"])
    img.SetDirection(geometry["direction"])
    f = sitk.ResampleImageFilter()
    f.SetSize((nx, ny, nz))
    f.SetOutputSpacing(geometry["spacing"])
    f.SetOutputOrigin(geometry["origin"])
    f.SetOutputDirection(geometry["direction"])
    f.SetInterpolator(sitk.sitkNearestNeighbor)
    f.SetDefaultPixelValue(0)
    return sitk.GetArrayFromImage(f.Execute(img)).astype(np.uint8)
