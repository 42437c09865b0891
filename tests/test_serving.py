"""The trained U-Net as a pyfunc model: a raw volume in, its label map on the input grid out."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from iac.data.preprocess import PreprocessParams
from iac.models import create_backbone
from iac.serving import CONFIG_FORMAT, UNetPyfunc, build_network, load_network, predict_raw

pytestmark = pytest.mark.usefixtures("single_thread")

N_CLASSES = 4
SHAPE_ZYX = (3, 20, 28)  # a raw volume whose in-plane grid differs from the network's slices
SPACING = (1.5, 1.5, 5.0)  # (x, y, z) mm, the target in-plane spacing: no resampling
SLICE = 16  # the network's slice side: a centred window of the input grid


def _config(net) -> dict:
    params = PreprocessParams(target_spacing=(1.5, 1.5), slice_size=SLICE, modality="MR", channel_names=("MR",))
    return {"format": CONFIG_FORMAT, "network": net.config, "preprocessing": params.to_dict()}


@pytest.fixture(scope="module")
def tiny():
    """A tiny two-level U-Net with random weights, and its saved config."""
    torch.manual_seed(0)
    net = create_backbone("unet", 1, N_CLASSES, features=(4, 8)).eval()
    return net, _config(net)


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return np.random.default_rng(0).normal(size=SHAPE_ZYX).astype(np.float32)


@pytest.fixture
def saved(tiny, tmp_path):
    """The weights (safetensors) and config files the registered model holds."""
    from safetensors.torch import save_file

    net, config = tiny
    weights, cfg = tmp_path / "model.safetensors", tmp_path / "model_config.json"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    cfg.write_text(json.dumps(config))
    return {"weights": str(weights), "config": str(cfg)}


def test_prediction_is_a_label_map_on_the_input_grid(tiny, volume):
    net, config = tiny
    pred = predict_raw(net, config, {"image": volume, "spacing": SPACING})
    assert pred.shape == SHAPE_ZYX
    assert pred.dtype == np.uint8 and set(np.unique(pred)) <= set(range(N_CLASSES))
    # A 4-D (C, Z, Y, X) volume with one channel is the same input.
    assert np.array_equal(predict_raw(net, config, {"image": volume[None], "spacing": SPACING}), pred)


class _SignNet(torch.nn.Module):
    """Two classes: label 1 exactly where the preprocessed intensity is positive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x), x], dim=1)  # (B, 2, H, W)


def test_labels_land_on_the_voxels_they_were_predicted_for(tiny):
    """The SLICE x SLICE window is centred on the input grid; outside it the label is background."""
    _, config = tiny
    # Intensities of +-1: far from the volume's mean on either side, so z-scoring keeps every sign.
    signs = np.random.default_rng(1).choice([-1.0, 1.0], size=SHAPE_ZYX).astype(np.float32)
    pred = predict_raw(_SignNet(), config, {"image": signs, "spacing": SPACING})
    expected = np.zeros(SHAPE_ZYX, np.uint8)
    y0, x0 = (SHAPE_ZYX[1] - SLICE) // 2, (SHAPE_ZYX[2] - SLICE) // 2
    window = (slice(None), slice(y0, y0 + SLICE), slice(x0, x0 + SLICE))
    expected[window] = signs[window] > 0
    assert np.array_equal(pred, expected)


def test_a_nifti_path_and_an_array_with_its_geometry_predict_alike(tiny, volume, tmp_path):
    import SimpleITK as sitk

    net, config = tiny
    img = sitk.GetImageFromArray(volume)
    img.SetSpacing(SPACING)
    img.SetOrigin((10.0, -4.0, 2.0))
    sitk.WriteImage(img, str(tmp_path / "case.nii.gz"))
    from_path = predict_raw(net, config, str(tmp_path / "case.nii.gz"))
    from_dict = predict_raw(net, config, {"image": volume, "spacing": SPACING, "origin": (10.0, -4.0, 2.0)})
    assert from_path.shape == SHAPE_ZYX and np.array_equal(from_path, from_dict)


@pytest.mark.parametrize(
    "bad, words",
    [
        ({"image": np.zeros(SHAPE_ZYX)}, ["'spacing'"]),
        ({"image": np.zeros((4, 4)), "spacing": SPACING}, ["3-D", "(4, 4)"]),
        (42, ["NIfTI path"]),
    ],
)
def test_bad_inputs_say_what_is_expected(tiny, bad, words):
    net, config = tiny
    with pytest.raises(ValueError) as err:
        predict_raw(net, config, bad)
    for w in words:
        assert w in str(err.value)


def test_an_unknown_config_format_is_refused(tiny):
    _, config = tiny
    with pytest.raises(ValueError, match="format"):
        build_network({**config, "format": CONFIG_FORMAT + 1})


def test_saved_weights_load_into_the_same_network(tiny, saved):
    net, config = tiny
    loaded = load_network(saved["weights"], config)
    assert not loaded.training
    x = torch.randn(2, 1, SLICE, SLICE)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_pyfunc_loads_its_artifacts_and_predicts_each_row_of_a_frame(tiny, saved, volume, tmp_path):
    import SimpleITK as sitk

    net, config = tiny
    model = UNetPyfunc()
    model.load_context(SimpleNamespace(artifacts=saved))
    img = sitk.GetImageFromArray(volume)
    img.SetSpacing(SPACING)
    sitk.WriteImage(img, str(tmp_path / "a.nii.gz"))
    preds = model.predict(None, pd.DataFrame({"path": [str(tmp_path / "a.nii.gz")] * 2}))
    expected = predict_raw(net, config, {"image": volume, "spacing": SPACING})
    assert len(preds) == 2 and all(np.array_equal(p, expected) for p in preds)
    with pytest.raises(ValueError, match="'path' column"):
        model.predict(None, pd.DataFrame({"file": ["a"]}))


def test_registered_model_round_trip(tiny, volume, experiment):
    """Registered through the registry, loaded by MLflow from code: the same labels as the network."""
    import mlflow

    from iac import registry

    net, config = tiny
    with mlflow.start_run() as run:
        ref = registry.register_unet(run.info.run_id, net.state_dict(), config, "iac-unet-test-serving", {"skip": "identity"})
    assert ref.tags["skip"] == "identity"
    model = mlflow.pyfunc.load_model(ref.uri)
    pred = model.predict({"image": volume, "spacing": SPACING})
    assert np.array_equal(pred, predict_raw(net, config, {"image": volume, "spacing": SPACING}))


def test_a_finer_input_grid_gets_its_labels_from_restored_probabilities(tiny):
    """Input at 0.75 mm, network at 1.5 mm: the disc comes back from probabilities, closer than nearest labels."""
    from iac.data.preprocess import preprocess_volume, restore_probabilities, restore_to_grid
    from iac.eval.inference import predict_volume
    from iac.eval.metrics import foreground_dice

    _, config = tiny
    z, y, x = np.mgrid[:2, :28, :28]
    disc = (np.hypot(y - 13.3, x - 14.6) < 9.5).astype(np.float32)  # (Z, Y, X) on the 0.75 mm grid
    fine = {"image": 2 * disc - 1, "spacing": (0.75, 0.75, 5.0)}
    pred = predict_raw(_SignNet(), config, fine)
    assert pred.shape == disc.shape
    arr, geometry = preprocess_volume([_image(fine)], config["preprocessing"])
    probs = predict_volume(_SignNet(), arr, return_probs=True)  # (2, Z, H, W)
    assert np.array_equal(pred, restore_probabilities(probs, geometry))
    nearest = restore_to_grid(probs.argmax(axis=0).astype(np.uint8), geometry)
    assert foreground_dice(pred, disc, 2) > foreground_dice(nearest, disc, 2)


def _image(d: dict):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.asarray(d["image"], np.float32))
    img.SetSpacing(d["spacing"])
    return img


def test_nan_and_inf_inputs_are_refused(tiny, volume, tmp_path):
    import SimpleITK as sitk

    from iac.data.layouts.base import DataError

    net, config = tiny
    bad = volume.copy()
    bad[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="'image' holds 1 NaN/Inf voxels"):
        predict_raw(net, config, {"image": bad, "spacing": SPACING})
    img = sitk.GetImageFromArray(bad)
    img.SetSpacing(SPACING)
    sitk.WriteImage(img, str(tmp_path / "nan.nii.gz"))
    with pytest.raises(DataError, match=r"nan\.nii\.gz: 1 NaN and 0 Inf voxels"):
        predict_raw(net, config, str(tmp_path / "nan.nii.gz"))
