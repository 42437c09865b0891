"""Reading medical images with SimpleITK, and checking that their files are whole.

A case's image channels are read as 3-D SimpleITK images (one file per channel,
or one 4-D file whose last axis holds the channels). A NIfTI file is checked
from its own bytes first (:func:`check_nifti`): a truncated file is refused
before ITK can pad it with zeros, and NaN or Inf voxels before ITK's NIfTI
reader can turn them into 0. :func:`file_digest` hashes a file's
bytes for the prepared dataset's fingerprint. SimpleITK sizes and spacings are
``(x, y, z)``; arrays taken from the images are numpy ``(Z, Y, X)``.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import numpy as np
import SimpleITK as sitk

from iac.data.layouts.base import CaseSource, DataError

# Sizes of the NIfTI-1 and NIfTI-2 headers (the first field of each holds its own size).
NIFTI1_HEADER_BYTES = 348
NIFTI2_HEADER_BYTES = 540
# Bytes read at a time when hashing or checking a file.
HASH_CHUNK = 1 << 20
# NIfTI datatype codes of floating-point voxels (the only ones that can hold NaN or Inf)
# and their numpy type without byte order: FLOAT32, FLOAT64.
NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class NiftiLayout:
    """Where a NIfTI file keeps its voxels, read from its header.

    Attributes:
        voxel_offset: byte offset of the first voxel.
        n_voxels: voxels the header declares (product of the used ``dim`` entries).
        bitpix: bits per voxel.
        float_dtype: numpy dtype of floating-point voxels (with the file's byte
            order), or None for integer voxels, which cannot be NaN or Inf.
    """

    voxel_offset: int
    n_voxels: int
    bitpix: int
    float_dtype: np.dtype | None

    @property
    def data_bytes(self) -> int:
        return self.n_voxels * self.bitpix // 8


def nifti_layout(header: bytes) -> NiftiLayout | None:
    """Parse the voxel layout of a NIfTI-1 or NIfTI-2 header (either byte order).

    Args:
        header: the file's first bytes (at least the header's own size).

    Returns:
        The layout, or None when the bytes are no NIfTI header.
    """
    for order in ("<", ">"):
        size = int(np.frombuffer(header[0:4], dtype=f"{order}i4")[0]) if len(header) >= 4 else 0
        if size == NIFTI1_HEADER_BYTES and len(header) >= NIFTI1_HEADER_BYTES:
            dims = np.frombuffer(header[40:56], dtype=f"{order}i2")  # dim[8]
            datatype, bitpix = (int(v) for v in np.frombuffer(header[70:74], dtype=f"{order}i2"))
            offset = int(np.frombuffer(header[108:112], dtype=f"{order}f4")[0])  # vox_offset is a float
        elif size == NIFTI2_HEADER_BYTES and len(header) >= NIFTI2_HEADER_BYTES:
            datatype, bitpix = (int(v) for v in np.frombuffer(header[12:16], dtype=f"{order}i2"))
            dims = np.frombuffer(header[16:80], dtype=f"{order}i8")  # dim[8]
            offset = int(np.frombuffer(header[168:176], dtype=f"{order}i8")[0])
        else:
            continue
        n = int(np.prod([max(int(d), 1) for d in dims[1 : 1 + min(max(int(dims[0]), 0), 7)]]))
        code = NIFTI_FLOAT_TYPES.get(datatype)
        return NiftiLayout(offset, n, bitpix, np.dtype(f"{order}{code}") if code else None)
    return None


def _voxel_bytes(f: BinaryIO, head: bytes, offset: int) -> Iterator[bytes]:
    """The bytes from ``offset`` on, of a stream whose first bytes ``head`` were already read."""
    if len(head) > offset:
        yield head[offset:]
    else:
        skip = offset - len(head)
        while skip > 0:
            got = len(f.read(min(skip, HASH_CHUNK)))
            if got == 0:
                return
            skip -= got
    yield from iter(lambda: f.read(HASH_CHUNK), b"")


def _count_non_finite(chunks: Iterator[bytes], layout: NiftiLayout) -> tuple[int, int, int]:
    """``(voxel bytes present, NaN count, Inf count)`` of the declared voxels in ``chunks``."""
    wanted, got, nan, inf = layout.data_bytes, 0, 0, 0
    itemsize = layout.float_dtype.itemsize if layout.float_dtype is not None else 1
    rest = b""
    for chunk in chunks:
        chunk = chunk[: max(wanted - got, 0)]
        got += len(chunk)
        if layout.float_dtype is not None:
            buf = rest + chunk
            usable = len(buf) - len(buf) % itemsize
            values = np.frombuffer(buf[:usable], dtype=layout.float_dtype)
            nan += int(np.isnan(values).sum())
            inf += int(np.isinf(values).sum())
            rest = buf[usable:]
        if got >= wanted:
            break
    return got, nan, inf


def check_nifti(path: Path) -> None:
    """Refuse a NIfTI file that is truncated or holds NaN or Inf voxels.

    ITK pads a truncated file with zeros, and its NIfTI reader returns NaN and
    Inf voxels as 0; both are therefore checked here, from the file's own bytes
    as its header lays them out, before ITK reads it. Other formats pass
    unchecked (their readers keep NaN; :mod:`iac.data.check` refuses it).

    Raises:
        DataError: naming the file when its gzip stream ends early, it holds fewer
            voxels than its header declares, or any voxel is NaN or Inf.
    """
    path = Path(path)
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            head = f.read(NIFTI2_HEADER_BYTES)
            layout = nifti_layout(head)
            if layout is None:
                return  # not NIfTI after all: ITK reports what it is
            got, nan, inf = _count_non_finite(_voxel_bytes(f, head, layout.voxel_offset), layout)
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(f"cannot read {path}: truncated or corrupt gzip stream ({err})") from err
    if got < layout.data_bytes:
        expected = layout.voxel_offset + layout.data_bytes
        raise DataError(f"cannot read {path}: truncated file ({layout.voxel_offset + got} of {expected} bytes)")
    if nan or inf:
        raise DataError(
            f"{path}: {nan} NaN and {inf} Inf voxels (expected finite values; "
            "SimpleITK's NIfTI reader would silently read them as 0)"
        )


def read_image(path: Path) -> sitk.Image:
    """Read a medical image with SimpleITK.

    Raises:
        DataError: naming the file when it is missing, unreadable or truncated, or
            (NIfTI) holds NaN or Inf voxels.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file {path}")
    check_nifti(path)
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
