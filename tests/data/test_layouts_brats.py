"""BraTS layout reader: releases, channel order and selection, labels, structural errors."""

from __future__ import annotations

import shutil

import pytest
from nifti_factory import make_brats

from iac.data.layouts.base import LAYOUTS, DataError
from iac.data.layouts.brats import discover


@pytest.fixture(scope="module")
def brats20(tmp_path_factory):
    root = tmp_path_factory.mktemp("MICCAI_BraTS2020_TrainingData")
    make_brats(root, "2020", cases=(2, 1))
    return root


@pytest.fixture(scope="module")
def brats23(tmp_path_factory):
    root = tmp_path_factory.mktemp("BraTS2023-GLI")
    make_brats(root, "2023", cases=(0, 1))
    return root


def test_registered():
    assert LAYOUTS["brats"] is discover


def test_brats2020_cases_labels_regions(brats20):
    d = discover(brats20, {})
    assert [c.case_id for c in d.cases] == ["BraTS20_Training_001", "BraTS20_Training_002"]
    case = d.cases[0]
    assert case.patient == case.case_id and case.frame is None and not case.channel_axis_4d
    assert [p.name for p in case.images] == [f"BraTS20_Training_001_{s}.nii.gz" for s in ("flair", "t1", "t1ce", "t2")]
    assert case.label.name == "BraTS20_Training_001_seg.nii.gz"
    info = d.info
    assert (info.name, info.modality, info.channel_names) == ("brats", "MR", ("flair", "t1", "t1ce", "t2"))
    assert info.label_names == {0: "background", 1: "necrotic_core", 2: "edema", 3: "enhancing_tumour"}
    assert info.label_map == {0: 0, 1: 1, 2: 2, 4: 3}
    assert info.regions == {"whole_tumour": (1, 2, 3), "tumour_core": (1, 3), "enhancing_tumour": (3,)}


def test_brats2021_names(tmp_path):
    make_brats(tmp_path, "2021", cases=(0,), ext=".nii")
    d = discover(tmp_path, {})
    assert [c.case_id for c in d.cases] == ["BraTS2021_00000"]
    assert d.cases[0].images[2].name == "BraTS2021_00000_t1ce.nii"
    assert d.info.label_map[4] == 3


def test_brats2023_maps_channel_names_and_keeps_label_3(brats23):
    d = discover(brats23, {})
    assert [c.case_id for c in d.cases] == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]
    assert [p.name.split("-")[-1] for p in d.cases[0].images] == [
        "t2f.nii.gz",
        "t1n.nii.gz",
        "t1c.nii.gz",
        "t2w.nii.gz",
    ]
    assert d.info.channel_names == ("flair", "t1", "t1ce", "t2")
    assert d.info.label_map == {0: 0, 1: 1, 2: 2, 3: 3}
    assert d.cases[0].label.name == "BraTS-GLI-00000-000-seg.nii.gz"


@pytest.mark.parametrize(
    ("requested", "names", "suffixes"),
    [
        (("t1ce", "flair"), ("t1ce", "flair"), ("t1c", "t2f")),
        (("T2W",), ("t2",), ("t2w",)),  # 2023 spelling, any case
    ],
)
def test_modality_selection(brats23, requested, names, suffixes):
    d = discover(brats23, {"modalities": requested})
    assert d.info.channel_names == names
    assert tuple(p.name.split("-")[-1].split(".")[0] for p in d.cases[1].images) == suffixes


@pytest.mark.parametrize(
    ("requested", "message"),
    [(("flair", "dwi"), "unknown modality 'dwi'; valid names are flair, t1, t1ce, t2"), (("t1", "T1"), "twice")],
)
def test_bad_modality_names(brats20, requested, message):
    with pytest.raises(DataError, match=message) as err:
        discover(brats20, {"modalities": requested})
    assert str(brats20) in str(err.value)


def test_discovery_reads_no_voxels(tmp_path):
    # Placeholder files that no image reader could decode are enough to discover.
    case = tmp_path / "BraTS20_Training_007"
    case.mkdir()
    for s in ("flair", "t1", "t1ce", "t2", "seg"):
        (case / f"BraTS20_Training_007_{s}.nii.gz").write_bytes(b"not an image")
    assert [c.case_id for c in discover(tmp_path, {}).cases] == ["BraTS20_Training_007"]


def test_misnamed_segmentation_is_found(tmp_path):
    # BraTS 2020 case 355 ships its label as W39_1998.09.19_Segm.nii.
    make_brats(tmp_path, "2020", cases=(355,), ext=".nii")
    case = tmp_path / "BraTS20_Training_355"
    (case / "BraTS20_Training_355_seg.nii").rename(case / "W39_1998.09.19_Segm.nii")
    assert discover(tmp_path, {}).cases[0].label.name == "W39_1998.09.19_Segm.nii"


def test_empty_source(tmp_path):
    with pytest.raises(DataError, match="no case folders; expected one folder per case") as err:
        discover(tmp_path, {})
    assert str(tmp_path) in str(err.value)


def test_missing_source(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "nowhere", {})


def test_image_without_label(tmp_path):
    make_brats(tmp_path, "2020", cases=(1, 2))
    (tmp_path / "BraTS20_Training_002" / "BraTS20_Training_002_seg.nii.gz").unlink()
    with pytest.raises(DataError, match="image without label; expected .*BraTS20_Training_002_seg.nii.gz") as err:
        discover(tmp_path, {})
    assert str(tmp_path / "BraTS20_Training_002") in str(err.value)


def test_missing_channel(tmp_path):
    make_brats(tmp_path, "2023", cases=(3,))
    (tmp_path / "BraTS-GLI-00003-000" / "BraTS-GLI-00003-000-t1c.nii.gz").unlink()
    with pytest.raises(DataError, match=r"BraTS-GLI-00003-000: missing channel\(s\) t1c; expected the same four"):
        discover(tmp_path, {})


def test_mixed_releases(tmp_path, brats20, brats23):
    shutil.copytree(brats20 / "BraTS20_Training_001", tmp_path / "BraTS20_Training_001")
    shutil.copytree(brats23 / "BraTS-GLI-00000-000", tmp_path / "BraTS-GLI-00000-000")
    with pytest.raises(DataError, match="BraTS20_Training_001: BraTS 2020/2021 file names, but .* 2023") as err:
        discover(tmp_path, {})
    assert "expected one release per source folder" in str(err.value)


def test_unknown_structure(tmp_path):
    (tmp_path / "subject01").mkdir()
    (tmp_path / "subject01" / "anatomy.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match="subject01: cannot tell the BraTS release; expected .* found anatomy.nii.gz"):
        discover(tmp_path, {})
