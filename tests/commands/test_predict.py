"""``iac predict`` end to end: a registered U-Net segments a folder of raw phantom scans."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """Four raw phantom MR scans (ACDC layout flattened into one folder), a truncated file and a note."""
    from iac.data.phantom import write_phantom

    root = tmp_path_factory.mktemp("predict")
    write_phantom(root / "raw", n_patients=2, size=32)
    folder = root / "scans"
    folder.mkdir()
    for f in sorted((root / "raw").rglob("patient*_frame??.nii.gz")):
        shutil.copy(f, folder / f.name)
    good = sorted(folder.iterdir())[0].read_bytes()
    (folder / "broken.nii.gz").write_bytes(good[: len(good) // 3])
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def model_uri(mlflow_store) -> str:
    """A tiny U-Net (random weights) registered with the phantom's preprocessing."""
    import mlflow

    from iac import registry
    from iac.data.preprocess import PreprocessParams
    from iac.models import create_backbone
    from iac.serving import CONFIG_FORMAT

    torch.manual_seed(0)
    net = create_backbone("unet", 1, 4, features=(4, 8)).eval()
    params = PreprocessParams(target_spacing=(1.5, 1.5), slice_size=32, modality="MR", channel_names=("MR",))
    config = {"format": CONFIG_FORMAT, "network": net.config, "preprocessing": params.to_dict()}
    mlflow.set_experiment("test-predict-model")
    with mlflow.start_run() as run:
        ref = registry.register_unet(run.info.run_id, net.state_dict(), config, "iac-unet-test-predict", {"skip": "identity"})
    return ref.uri


def _invoke(*args: str):
    from click.testing import CliRunner

    from iac.cli import main

    return CliRunner().invoke(main, ["predict", *args])


def test_predict_segments_a_folder_and_lists_the_bad_file(scans, model_uri, tmp_path, experiment):
    import mlflow
    import SimpleITK as sitk

    from iac import registry

    out = tmp_path / "labels"
    res = _invoke("--model", model_uri, "-i", str(scans), "-o", str(out), "--device", "cpu")
    assert res.exit_code == 0, res.output
    images = sorted(scans.glob("patient*.nii.gz"))
    assert len(images) == 4
    assert sorted(p.name for p in out.glob("*.nii.gz")) == sorted(p.name for p in images)
    net, config, _ = registry.load_unet(model_uri)
    from iac.serving import predict_raw

    for img_path in images:
        img, label = sitk.ReadImage(str(img_path)), sitk.ReadImage(str(out / img_path.name))
        assert label.GetSize() == img.GetSize()
        assert np.allclose(label.GetSpacing(), img.GetSpacing()) and np.allclose(label.GetOrigin(), img.GetOrigin())
        assert np.allclose(label.GetDirection(), img.GetDirection())
    expected = predict_raw(net, config, str(images[0]))
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(out / images[0].name))), expected)
    summary = json.loads((out / "predict_summary.json").read_text())
    assert len(summary["written"]) == 4 and [f["case"] for f in summary["failed"]] == ["broken"]
    assert "broken.nii.gz" in res.output and "4 of 5 image(s) segmented" in res.output
    # The run: a predict step with its inputs logged as a dataset (context "inference").
    run = mlflow.search_runs(experiment_names=[experiment], filter_string="tags.step = 'predict'", output_format="list")[0]
    assert run.data.metrics["images_segmented"] == 4 and run.data.metrics["images_failed"] == 1
    assert [i.tags[0].value for i in run.inputs.dataset_inputs] == ["inference"]


def test_strict_stops_at_the_bad_file_and_a_list_of_files_works(scans, model_uri, tmp_path, experiment):
    res = _invoke("--model", model_uri, "-i", str(scans), "-o", str(tmp_path / "a"), "--strict", "true",
                  "--device", "cpu")
    assert res.exit_code == 1 and "broken.nii.gz" in res.output
    files = sorted(scans.glob("patient001*.nii.gz"))
    res = _invoke("--model", model_uri, "-i", ",".join(map(str, files)), "-o", str(tmp_path / "b"), "--suffix", ".mha",
                  "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "b").glob("*.mha")) == sorted(f.name.replace(".nii.gz", ".mha") for f in files)


def test_bad_arguments_are_usage_errors(scans, model_uri, tmp_path, experiment):
    res = _invoke("--model", "iac-unet-x", "-i", str(scans), "-o", str(tmp_path))
    assert res.exit_code == 2 and "--model" in res.output and "models:/<model_id>" in res.output
    res = _invoke("--model", model_uri, "-i", str(tmp_path / "none"), "-o", str(tmp_path / "o"), "--device", "cpu")
    assert res.exit_code == 2 and "no such file or folder" in res.output
    res = _invoke("--model", model_uri, "-i", str(scans), "-o", str(tmp_path), "--suffix", ".png")
    assert res.exit_code == 2 and "--suffix" in res.output
