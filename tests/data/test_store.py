"""Prepared store: manifest, round trip, reuse by fingerprint, SliceDataset."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from prepare_helpers import tiny_cfg

from iac.data.dataset import SliceDataset
from iac.data.layouts.base import DataError
from iac.data.prepare import prepare_dataset
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
