"""Every bad input is reported by file name, and nothing is left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from nifti_factory import SHAPE, label_array, make_acdc, write_image, write_label

from iac.config import PrepareConfig
from iac.data.layouts.base import DataError
from iac.data.prepare import prepare_dataset

P1 = Path("training/patient001")
IMG = P1 / "patient001_frame01.nii.gz"
GT = P1 / "patient001_frame01_gt.nii.gz"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("acdc")
    make_acdc(root, patients=(1, 2, 3))
    return root


def _cfg(src: Path, out: Path, **kw) -> PrepareConfig:
    return PrepareConfig(dataset="acdc", source=src, out=out, workers=1, val_fraction=0.0, test_fraction=0.34, **kw)


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def _float_label(p: Path) -> None:
    arr = label_array((1,)).astype(np.float32)
    arr[0, 0, 0] = 1.5
    write_image(p, arr)


def _non_finite(value: float, label: bool = False):
    """A corruption writing a float image (or float label map) with one ``value`` voxel."""

    def corrupt(p: Path) -> None:
        arr = label_array((1,)).astype(np.float32) if label else np.ones(SHAPE, np.float32)
        arr[0, 1, 1] = value
        write_image(p, arr)

    return corrupt


BAD = {
    "missing label": (GT, lambda p: p.unlink(), r"missing label file .*patient001_frame01_gt\.nii\.gz"),
    "unreadable": (IMG, lambda p: p.write_bytes(b"not an image at all"), r"cannot read .*patient001_frame01\.nii\.gz"),
    "truncated": (IMG, _truncate, r"cannot read .*patient001_frame01\.nii\.gz"),
    "shape mismatch": (GT, lambda p: write_label(p, (1,), shape=(2, 8, 6)), r"patient001_frame01_gt\.nii\.gz.*size"),
    "geometry mismatch": (GT, lambda p: write_label(p, (1,), spacing=(1.0, 1.5, 8.0)), r"patient001_frame01_gt\.nii\.gz.*spacing"),
    "label outside set": (GT, lambda p: write_label(p, (1, 5)), r"patient001_frame01_gt\.nii\.gz: label values \[5\]"),
    "non-integer label": (GT, _float_label, r"patient001_frame01_gt\.nii\.gz: label map holds non-integer"),
    # ITK's NIfTI reader returns NaN and Inf as 0: found from the file's own bytes.
    "NaN voxels": (IMG, _non_finite(np.nan), r"patient001_frame01\.nii\.gz: 1 NaN and 0 Inf voxels"),
    "Inf voxels": (IMG, _non_finite(-np.inf), r"patient001_frame01\.nii\.gz: 0 NaN and 1 Inf voxels"),
    "NaN label": (GT, _non_finite(np.nan, label=True), r"patient001_frame01_gt\.nii\.gz: 1 NaN and 0 Inf voxels"),
    "no usable slices": (IMG, lambda p: write_image(p, np.zeros(SHAPE)), r"patient001_frame01\.nii\.gz: no usable slices"),
}


def _left_behind(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith((".tmp-", "out")))


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_case_fails_naming_the_file(kind, pristine, tmp_path):
    rel, corrupt, message = BAD[kind]
    src = tmp_path / "src"
    shutil.copytree(pristine, src)
    corrupt(src / rel)
    with pytest.raises(DataError, match=message) as err:
        prepare_dataset(_cfg(src, tmp_path / "out"), progress=False)
    assert "--skip-bad" in str(err.value)
    assert _left_behind(tmp_path) == []


def test_skip_bad_reports_and_continues(pristine, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(pristine, src)
    (src / GT).unlink()
    result = prepare_dataset(_cfg(src, tmp_path / "out", skip_bad=True), progress=False)
    assert [b["case_id"] for b in result.bad_cases] == ["patient001_frame01"]
    report = json.loads((tmp_path / "out" / "bad_cases.json").read_text())
    assert report[0]["case_id"] == "patient001_frame01" and "missing label" in report[0]["error"]
    assert "patient001_frame01" not in result.manifest["cases"]
    assert "patient001_frame08" in result.manifest["cases"]  # the patient's other frame stays
    assert result.counts["n_bad_cases"] == 1 and result.counts["n_cases"] == 5


def test_empty_source_and_missing_source(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        prepare_dataset(_cfg(tmp_path / "empty", tmp_path / "out"), progress=False)
    with pytest.raises(DataError, match="does not exist"):
        prepare_dataset(_cfg(tmp_path / "nowhere", tmp_path / "out"), progress=False)
    assert _left_behind(tmp_path) == []


def test_unknown_dataset_and_bad_settings(tmp_path):
    from iac.config import ConfigError

    with pytest.raises(ConfigError, match="dataset: 'mnist' is not one of phantom"):
        PrepareConfig(dataset="mnist", out=tmp_path / "out")
    with pytest.raises(ConfigError, match="source: dataset 'acdc' needs"):
        PrepareConfig(dataset="acdc", out=tmp_path / "out")
    with pytest.raises(ConfigError, match=r"val \+ test fractions \(0.5 \+ 0.5\) leave no training"):
        PrepareConfig(val_fraction=0.5, test_fraction=0.5, out=tmp_path / "out")
    with pytest.raises(ValueError, match="split_file .* does not exist"):
        prepare_dataset(PrepareConfig(split_file=tmp_path / "none.json", out=tmp_path / "out"), progress=False)


def test_crop_that_would_remove_labels(pristine, tmp_path):
    with pytest.raises(DataError, match="would remove labelled voxels"):
        prepare_dataset(_cfg(pristine, tmp_path / "out", slice_size=2), progress=False)
    assert _left_behind(tmp_path) == []
