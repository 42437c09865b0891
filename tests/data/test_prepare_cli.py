"""The ``prepare`` MLflow entry point, run for real through ``mlflow run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from iac.cli import main

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_cli_rejects_bad_options(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["prepare", "--out", str(tmp_path / "o"), "--spacing", "abc"])
    assert res.exit_code == 2 and "--spacing" in res.output and "expected a number" in res.output
    res = runner.invoke(main, ["prepare", "--dataset", "acdc", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "--source" in res.output
    res = runner.invoke(main, ["prepare", "--val-fraction", "0.6", "--test-fraction", "0.5"])
    assert res.exit_code == 2 and "leave no training patients" in res.output
    res = runner.invoke(main, ["prepare", "--skip-bad", "maybe"])
    assert res.exit_code == 2 and "expected true or false" in res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.mlflow_cli
def test_mlflow_run_prepare(experiment, mlflow_store, tmp_path):
    import mlflow

    out = tmp_path / "phantom"
    cmd = [
        sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "-e", "prepare", "--env-manager", "local",
        "--experiment-name", experiment,
        "-P", f"out={out}", "-P", "phantom_patients=4", "-P", "phantom_size=24",
        "-P", "val_fraction=0.25", "-P", "test_fraction=0.25", "-P", "workers=2",
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")}
    env.update(MLFLOW_TRACKING_URI=mlflow_store, MLFLOW_REGISTRY_URI=mlflow_store)
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["name"] == "phantom"
    parts = [set(manifest["splits"][s]) for s in ("train", "val", "test")]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])

    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["step"] == "prepare" and run.data.tags["dataset"] == "phantom"
    assert run.data.tags["data_fingerprint"] == manifest["fingerprint"]
    assert run.data.params["phantom_patients"] == "4"
    assert run.data.metrics["n_cases"] == 8
    assert run.inputs.dataset_inputs[0].dataset.digest == manifest["fingerprint"][:36]
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"manifest.json", "bad_cases.json"} <= arts
