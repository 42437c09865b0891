"""The MLflow entry points run for real through ``mlflow run . -e <step>``.

retrain (attention, 2 epochs) -> evaluate -> search_full -> retrain with the
found cell -> search_lth, each a separate ``mlflow run`` process against the
session's SQLite store, with tiny budgets.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY_SEARCH = ["epochs=3", "warmup_epochs=1", "max_slices_per_epoch=8", "batch_size=4", "cell_channels=4", "nodes=2", "check_every=1"]


def _mlflow_run(step: str, params: list[str], experiment: str, store: str, cwd: Path) -> str:
    cmd = [sys.executable, "-m", "mlflow", "run", str(PROJECT_ROOT), "-e", step, "--env-manager", "local", "--experiment-name", experiment]
    for p in params:
        cmd += ["-P", p]
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")}
    env.update(MLFLOW_TRACKING_URI=store, MLFLOW_REGISTRY_URI=store)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"mlflow run -e {step} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from iac.config import PrepareConfig
    from iac.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("mlrun") / "prepared"
    prepare_dataset(PrepareConfig(out=out, phantom_patients=8, phantom_size=32, workers=1), progress=False)
    return out


@pytest.mark.mlflow_cli
def test_entry_points_chain(prepared, mlflow_store, tmp_path):
    import mlflow

    from iac import registry

    exp = "mlflow-run-chain"
    mlflow.set_experiment(exp)
    data = f"data={prepared}"

    _mlflow_run("retrain", [data, "backbone=unet", "skip=attention", "epochs=2", "max_slices_per_epoch=8", "batch_size=4"], exp, mlflow_store, tmp_path)
    runs = mlflow.search_runs(experiment_names=[exp], filter_string="tags.step = 'retrain'", output_format="list")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["skip"] == "attention"
    unet_uri = next(v.uri for v in reversed(registry.versions("iac-unet-phantom-unet")) if v.run_id == runs[0].info.run_id)

    # predict: the raw phantom scans kept inside the prepared folder, one label file each.
    scans = sorted(prepared.rglob("patient*_frame??.nii.gz"))[:2]
    labels = tmp_path / "labels"
    _mlflow_run("predict", [f"model={unet_uri}", f"input={','.join(map(str, scans))}", f"out={labels}"],
                exp, mlflow_store, tmp_path)
    assert sorted(p.name for p in labels.glob("*.nii.gz")) == sorted(p.name for p in scans)

    _mlflow_run("evaluate", [f"model={unet_uri}", data], exp, mlflow_store, tmp_path)
    ev = mlflow.search_runs(experiment_names=[exp], filter_string="tags.step = 'evaluate'", output_format="list")
    assert len(ev) == 1
    assert "per_case.csv" in {a.path for a in mlflow.MlflowClient().list_artifacts(ev[0].info.run_id)}

    _mlflow_run("search_full", [data, f"pretrained={unet_uri}", *TINY_SEARCH], exp, mlflow_store, tmp_path)
    full = mlflow.search_runs(experiment_names=[exp], filter_string="tags.step = 'search_full'", output_format="list")[0]
    cell_uri = full.data.tags["cell_uri"]
    assert registry.resolve(cell_uri).tags["method"] == "full"

    _mlflow_run("retrain", [data, "skip=iac", f"genotype={cell_uri}", "epochs=1", "max_slices_per_epoch=8", "batch_size=4"], exp, mlflow_store, tmp_path)
    iac_runs = mlflow.search_runs(experiment_names=[exp], filter_string="tags.skip = 'iac'", output_format="list")
    assert iac_runs and iac_runs[0].data.tags["genotype"] == registry.resolve(cell_uri).uri

    _mlflow_run(
        "search_lth",
        [data, f"pretrained={unet_uri}", *TINY_SEARCH, "tau=0.5", "patience=1", f"reference_run={full.info.run_id}"],
        exp,
        mlflow_store,
        tmp_path,
    )
    lth = mlflow.search_runs(experiment_names=[exp], filter_string="tags.step = 'search_lth'", output_format="list")[0]
    assert registry.resolve(lth.data.tags["cell_uri"]).tags["method"] == "lth"
    assert "speedup_vs_full" in lth.data.metrics
