"""nnU-Net raw and MSD layout reader: channel files, 4-D images, labels both ways, errors."""

from __future__ import annotations

import json

import pytest
from nifti_factory import make_msd, make_nnunet, write_image

from iac.data.layouts.base import LAYOUTS, DataError
from iac.data.layouts.nnunet import discover, parse_labels


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw") / "Dataset005_Prostate"
    make_nnunet(root, cases=("prostate_02", "prostate_01"))
    return root


@pytest.fixture(scope="module")
def msd(tmp_path_factory):
    root = tmp_path_factory.mktemp("msd") / "Task01_BrainTumour"
    make_msd(root)
    return root


def test_registered():
    assert LAYOUTS["nnunet"] is discover


def test_nnunet_raw_channels_in_order(raw):
    d = discover(raw, {})
    assert [c.case_id for c in d.cases] == ["prostate_01", "prostate_02"]
    c = d.cases[0]
    assert [p.name for p in c.images] == ["prostate_01_0000.nii.gz", "prostate_01_0001.nii.gz"]
    assert c.label == raw / "labelsTr" / "prostate_01.nii.gz"
    assert (c.patient, c.frame, c.channel_axis_4d) == ("prostate_01", None, False)
    info = d.info
    assert (info.name, info.modality, info.channel_names) == ("dataset005_prostate", "MR", ("T2", "ADC"))
    assert info.label_names == {0: "background", 1: "PZ", 2: "TZ"}
    assert info.label_map == {} and info.regions == {}


def test_nnunet_raw_channel_selection(raw):
    d = discover(raw, {"modalities": ("adc",)})
    assert d.info.channel_names == ("ADC",)
    assert [p.name for p in d.cases[1].images] == ["prostate_02_0001.nii.gz"]
    with pytest.raises(DataError, match="unknown modality 'dwi'; valid names are T2, ADC") as err:
        discover(raw, {"modalities": ("dwi",)})
    assert str(raw) in str(err.value)


def test_msd_4d_images_and_apple_double_files(msd):
    d = discover(msd, {})
    assert [c.case_id for c in d.cases] == ["BRATS_001", "BRATS_002"]
    assert all(c.channel_axis_4d and len(c.images) == 1 for c in d.cases)
    assert d.cases[0].images[0].name == "BRATS_001.nii.gz"  # ._BRATS_001.nii.gz ignored
    info = d.info
    assert (info.name, info.modality) == ("task01_braintumour", "MR")
    assert info.channel_names == ("FLAIR", "T1w", "t1gd", "T2w")
    assert info.label_names == {0: "background", 1: "edema", 2: "non-enhancing tumor", 3: "enhancing tumour"}


def test_msd_channel_subset_refused(msd):
    with pytest.raises(DataError, match="not available for 4-D images; expected all channels"):
        discover(msd, {"modalities": ("flair",)})


def test_msd_single_channel_ct(tmp_path):
    root = tmp_path / "Task09_Spleen"
    make_msd(root, cases=("spleen_2",), modality={"0": "CT"}, labels={"0": "background", "1": "spleen"})
    d = discover(root, {})
    assert d.info.modality == "CT" and d.info.channel_names == ("CT",)
    assert not d.cases[0].channel_axis_4d


def test_region_labels_of_nnunet_v2():
    names, regions = parse_labels(
        {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}, "x.json"
    )
    assert names == {0: "background", 1: "label_1", 2: "label_2", 3: "enhancing tumor"}
    assert regions == {"whole tumor": (1, 2, 3), "tumor core": (2, 3), "enhancing tumor": (3,)}


def test_file_ending_from_dataset_json(tmp_path):
    make_nnunet(tmp_path, cases=("a",), channel_names={"0": "CT"}, file_ending=".nii")
    d = discover(tmp_path, {})
    assert d.cases[0].images[0].name == "a_0000.nii" and d.info.modality == "CT"


def test_image_without_label(tmp_path):
    make_nnunet(tmp_path, cases=("a", "b"))
    (tmp_path / "labelsTr" / "b.nii.gz").unlink()
    with pytest.raises(DataError, match=r"imagesTr/b_0000.nii.gz: image without label; expected .*labelsTr/b.nii.gz"):
        discover(tmp_path, {})


def test_label_without_image(tmp_path):
    make_msd(tmp_path, cases=("x_1", "x_2"), apple_double=False)
    (tmp_path / "imagesTr" / "x_2.nii.gz").unlink()
    with pytest.raises(DataError, match=r"labelsTr/x_2.nii.gz: label without image; expected .*imagesTr/x_2.nii.gz"):
        discover(tmp_path, {})


def test_missing_channel_file(tmp_path):
    make_nnunet(tmp_path, cases=("a", "b"))
    (tmp_path / "imagesTr" / "b_0001.nii.gz").unlink()
    with pytest.raises(DataError, match="case 'b' has channel files b_0000; expected b_0000, b_0001") as err:
        discover(tmp_path, {})
    assert str(tmp_path / "imagesTr") in str(err.value)


def test_4d_channel_count_mismatch(tmp_path):
    make_msd(tmp_path, cases=("x_1", "x_2"), apple_double=False)
    write_image(tmp_path / "imagesTr" / "x_2.nii.gz", channels=3)
    with pytest.raises(DataError, match="x_2.nii.gz: 4-D image with 3 channels; expected 4 as listed in"):
        discover(tmp_path, {})


def test_3d_image_for_multichannel_dataset(tmp_path):
    make_msd(tmp_path, cases=("x_1",), apple_double=False)
    write_image(tmp_path / "imagesTr" / "x_1.nii.gz")
    with pytest.raises(DataError, match="x_1.nii.gz: 3-D image; expected a 4-D file with 4 channels"):
        discover(tmp_path, {})


def test_missing_dataset_json(tmp_path):
    with pytest.raises(DataError, match="no dataset.json; expected an nnU-Net raw or Medical Segmentation") as err:
        discover(tmp_path, {})
    assert str(tmp_path) in str(err.value)


def test_dataset_json_without_channels(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0}}))
    with pytest.raises(DataError, match="dataset.json: expected 'channel_names'"):
        discover(tmp_path, {})


def test_empty_labels_folder(tmp_path):
    make_nnunet(tmp_path, cases=())
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    with pytest.raises(DataError, match="labelsTr: no label files ending in .nii.gz"):
        discover(tmp_path, {})


def test_unreadable_header(tmp_path):
    make_msd(tmp_path, cases=("x_1",), apple_double=False)
    (tmp_path / "imagesTr" / "x_1.nii.gz").write_bytes(b"truncated")
    with pytest.raises(DataError, match="x_1.nii.gz: image header not readable"):
        discover(tmp_path, {})


def test_label_without_channel_files(tmp_path):
    make_nnunet(tmp_path, cases=("a", "b"))
    for ch in ("0000", "0001"):
        (tmp_path / "imagesTr" / f"b_{ch}.nii.gz").unlink()
    with pytest.raises(DataError, match=r"labelsTr/b.nii.gz: label without image; expected .*imagesTr/b_0000.nii.gz"):
        discover(tmp_path, {})


def test_extra_channel_file(tmp_path):
    make_nnunet(tmp_path, cases=("a", "b"))
    write_image(tmp_path / "imagesTr" / "b_0002.nii.gz")
    with pytest.raises(DataError, match=r"case 'b' has channel files b_0000, b_0001, b_0002; expected b_0000, b_0001"):
        discover(tmp_path, {})


def test_mixed_whole_and_channel_files(tmp_path):
    make_msd(
        tmp_path, cases=("x_1", "x_2"), modality={"0": "T1"}, labels={"0": "background", "1": "a"}, apple_double=False
    )
    (tmp_path / "imagesTr" / "x_2.nii.gz").rename(tmp_path / "imagesTr" / "x_2_0000.nii.gz")
    with pytest.raises(DataError, match=r"mixes whole-case files \(x_1.nii.gz\) and per-channel files \(x_2_0000"):
        discover(tmp_path, {})
