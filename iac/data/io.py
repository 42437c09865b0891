"""Reading medical images with SimpleITK, and checking that their files are whole.

A case's image channels are read as 3-D SimpleITK images (one file per channel,
or one 4-D file whose last axis holds the channels); a truncated NIfTI file is
refused before ITK can pad it with zeros. :func:`file_digest` hashes a file's
bytes for the prepared dataset's fingerprint. SimpleITK sizes and spacings are
``(x, y, z)``; arrays taken from the images are numpy ``(Z, Y, X)``.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from iac.data.layouts.base import CaseSource, DataError

# Size of a NIfTI-1 header.
NIFTI1_HEADER_BYTES = 348
# Bytes read at a time when hashing or checking a file.
HASH_CHUNK = 1 << 20


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


def as_3d(img: sitk.Image, path: Path) -> sitk.Image:
    """A scalar 2-D or 3-D image as a 3-D volume (a 2-D image becomes one slice).

    Raises:
        DataError: naming ``path`` for a multi-component or higher-dimensional image.
    """
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
        return [as_3d(read_image(p), p) for p in paths]
    return vols if channels is None else [vols[i] for i in channels]


def geometry_of(img: sitk.Image) -> dict[str, list]:
    """JSON-able geometry (``size``, ``spacing``, ``origin``, ``direction``) of a 3-D image."""
    return {
        "size": [int(s) for s in img.GetSize()],
        "spacing": [float(s) for s in img.GetSpacing()],
        "origin": [float(o) for o in img.GetOrigin()],
        "direction": [float(d) for d in img.GetDirection()],
    }
