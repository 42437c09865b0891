"""Reading images: whole files only, 4-D files split into channels, content digests."""

from __future__ import annotations

import hashlib

import pytest
from nifti_factory import SHAPE, write_image

from iac.data.io import file_digest, load_channels, read_image
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
