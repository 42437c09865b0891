"""Prepared store: manifest, round trip, reuse by fingerprint, resampling, SliceDataset."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from prepare_helpers import TINY, tiny_cfg
from nifti_factory import make_acdc

from iac.config import PrepareConfig
from iac.data.dataset import SliceDataset
from iac.data.layouts.base import DataError
from iac.data.prepare import prepare_dataset
from iac.data.preprocess import PreprocessParams, preprocess_volume, restore_to_grid
from iac.data.store import PreparedDataset
from iac.tracking import MemoryTracker


def test_manifest_and_arrays(tiny):
    ds = PreparedDataset(tiny)
    m = ds.manifest
    assert ds.name == "phantom" and ds.label_names == {0: "background", 1: "RV", 2: "myocardium", 3: "LV"}
    assert ds.num_classes == 4 and ds.in_channels == 1 and ds.spacing == (1.5, 1.5)
    assert ds.slice_size == 32  # 24 pixels rounded up to a multiple of 16
    assert m["modality"] == "MR" and m["channel_names"] == ["cine"] and len(m["fingerprint"]) == 64
    splits = [set(ds.patients(s)) for s in ("train", "val", "test")]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    assert sum(map(len, splits)) == 4
    for c in ds.cases():
        assert ds.image(c.case_id).shape == (1, c.n_slices, 32, 32) and ds.image(c.case_id).dtype == np.float32
        assert ds.label(c.case_id).dtype == np.uint8
        assert isinstance(ds.image(c.case_id), np.memmap)
    by_patient = {}
    for c in ds.cases():
        by_patient.setdefault(c.patient, set()).add(c.frame)
    assert all(f == {"ED", "ES"} for f in by_patient.values())


def test_round_trip_exact_without_resampling(tiny):
    ds = PreparedDataset(tiny)
    for c in ds.cases():
        orig, spacing = ds.original_label(c.case_id)
        raw = sitk.GetArrayFromImage(sitk.ReadImage(str(tiny / "raw" / ds.manifest["cases"][c.case_id]["label"])))
        np.testing.assert_array_equal(orig, raw)
        np.testing.assert_array_equal(ds.to_original_grid(c.case_id, ds.label(c.case_id)), raw)
        assert spacing[:2] == (1.5, 1.5)


def test_preprocess_volume_matches_store(tiny):
    ds = PreparedDataset(tiny)
    c = ds.cases()[0]
    entry = ds.manifest["cases"][c.case_id]
    img = sitk.ReadImage(str(tiny / "raw" / entry["images"][0]))
    arr, geometry = preprocess_volume(img, ds.manifest["preprocessing"])
    # Padding only (24 -> 32): the centred window equals the stored one.
    np.testing.assert_allclose(arr, ds.image(c.case_id), rtol=1e-5, atol=1e-5)
    assert geometry["crop_start"] == entry["geometry"]["crop_start"]


def test_resampling_and_restore(tmp_path):
    make_acdc(tmp_path / "db", patients=(1, 2, 3), shape=(2, 12, 12))
    cfg = PrepareConfig(dataset="acdc", source=tmp_path / "db", out=tmp_path / "out", spacing=0.75,
                        workers=1, val_fraction=0.0, test_fraction=0.34)
    result = prepare_dataset(cfg, progress=False)
    ds = PreparedDataset(result.root)
    assert ds.spacing == (0.75, 0.75) and ds.slice_size == 32  # 12 px at 1.5 mm -> 24 px -> 32
    c = ds.cases()[0]
    geometry = ds.geometry(c.case_id)
    assert geometry["resampled"] and geometry["resampled_size"] == [24, 24]
    orig, _ = ds.original_label(c.case_id)
    # Halving the spacing and going back with nearest neighbour recovers the label map.
    np.testing.assert_array_equal(ds.to_original_grid(c.case_id, ds.label(c.case_id)), orig)
    assert (ds.label(c.case_id) > 0).sum() == 4 * (orig > 0).sum()


def test_restore_rejects_wrong_shape():
    geometry = {"size": [8, 8, 2], "slice_size": 16, "crop_start": [-4, -4], "resampled": False}
    with pytest.raises(ValueError, match="expected \\(2, 16, 16\\)"):
        restore_to_grid(np.zeros((2, 8, 8), np.uint8), geometry)


def test_reuse_by_fingerprint_and_refusal(tmp_path):
    tiny = tmp_path / "prepared"
    prepare_dataset(tiny_cfg(tiny), progress=False)
    before = json.loads((tiny / "manifest.json").read_text())
    tracker = MemoryTracker()
    again = prepare_dataset(tiny_cfg(tiny), tracker, progress=False)
    assert again.reused and again.fingerprint == before["fingerprint"]
    assert json.loads((tiny / "manifest.json").read_text())["created"] == before["created"]
    assert tracker.tags["reused"] == "true" and "manifest.json" in tracker.artifacts
    assert dict((k, v) for k, v, _ in tracker.metrics)["n_cases"] == 8
    with pytest.raises(DataError, match="other inputs or parameters.*--overwrite"):
        prepare_dataset(tiny_cfg(tiny, split_seed=1), progress=False)
    replaced = prepare_dataset(tiny_cfg(tiny, split_seed=1, overwrite=True), progress=False)
    assert not replaced.reused and replaced.fingerprint != before["fingerprint"]
    assert sorted(p.name for p in tiny.parent.iterdir() if p.name.startswith(".tmp-")) == []


def test_prepared_dataset_errors(tiny, tmp_path):
    with pytest.raises(DataError, match="does not exist; run `prepare` first"):
        PreparedDataset(tmp_path / "none")
    copy = tmp_path / "copy"
    shutil.copytree(tiny, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["format_version"] = 0
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match="store format version 0.*run `prepare` again"):
        PreparedDataset(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(DataError, match="manifest.json is missing"):
        PreparedDataset(copy)


def test_slice_dataset(tiny):
    ds = PreparedDataset(tiny)
    train = SliceDataset(ds, "train")
    assert len(train) == sum(c.n_slices for c in ds.cases("train"))
    item = train[len(train) - 1]
    assert item["image"].shape == (1, 32, 32) and item["image"].dtype == torch.float32
    assert item["label"].shape == (1, 32, 32) and item["label"].dtype == torch.int64
    assert item["case"] in {c.case_id for c in ds.cases("train")} and isinstance(item["z"], int)
    flipped = SliceDataset(ds, "train", augment=lambda d: {**d, "image": d["image"].flip(-1)})
    torch.testing.assert_close(flipped[0]["image"], train[0]["image"].flip(-1))
    one = ds.patients("test")[0]
    assert {SliceDataset(ds, "test", patients=[one])[i]["case"].split("_")[0] for i in range(2)} == {one}
    with pytest.raises(ValueError, match="not in split"):
        SliceDataset(ds, "test", patients=["nobody"])


def test_params_round_trip():
    p = PreprocessParams((1.0, 1.25), 64, "CT", ("ct",), {4: 3}, ((-100.0, 300.0),), (40.0,), (90.0,))
    assert PreprocessParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert TINY < 32


def test_ct_normalisation_uses_given_statistics():
    from iac.data.preprocess import ct_statistics

    rng = np.random.default_rng(0)
    samples = [[rng.normal(50.0, 10.0, 1000).astype(np.float32)], [rng.normal(60.0, 10.0, 1000).astype(np.float32)]]
    clip, mean, std = ct_statistics(samples, (0.5, 99.5))
    assert clip[0][0] < 50 < clip[0][1] and abs(mean[0] - 55.0) < 1.0
    params = PreprocessParams((1.5, 1.5), 16, "CT", ("ct",), {}, clip, mean, std)
    vol = np.full((2, 8, 8), 1e4, np.float32)  # far above the clip range
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing((1.5, 1.5, 5.0))
    arr, _ = preprocess_volume(img, params)
    assert arr.shape == (1, 2, 16, 16)
    np.testing.assert_allclose(arr[0, :, 4:12, 4:12], (clip[0][1] - mean[0]) / std[0], rtol=1e-5)
