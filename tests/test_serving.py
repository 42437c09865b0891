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
    pred = model.predict(volume, params={"spacing": list(SPACING)})
    assert np.array_equal(pred, predict_raw(net, config, {"image": volume, "spacing": SPACING}))


@pytest.fixture(scope="module")
def registered(tiny, mlflow_store):
    """The tiny U-Net registered once (with signature, example, model config and pinned requirements)."""
    import mlflow

    from iac import registry

    net, config = tiny
    mlflow.set_experiment("test-serving-signed")
    with mlflow.start_run() as run:
        ref = registry.register_unet(run.info.run_id, net.state_dict(), config, "iac-unet-test-signed", {"skip": "identity"})
    return ref


def test_registered_unet_has_a_signature_an_example_and_a_device_config(registered, volume):
    import mlflow
    from mlflow.models import Model

    info = Model.load(registered.uri)
    sig = info.signature
    assert sig is not None
    spec = sig.inputs.inputs[0]
    assert spec.type == np.dtype(np.float32) and spec.shape == (-1, -1, -1)
    assert sig.outputs.inputs[0].type == np.dtype(np.uint8)
    params = {p.name: p for p in sig.params.params}
    assert params["spacing"].shape == (-1,) and len(params["spacing"].default) == 3
    assert info.saved_input_example_info is not None
    example = info.load_input_example(mlflow.artifacts.download_artifacts(registered.uri))
    assert np.asarray(example).dtype == np.float32 and np.asarray(example).ndim == 3
    assert info.flavors["python_function"]["config"] == {"device": "auto"}
    # The device is model config: chosen when loading; the default picks CPU on a CPU-only host.
    auto = mlflow.pyfunc.load_model(registered.uri)
    assert str(auto.unwrap_python_model().device) == ("cuda" if torch.cuda.is_available() else "cpu")
    cpu = mlflow.pyfunc.load_model(registered.uri, model_config={"device": "cpu"})
    assert str(cpu.unwrap_python_model().device) == "cpu"
    assert np.array_equal(cpu.predict(volume, params={"spacing": list(SPACING)}),
                          auto.predict(volume, params={"spacing": list(SPACING)}))


def test_a_bad_spacing_param_is_refused(registered, volume):
    import mlflow

    model = mlflow.pyfunc.load_model(registered.uri, model_config={"device": "cpu"})
    with pytest.raises(Exception, match="spacing"):
        model.predict(volume, params={"spacing": [1.0, 1.0]})


def test_pip_requirements_pin_the_installed_versions(registered):
    from importlib.metadata import version

    import mlflow

    local = mlflow.artifacts.download_artifacts(f"{registered.uri}/requirements.txt")
    reqs = {line.split("==")[0].lower(): line.split("==")[1] for line in open(local).read().split() if "==" in line}
    assert reqs["torch"] == version("torch").split("+")[0]
    assert reqs["mlflow"] == version("mlflow")
    assert reqs["numpy"] == version("numpy")


def test_segment_file_writes_the_label_on_the_input_geometry(registered, tiny, volume, tmp_path):
    import mlflow
    import SimpleITK as sitk

    from iac.serving import segment_file

    net, config = tiny
    img = sitk.GetImageFromArray(volume)
    img.SetSpacing(SPACING)
    img.SetOrigin((10.0, -4.0, 2.0))
    sitk.WriteImage(img, str(tmp_path / "case.nii.gz"))
    model = mlflow.pyfunc.load_model(registered.uri, model_config={"device": "cpu"})
    label = segment_file(model, tmp_path / "case.nii.gz", out=tmp_path / "out" / "case_seg.nii.gz")
    written = sitk.ReadImage(str(tmp_path / "out" / "case_seg.nii.gz"))
    expected = predict_raw(net, config, {"image": volume, "spacing": SPACING, "origin": (10.0, -4.0, 2.0)})
    assert np.array_equal(sitk.GetArrayFromImage(written), expected)
    assert written.GetOrigin() == img.GetOrigin() and np.allclose(written.GetSpacing(), SPACING)
    assert np.array_equal(sitk.GetArrayFromImage(label), expected)


@pytest.mark.mlflow_cli
def test_mlflow_models_predict_takes_the_signed_form(registered, tiny, volume, tmp_path, mlflow_store):
    """``mlflow models predict`` on the registered name, with the array and its spacing as JSON."""
    import os
    import subprocess
    import sys

    net, config = tiny
    payload = {"inputs": volume.tolist(), "params": {"spacing": list(SPACING)}}
    (tmp_path / "in.json").write_text(json.dumps(payload))
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store, "MLFLOW_REGISTRY_URI": mlflow_store}
    proc = subprocess.run(
        [sys.executable, "-m", "mlflow", "models", "predict", "-m", registered.uri, "-i", str(tmp_path / "in.json"),
         "-t", "json", "-o", str(tmp_path / "out.json"), "--env-manager", "local"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.asarray(json.loads((tmp_path / "out.json").read_text())["predictions"], dtype=np.uint8)
    assert np.array_equal(got, predict_raw(net, config, {"image": volume, "spacing": SPACING}))


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
