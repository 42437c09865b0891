"""Preprocessing: the stored parameters, resampling and its inverse, CT normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from nifti_factory import make_acdc
from prepare_helpers import TINY

from iac.config import PrepareConfig
from iac.data.prepare import prepare_dataset
from iac.data.preprocess import PreprocessParams, ct_statistics, preprocess_volume, restore_to_grid
from iac.data.store import PreparedDataset


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
    # As one-hot probabilities (linear, then argmax) too: each original voxel lies between two equal fine ones.
    onehot = np.stack([(np.asarray(ds.label(c.case_id)) == k).astype(np.float32) for k in range(ds.num_classes)])
    np.testing.assert_array_equal(ds.to_original_grid(c.case_id, onehot), orig)
    np.testing.assert_array_equal(ds.to_original_grid(c.case_id, onehot[:, 1:], first_slice=1), orig[1:])
    with pytest.raises(ValueError, match="first_slice must be 0"):
        ds.to_original_grid(c.case_id, ds.label(c.case_id)[1:], first_slice=1)


def test_restore_rejects_wrong_shape():
    geometry = {"size": [8, 8, 2], "slice_size": 16, "crop_start": [-4, -4], "resampled": False}
    with pytest.raises(ValueError, match="expected \\(2, 16, 16\\)"):
        restore_to_grid(np.zeros((2, 8, 8), np.uint8), geometry)


def test_params_round_trip():
    p = PreprocessParams((1.0, 1.25), 64, "CT", ("ct",), {4: 3}, ((-100.0, 300.0),), (40.0,), (90.0,))
    assert PreprocessParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert TINY < 32


def test_ct_normalisation_uses_given_statistics():
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
