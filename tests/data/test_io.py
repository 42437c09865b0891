"""Reading images: whole files only, no NaN/Inf voxels, 4-D files split into channels, content digests."""

from __future__ import annotations

import gzip
import hashlib
import re
import struct

import numpy as np
import pytest
import SimpleITK as sitk
from nifti_factory import SHAPE, write_image, write_label

from iac.data.io import check_nifti, file_digest, load_channels, nifti_layout, read_image
from iac.data.layouts.base import CaseSource, DataError


def test_read_image_refuses_missing_and_truncated_files(tmp_path):
    path = write_image(tmp_path / "img.nii")
    assert read_image(path).GetSize() == SHAPE[::-1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 16])
    with pytest.raises(DataError, match=r"img\.nii: truncated file"):
        read_image(path)
    with pytest.raises(DataError, match=r"missing file .*none\.nii\.gz"):
        read_image(tmp_path / "none.nii.gz")


def test_load_channels_splits_a_4d_file(tmp_path):
    path = write_image(tmp_path / "multi.nii.gz", channels=3)
    case = CaseSource("case", "p1", None, (path,), None, channel_axis_4d=True)
    vols = load_channels(case)
    assert len(vols) == 3 and all(v.GetSize() == SHAPE[::-1] for v in vols)
    assert len(load_channels(case, [2])) == 1


def test_file_digest_is_the_sha256_of_the_bytes(tmp_path):
    path = write_image(tmp_path / "img.nii.gz")
    assert file_digest(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def _with_non_finite(shape=SHAPE) -> np.ndarray:
    arr = np.random.default_rng(1).normal(100.0, 20.0, size=shape).astype(np.float32)
    arr[0, 1, 2] = np.nan
    arr[1, 3, 4] = np.inf
    arr[1, 0, 0] = -np.inf
    return arr


@pytest.mark.parametrize("name", ["img.nii.gz", "img.nii"])
def test_nan_and_inf_voxels_of_a_nifti_file_are_refused_naming_it(tmp_path, name):
    path = write_image(tmp_path / name, _with_non_finite())
    # What this guards against: ITK's NIfTI reader returns NaN and Inf as 0.
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()
    with pytest.raises(DataError, match=re.escape(name) + ": 1 NaN and 2 Inf voxels"):
        read_image(path)
    clean = write_image(tmp_path / f"clean-{name}")
    assert read_image(clean).GetSize() == SHAPE[::-1]


def _hand_written_nifti(path, arr: np.ndarray, version: int, order: str) -> None:
    """A minimal float32 NIfTI-1 or NIfTI-2 file in byte order ``order``, written field by field."""
    size = 348 if version == 1 else 540
    head = bytearray(size + 4)  # header and an empty extension flag
    dims = np.array([arr.ndim, *arr.shape[::-1]] + [1] * (7 - arr.ndim))
    struct.pack_into(f"{order}i", head, 0, size)
    if version == 1:
        struct.pack_into(f"{order}8h", head, 40, *dims)
        struct.pack_into(f"{order}2h", head, 70, 16, 32)  # FLOAT32, 32 bits
        struct.pack_into(f"{order}f", head, 108, size + 4)
        head[344:348] = b"n+1\0"
    else:
        head[4:12] = b"n+2\0\r\n\x1a\n"
        struct.pack_into(f"{order}2h", head, 12, 16, 32)
        struct.pack_into(f"{order}8q", head, 16, *dims)
        struct.pack_into(f"{order}q", head, 168, size + 4)
    path.write_bytes(bytes(head) + arr.astype(f"{order}f4").tobytes())


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("order", ["<", ">"])
def test_both_nifti_versions_and_byte_orders_are_scanned(tmp_path, version, order):
    path = tmp_path / "hand.nii"
    _hand_written_nifti(path, _with_non_finite(), version, order)
    layout = nifti_layout(path.read_bytes()[:540])
    assert layout is not None and layout.n_voxels == int(np.prod(SHAPE)) and layout.bitpix == 32
    assert layout.float_dtype == np.dtype(f"{order}f4")
    with pytest.raises(DataError, match=r"hand\.nii: 1 NaN and 2 Inf voxels"):
        check_nifti(path)
    _hand_written_nifti(path, np.ones(SHAPE), version, order)
    check_nifti(path)  # finite voxels pass
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(DataError, match=r"hand\.nii: truncated file"):
        check_nifti(path)


def test_integer_nifti_voxels_are_not_scanned_as_floats(tmp_path):
    path = write_label(tmp_path / "lab.nii.gz", (1, 2))
    with gzip.open(path, "rb") as f:
        layout = nifti_layout(f.read(540))
    assert layout is not None and layout.float_dtype is None
    assert read_image(path).GetSize() == SHAPE[::-1]
