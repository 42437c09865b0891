"""ACDC reader: database/training/testing folders, both frames, Info.cfg errors."""

from __future__ import annotations

import pytest
from nifti_factory import make_acdc

from iac.data.layouts import LAYOUTS, get_layout, load_layouts
from iac.data.layouts.acdc import discover
from iac.data.layouts.base import DataError


def test_registered_and_unknown_layout():
    assert LAYOUTS["acdc"] is discover
    assert "acdc" in load_layouts()
    with pytest.raises(DataError, match="unknown dataset layout 'nope'.*acdc"):
        get_layout("nope")


def test_database_training_and_testing(tmp_path):
    make_acdc(tmp_path, patients=(1, 2), subset="training", frames=(1, 8))
    make_acdc(tmp_path, patients=(101,), subset="testing", frames=(1, 12))
    disc = discover(tmp_path, {})
    assert disc.info.name == "acdc" and disc.info.label_names[3] == "LV"
    ids = [c.case_id for c in disc.cases]
    assert ids == [
        "patient001_frame01", "patient001_frame08", "patient002_frame01",
        "patient002_frame08", "patient101_frame01", "patient101_frame12",
    ]
    first = disc.cases[0]
    assert first.patient == "patient001" and first.frame == "ED" and disc.cases[1].frame == "ES"
    assert first.label.name == "patient001_frame01_gt.nii.gz" and first.label.exists()
    # The training subfolder alone works too.
    assert len(discover(tmp_path / "training", {}).cases) == 4


def test_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "missing", {})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no ACDC patient folders"):
        discover(tmp_path / "empty", {})
    make_acdc(tmp_path / "db", patients=(1,))
    info = tmp_path / "db" / "training" / "patient001" / "Info.cfg"
    info.write_text("ED: 1\nES: x\n")
    with pytest.raises(DataError, match=r"Info\.cfg.*ES"):
        discover(tmp_path / "db", {})
    info.write_text("ED: 1\nES: 9\n")
    with pytest.raises(DataError, match="patient001_frame09.nii.gz"):
        discover(tmp_path / "db", {})
    info.unlink()
    with pytest.raises(DataError, match="Info.cfg"):
        discover(tmp_path / "db", {})
