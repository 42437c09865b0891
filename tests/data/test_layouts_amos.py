"""AMOS22 layout reader: CT/MRI selection by id, labels from dataset.json, structural errors."""

from __future__ import annotations

import json

import pytest
from nifti_factory import AMOS_LABELS, make_amos

from iac.data.layouts.base import LAYOUTS, DataError
from iac.data.layouts.amos import discover


@pytest.fixture(scope="module")
def amos(tmp_path_factory):
    root = tmp_path_factory.mktemp("amos22")
    make_amos(root, train_ids=(501, 1, 500), val_ids=(8, 540))
    return root


def test_registered():
    assert LAYOUTS["amos"] is discover


def test_default_is_ct(amos):
    d = discover(amos, {})
    assert [c.case_id for c in d.cases] == ["amos_0001", "amos_0008", "amos_0500"]
    assert d.cases[1].images == (amos / "imagesVa" / "amos_0008.nii.gz",)
    assert d.cases[1].label == amos / "labelsVa" / "amos_0008.nii.gz"
    assert (d.info.name, d.info.modality, d.info.channel_names) == ("amos", "CT", ("CT",))
    assert d.info.label_names == {int(k): v for k, v in AMOS_LABELS.items()}
    assert len(d.info.label_names) == 16 and d.info.label_map == {} and d.info.regions == {}


@pytest.mark.parametrize(
    ("mode", "ids", "modality"),
    [
        ("mri", ["amos_0501", "amos_0540"], "MR"),
        ("all", ["amos_0001", "amos_0008", "amos_0500", "amos_0501", "amos_0540"], "MR"),
        ("CT", ["amos_0001", "amos_0008", "amos_0500"], "CT"),
    ],
)
def test_modality_selection(amos, mode, ids, modality):
    d = discover(amos, {"amos_modality": mode})
    assert [c.case_id for c in d.cases] == ids
    assert d.info.modality == modality


def test_bad_modality_option(amos):
    with pytest.raises(DataError, match="amos_modality='pet' is not valid; expected one of ct, mri, all"):
        discover(amos, {"amos_modality": "pet"})


def test_no_scan_of_selected_modality(tmp_path):
    make_amos(tmp_path, train_ids=(2,))
    with pytest.raises(DataError, match=r"no labelled MRI scans \(ids > 500\) in imagesTr") as err:
        discover(tmp_path, {"amos_modality": "mri"})
    assert str(tmp_path) in str(err.value)


def test_validation_images_without_label_folder_are_ignored(tmp_path):
    make_amos(tmp_path, train_ids=(1,), val_ids=(9,))
    for p in (tmp_path / "labelsVa").iterdir():
        p.unlink()
    (tmp_path / "labelsVa").rmdir()
    assert [c.case_id for c in discover(tmp_path, {}).cases] == ["amos_0001"]


def test_image_without_label(tmp_path):
    make_amos(tmp_path, train_ids=(1, 2))
    (tmp_path / "labelsTr" / "amos_0002.nii.gz").unlink()
    with pytest.raises(DataError, match="amos_0002.nii.gz: image without label; expected .*labelsTr/amos_0002") as err:
        discover(tmp_path, {})
    assert str(tmp_path / "imagesTr") in str(err.value)


def test_label_without_image(tmp_path):
    make_amos(tmp_path, train_ids=(1, 2))
    (tmp_path / "imagesTr" / "amos_0001.nii.gz").unlink()
    with pytest.raises(DataError, match="labelsTr/amos_0001.nii.gz: label without image"):
        discover(tmp_path, {})


def test_unexpected_file_name(tmp_path):
    make_amos(tmp_path, train_ids=(1,))
    (tmp_path / "imagesTr" / "scan7.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match="scan7.nii.gz: unexpected file name; expected amos_NNNN.nii.gz"):
        discover(tmp_path, {})


def test_missing_dataset_json(tmp_path):
    make_amos(tmp_path, train_ids=(1,))
    (tmp_path / "dataset.json").unlink()
    with pytest.raises(DataError, match="no dataset.json; expected the AMOS22 folder") as err:
        discover(tmp_path, {})
    assert str(tmp_path) in str(err.value)


def test_bad_labels_in_dataset_json(tmp_path):
    make_amos(tmp_path, train_ids=(1,))
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"zero": "background"}}))
    with pytest.raises(DataError, match="dataset.json: label key 'zero' is not an integer"):
        discover(tmp_path, {})


def test_empty_folder(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": AMOS_LABELS}))
    with pytest.raises(DataError, match="imagesTr: does not exist; expected AMOS22 training images"):
        discover(tmp_path, {})


def test_id_in_training_and_validation(tmp_path):
    make_amos(tmp_path, train_ids=(1, 3), val_ids=(3,))
    with pytest.raises(DataError, match="imagesVa/amos_0003.nii.gz: case amos_0003 also found in .*imagesTr"):
        discover(tmp_path, {})


def test_no_ct_scan_lists_both_subsets(tmp_path):
    make_amos(tmp_path, train_ids=(501,), val_ids=(502,))
    with pytest.raises(DataError, match=r"no labelled CT scans \(ids <= 500\) in imagesTr, imagesVa"):
        discover(tmp_path, {})
