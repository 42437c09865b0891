"""The nnU-Net path end to end on CPU, on a tiny exported phantom (iterations and epochs shrunk, not the path):
export -> nnUNetv2_plan_and_preprocess -> baseline -> search (IAC-LTH) -> retrain -> nnUNetv2_predict
-> evaluate -> stats; then the same through the MLflow entry points' commands with backbone=nnunet
(search_lth -> registered cell -> retrain -> registered network (safetensors + JSON) -> evaluate -> stats),
and their one-line errors for bad nnU-Net input."""

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


def _entry(command, args: list[str]) -> str:
    """An MLflow entry point's click command (what ``entrypoints/<step>.py`` runs), in this process."""
    result = CliRunner().invoke(command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _entry_error(command, args: list[str]) -> str:
    """The one-line error of an entry point's command (no traceback)."""
    result = CliRunner().invoke(command, args)
    assert result.exit_code != 0 and not isinstance(result.exception, (AssertionError, TypeError, KeyError)), result.output
    assert "Traceback" not in result.output, result.output
    return result.output.strip()


NNUNET_ARGS = ["--backbone", "nnunet", "--nnunet-dataset", "501", "--nnunet-configuration", "2d", "--nnunet-fold", "0",
               "--nnunet-plans", "nnUNetPlans", "--nnunet-iterations", "4", "--nnunet-val-iterations", "1",
               "--nnunet-max-epochs", "3", "--device", "cpu"]


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

    _entry_points(tmp_path, monkeypatch, prepared, env_dirs, ids[1])


def _entry_points(tmp_path, monkeypatch, prepared, env_dirs, baseline_eval: str) -> None:
    """search_lth -> retrain -> evaluate -> stats through the entry points' commands with backbone=nnunet."""
    import mlflow
    from safetensors.torch import load_file

    from iac import registry
    from iac.commands.evaluate import evaluate
    from iac.commands.retrain import retrain
    from iac.commands.search import search_lth

    pre = env_dirs["nnUNet_preprocessed"] / DATASET
    (pre / "nnUNetPlans_iac.json").unlink(missing_ok=True)  # left by the commands above; the entry points write their own
    search = ["--data", str(prepared), "--epochs", "4", "--warmup-epochs", "0", "--nodes", "2", "--cell-channels", "4",
              "--k", "2", "--check-every", "2", "--tau", "1.0", "--patience", "1"]

    # bad nnU-Net input: one line each, and nothing written
    def replaced(flag: str, value: str) -> list[str]:
        args = list(NNUNET_ARGS)
        args[args.index(flag) + 1] = value
        return search + args

    assert "fold 1 has no trained baseline" in _entry_error(search_lth, replaced("--nnunet-fold", "1"))
    assert "dataset 999 does not exist" in _entry_error(search_lth, replaced("--nnunet-dataset", "999"))
    assert "'3d_fullres' is not 2-D" in _entry_error(search_lth, replaced("--nnunet-configuration", "3d_fullres"))
    assert "no configuration '2d_wide'" in _entry_error(search_lth, replaced("--nnunet-configuration", "2d_wide"))
    assert "no plans 'nnUNetResEncPlans'" in _entry_error(search_lth, replaced("--nnunet-plans", "nnUNetResEncPlans"))
    with monkeypatch.context() as m:
        m.delenv("nnUNet_results")
        assert "nnUNet_results is not set" in _entry_error(search_lth, search + NNUNET_ARGS)
    assert "only used with --backbone nnunet" in _entry_error(search_lth, search + ["--nnunet-dataset", "501"])
    assert not (pre / "nnUNetPlans_iac.json").exists()

    # search_lth with backbone=nnunet: the cell registered as iac-cell-<dataset>-nnunet with nnU-Net's names in its tags
    out = _entry(search_lth, search + NNUNET_ARGS)
    cell = registry.versions("iac-cell-phantom-nnunet")[-1]
    assert cell.uri in out
    tags = cell.tags
    assert (tags["method"], tags["nnunet_dataset"], tags["nnunet_plans"], tags["nnunet_configuration"],
            tags["nnunet_fold"]) == ("lth", DATASET, "nnUNetPlans", "2d", "0")
    assert tags["data_fingerprint"] == json.loads((prepared / "manifest.json").read_text())["fingerprint"]
    assert int(tags["pruning_events"]) > 0 and int(tags["epochs_run"]) >= 1
    genotype = registry.load_cell(cell.uri)
    client = mlflow.MlflowClient()
    run = mlflow.get_run(cell.run_id)
    assert run.data.tags["step"] == "search_lth" and run.data.tags["backbone"] == "nnunet"
    metrics = run.data.metrics
    # nnU-Net's losses and pseudo-Dice, and the search's values, arrive through nnU-Net's logger mechanism
    for key in ("nnunet/train_losses", "nnunet/val_losses", "nnunet/mean_fg_dice", "nnunet/search/surviving_ops",
                "nnunet/search/pruning_events"):
        assert key in metrics, key
    assert any(k.startswith("nnunet/search/alpha/") for k in metrics)
    assert any(k.startswith("nnunet/search/js/") for k in metrics)
    surviving = [m.value for m in client.get_metric_history(run.info.run_id, "nnunet/search/surviving_ops")]
    assert len(surviving) == int(tags["epochs_run"]) and surviving[-1] < surviving[0]

    # a genotype that is not one of the project's search space: one line, nothing written
    bad = json.loads(genotype.to_json())
    for block in (bad["space"], bad["signature"]):
        block["ops"] = [op if op != "sep_conv_5x5" else "conv_9x9" for op in block["ops"]]
    (tmp_path / "bad_genotype.json").write_text(json.dumps(bad))
    before = (pre / "nnUNetPlans_iac.json").read_text()
    err = _entry_error(retrain, ["--data", str(prepared), "--skip", "iac", "--genotype",
                                 str(tmp_path / "bad_genotype.json"), "--epochs", "1", *NNUNET_ARGS])
    assert len(err.splitlines()) == 1 and "unknown operation 'conv_9x9'" in err
    assert (pre / "nnUNetPlans_iac.json").read_text() == before

    # retrain with the registered cell: iac-unet-<dataset>-nnunet, weights as safetensors plus a JSON
    out = _entry(retrain, ["--data", str(prepared), "--skip", "iac", "--genotype", cell.uri, "--epochs", "1",
                           *NNUNET_ARGS])
    unet = registry.versions("iac-unet-phantom-nnunet")[-1]
    assert unet.uri in out
    assert (unet.tags["skip"], unet.tags["genotype"], unet.tags["cell_method"], unet.tags["nnunet_plans"],
            unet.tags["nnunet_configuration"], unet.tags["nnunet_fold"], unet.tags["nnunet_dataset"]) == (
        "iac", cell.uri, "lth", "nnUNetPlans", "2d", "0", DATASET)
    local = mlflow.artifacts.download_artifacts(artifact_uri=unet.uri, dst_path=str(tmp_path / "unet"))
    files = sorted(os.listdir(local))
    assert files == ["model.safetensors", "nnunet_model.json"], files  # no pickle
    config = json.loads(open(os.path.join(local, "nnunet_model.json")).read())
    arch = config["plans"]["configurations"][config["configuration"]]["architecture"]
    assert config["configuration"] == "2d_iac" and Genotype.from_json(arch["arch_kwargs"]["genotype"]) == genotype
    weights = load_file(os.path.join(local, "model.safetensors"))
    assert any(k.startswith("decoder.skip_modules.") for k in weights)  # the cells' weights
    listing = _iac(["registry", "list"])
    assert "iac-cell-phantom-nnunet" in listing and "iac-unet-phantom-nnunet" in listing

    # evaluate through the entry point: nnU-Net's predictor, the same per_case.csv
    out = _entry(evaluate, ["--model", unet.uri, "--data", str(prepared), "--split", "test", "--device", "cpu"])
    eval_id = _run_id(out)
    tags = mlflow.get_run(eval_id).data.tags
    assert (tags["backbone"], tags["method"], tags["restore"]) == ("nnunet", "iac-lth", "probabilities")
    local = mlflow.artifacts.download_artifacts(run_id=eval_id, dst_path=str(tmp_path / "eval"))
    df, meta = load_per_case(os.path.join(local, "per_case.csv"))
    assert set(df["patient"]) == {"patient003", "patient004"} and meta["method"] == "iac-lth"
    assert {"patient", "frame", "label", "dice", "hd95", "ref_empty", "pred_empty"} <= set(df.columns)
    out = _iac(["stats", "--runs", f"{eval_id},{baseline_eval}", "--reference", "iac-lth", "--min-pairs", "2",
                "--n-boot", "200"])
    assert "nnunet" in out and "iac-lth" in out
