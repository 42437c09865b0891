"""The nnU-Net path end to end on CPU, on a tiny exported phantom (iterations and epochs shrunk, not the path):
export -> nnUNetv2_plan_and_preprocess -> baseline -> search (IAC-LTH) -> retrain -> nnUNetv2_predict
-> evaluate -> stats."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from iac.config import PrepareConfig, SearchConfig, StabilityConfig
from iac.eval.per_case import load_per_case
from iac.nas.genotype import Genotype
from iac.nnunet.plans import IACPlanSettings

pytestmark = pytest.mark.usefixtures("single_thread")

DATASET = "Dataset501_phantom"


def _nnunet(cmd: list[str], env: dict[str, str]) -> None:
    """One of nnU-Net's own console commands, as a user runs it."""
    exe = os.path.join(os.path.dirname(sys.executable), cmd[0])
    done = subprocess.run([exe, *cmd[1:]], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _iac(args: list[str]) -> str:
    from iac.cli import main

    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _run_id(output: str) -> str:
    return output.split(": run ", 1)[1].split()[0]


def test_nnunet_pipeline_end_to_end(tmp_path, monkeypatch, experiment):
    from iac.data.prepare import prepare_dataset

    env_dirs = {f"nnUNet_{n}": tmp_path / n for n in ("raw", "preprocessed", "results")}
    for var, folder in env_dirs.items():
        folder.mkdir()
        monkeypatch.setenv(var, str(folder))
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # data augmentation in the main process (2 shared cores)
    prepared = tmp_path / "prepared"
    prepare_dataset(PrepareConfig(dataset="phantom", out=prepared, phantom_patients=6, phantom_size=24,
                                  val_fraction=0.2, test_fraction=0.34, workers=1), progress=False)

    # export and nnU-Net's planning and preprocessing of the 2-D configuration
    assert "exported 8 training and 4 test cases" in _iac(["nnunet", "export", "--data", str(prepared),
                                                           "--dataset-id", "501"])
    env = {**os.environ, "nnUNet_n_proc_DA": "1"}  # nnU-Net's planner sets torch's threads from it
    _nnunet(["nnUNetv2_plan_and_preprocess", "-d", "501", "-c", "2d", "-np", "1", "-npfp", "1"], env)
    pre = env_dirs["nnUNet_preprocessed"] / DATASET
    assert json.loads((pre / "splits_final.json").read_text())[0]["val"] == ["patient006_frame01", "patient006_frame11"]
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    conf = plans["configurations"]["2d"]  # a plan narrowed for CPU
    conf["batch_size"] = 4
    conf["architecture"]["arch_kwargs"]["features_per_stage"] = [4, 8, 16, 16]
    (pre / "nnUNetPlans.json").write_text(json.dumps(plans))

    # the baseline: nnU-Net's own trainer, a few short epochs
    _iac(["nnunet", "train", "--dataset", "501", "--configuration", "2d", "--epochs", "2", "--iterations", "3",
          "--val-iterations", "1"])
    results = env_dirs["nnUNet_results"] / DATASET
    assert (results / "nnUNetTrainer__nnUNetPlans__2d" / "fold_0" / "checkpoint_final.pth").is_file()

    # the search (IAC-LTH with a loose threshold, so that it prunes within the shrunk budget)
    settings = IACPlanSettings(
        search=SearchConfig(epochs=4, warmup_epochs=0, nodes=2, cell_channels=4, k=2, check_every=2),
        stability=StabilityConfig(tau=1.0, patience=1), retrain_epochs=1, iterations_per_epoch=4,
        val_iterations_per_epoch=1, max_nnunet_epochs=3)
    (tmp_path / "iac.json").write_text(json.dumps(settings.to_dict()))
    _iac(["nnunet", "plans", "--dataset", "501", "--settings", str(tmp_path / "iac.json")])
    out = _iac(["nnunet", "train", "--dataset", "501", "--configuration", "2d_iac", "--plans", "nnUNetPlans_iac",
                "--trainer", "nnUNetTrainerIACSearch"])
    search = results / "nnUNetTrainerIACSearch__nnUNetPlans_iac__2d_iac" / "fold_0"
    genotype = Genotype.from_json((search / "genotype.json").read_text())
    trajectory = json.loads((search / "trajectory.json").read_text())
    ops = [e["surviving_ops"] for e in trajectory["epochs"]]
    assert ops[-1] < ops[0] and trajectory["events"]  # LTH pruned
    assert sorted(trajectory["split"]["weight"] + trajectory["split"]["arch"]) == ["patient001", "patient002", "patient005"]
    import mlflow

    run = mlflow.get_run(_run_id(out))
    assert "nnunet/train_losses" in run.data.metrics and "nnunet/mean_fg_dice" in run.data.metrics

    # the found cell, retrained with nnU-Net's loop, predicted with nnU-Net's predictor
    _iac(["nnunet", "plans", "--dataset", "501", "--genotype", str(search / "genotype.json")])
    _iac(["nnunet", "train", "--dataset", "501", "--configuration", "2d_iac", "--plans", "nnUNetPlans_iac",
          "--trainer", "nnUNetTrainerIACRetrain"])
    images = env_dirs["nnUNet_raw"] / DATASET / "imagesTs"
    # class probabilities for both (stats pairs only predictions restored the same way)
    common = ["-f", "0", "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_tta", "--save_probabilities"]
    _nnunet(["nnUNetv2_predict", "-i", str(images), "-o", str(tmp_path / "pred_iac"), "-d", "501", "-c", "2d_iac",
             "-p", "nnUNetPlans_iac", "-tr", "nnUNetTrainerIACRetrain", *common], dict(os.environ))
    _nnunet(["nnUNetv2_predict", "-i", str(images), "-o", str(tmp_path / "pred_base"), "-d", "501", "-c", "2d",
             *common], dict(os.environ))
    plans_iac = json.loads((pre / "nnUNetPlans_iac.json").read_text())
    assert Genotype.from_json(plans_iac["configurations"]["2d_iac"]["architecture"]["arch_kwargs"]["genotype"]) == genotype

    # evaluate both and compare them patient by patient
    ids = [_run_id(_iac(["nnunet", "evaluate", "--predictions", str(tmp_path / p), "--data", str(prepared),
                         "--method", m]))
           for p, m in (("pred_iac", "iac-lth"), ("pred_base", "nnunet"))]
    assert {mlflow.get_run(i).data.tags["restore"] for i in ids} == {"probabilities"}
    for run_id in ids:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(tmp_path / run_id))
        df, meta = load_per_case(os.path.join(local, "per_case.csv"))  # with its sidecar, as stats reads it
        assert set(df["patient"]) == {"patient003", "patient004"} and meta["backbone"] == "nnunet"
    out = _iac(["stats", "--runs", ",".join(ids), "--reference", "iac-lth", "--min-pairs", "2", "--n-boot", "200"])
    assert "nnunet" in out
