"""KiTS layout reader: KiTS19/KiTS23 detection, labels, regions, structural errors."""

from __future__ import annotations

import pytest
from nifti_factory import make_kits

from iac.data.layouts.base import LAYOUTS, DataError
from iac.data.layouts.kits import discover

KITS19 = ({0: "background", 1: "kidney", 2: "tumour"}, {"kidney": (1, 2), "tumour": (2,)})
KITS23 = (
    {0: "background", 1: "kidney", 2: "tumour", 3: "cyst"},
    {"kidney": (1, 2, 3), "masses": (2, 3), "tumour": (2,)},
)


def _labels_regions(d):
    return d.info.label_names, d.info.regions


def test_registered():
    assert LAYOUTS["kits"] is discover


def test_kits19_default(tmp_path):
    make_kits(tmp_path, cases=(1, 0))
    d = discover(tmp_path, {})
    assert [c.case_id for c in d.cases] == ["case_00000", "case_00001"]
    c = d.cases[0]
    assert c.images == (tmp_path / "case_00000" / "imaging.nii.gz",)
    assert c.label == tmp_path / "case_00000" / "segmentation.nii.gz"
    assert (c.patient, c.frame, c.channel_axis_4d) == ("case_00000", None, False)
    assert (d.info.name, d.info.modality, d.info.channel_names, d.info.label_map) == ("kits", "CT", ("CT",), {})
    assert _labels_regions(d) == KITS19


@pytest.mark.parametrize("how", ["instances", "kits23.json", "high id", "folder name", "option"])
def test_version_23_detection(tmp_path, how):
    root = tmp_path / ("kits23" if how == "folder name" else "src") / "dataset"
    make_kits(root, cases=(400,) if how == "high id" else (0,), version="23", instances=how == "instances")
    if how == "kits23.json":
        (root / "kits23.json").write_text("[]")
    d = discover(root, {"kits_version": "23"} if how == "option" else {})
    assert _labels_regions(d) == KITS23


def test_option_overrides_detection_and_kits_json(tmp_path):
    make_kits(tmp_path / "data", cases=(0,), version="23", instances=True)
    (tmp_path / "data" / "kits.json").write_text("[]")
    assert _labels_regions(discover(tmp_path, {"kits_version": 19})) == KITS19  # repository root works too
    assert _labels_regions(discover(tmp_path, {})) == KITS23


def test_bad_version_option(tmp_path):
    make_kits(tmp_path, cases=(0,))
    with pytest.raises(DataError, match="kits_version='21' is not valid; expected 19 or 23"):
        discover(tmp_path, {"kits_version": "21"})


def test_kits19_test_cases_without_segmentation_are_skipped(tmp_path):
    make_kits(tmp_path, cases=(0,))
    make_kits(tmp_path, cases=(210,), with_seg=False)
    assert [c.case_id for c in discover(tmp_path, {}).cases] == ["case_00000"]


def test_image_without_label(tmp_path):
    make_kits(tmp_path, cases=(0,))
    make_kits(tmp_path, cases=(5,), with_seg=False)
    with pytest.raises(DataError, match="image without label; expected .*case_00005/segmentation.nii.gz") as err:
        discover(tmp_path, {})
    assert str(tmp_path / "case_00005") in str(err.value)


def test_missing_imaging(tmp_path):
    make_kits(tmp_path, cases=(0, 1))
    (tmp_path / "case_00001" / "imaging.nii.gz").unlink()
    with pytest.raises(DataError, match="case_00001: no imaging.nii.gz; expected imaging.nii.gz and segmentation"):
        discover(tmp_path, {})


def test_empty_or_unknown_structure(tmp_path):
    (tmp_path / "patient1").mkdir()
    with pytest.raises(DataError, match="no case_XXXXX folders; expected the KiTS data folder") as err:
        discover(tmp_path, {})
    assert str(tmp_path) in str(err.value)
