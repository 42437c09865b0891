"""Exporting a prepared cohort (the phantom) as an nnU-Net raw dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from iac.config import PrepareConfig
from iac.nnunet.export import ExportError, export_nnunet_raw, patient_folds


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from iac.data.prepare import prepare_dataset
    from iac.data.store import PreparedDataset

    out = tmp_path_factory.mktemp("export") / "prepared"
    prepare_dataset(PrepareConfig(dataset="phantom", out=out, phantom_patients=6, phantom_size=24,
                                  val_fraction=0.2, test_fraction=0.34, workers=1), progress=False)
    return PreparedDataset(out)


def test_export_writes_a_valid_nnunet_raw_dataset(prepared, tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    result = export_nnunet_raw(prepared, tmp_path / "raw", 7, preprocessed_root=tmp_path / "pre")
    folder = tmp_path / "raw" / "Dataset007_phantom"
    assert result.folder == folder
    verify_dataset_integrity(str(folder), num_processes=1)  # nnU-Net's own check; raises on any problem
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "RV": 1, "myocardium": 2, "LV": 3}
    assert meta["numTraining"] == result.n_train_cases == len(list((folder / "labelsTr").iterdir()))
    test_cases = {c.case_id for c in prepared.cases("test")}
    assert {p.name.removesuffix("_0000.nii.gz") for p in (folder / "imagesTs").iterdir()} == test_cases
    assert not test_cases & {p.name.removesuffix(".nii.gz") for p in (folder / "labelsTr").iterdir()}
    assert set(meta["iac"]["test_cases"]) == test_cases
    assert meta["iac"]["data_fingerprint"] == prepared.fingerprint
    # the volumes are the prepared arrays, with the prepared spacing
    case = prepared.cases("train")[0]
    img = sitk.ReadImage(str(folder / "imagesTr" / f"{case.case_id}_0000.nii.gz"))
    assert np.array_equal(sitk.GetArrayFromImage(img), np.asarray(prepared.image(case.case_id))[0])
    assert img.GetSpacing()[:2] == pytest.approx(prepared.spacing)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labelsTr" / f"{case.case_id}.nii.gz")))
    assert np.array_equal(lab, np.asarray(prepared.label(case.case_id)))
    # fold 0 is the prepared split; the same file where nnU-Net reads it
    splits = json.loads((folder / "splits_final.json").read_text())
    assert splits == json.loads((tmp_path / "pre" / "Dataset007_phantom" / "splits_final.json").read_text())
    patient = meta["iac"]["patients"]
    assert {patient[c] for c in splits[0]["val"]} == set(prepared.patients("val"))
    assert {patient[c] for c in splits[0]["train"]} == set(prepared.patients("train"))


def test_folds_keep_every_frame_of_a_patient_together(prepared):
    splits = patient_folds(prepared, folds=2)
    patient = {c.case_id: c.patient for c in prepared.cases()}
    pool = {c.case_id for c in prepared.cases("train")} | {c.case_id for c in prepared.cases("val")}
    assert sorted(c for s in splits for c in s["val"]) == sorted(pool)  # each case validated once
    for s in splits:
        assert not {patient[c] for c in s["train"]} & {patient[c] for c in s["val"]}
        assert set(s["train"]) | set(s["val"]) == pool


def test_bad_exports_are_refused_and_leave_nothing(prepared, tmp_path):
    raw = tmp_path / "raw"
    export_nnunet_raw(prepared, raw, 8)
    with pytest.raises(ExportError, match="already used"):
        export_nnunet_raw(prepared, raw, 8, name="other")
    with pytest.raises(FileExistsError):
        export_nnunet_raw(prepared, raw, 8)
    with pytest.raises(ExportError, match="1..999"):
        export_nnunet_raw(prepared, raw, 1000)
    with pytest.raises(ExportError, match="folds=9"):
        export_nnunet_raw(prepared, raw, 9, folds=9)
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset008_phantom"]
