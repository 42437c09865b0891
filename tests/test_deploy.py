"""The Kubernetes path, checked offline: MLflow renders the job of `mlflow run deploy --backend kubernetes`.

The rendering is MLflow's own (the functions its Kubernetes backend calls
before submitting); no cluster, image build or registry push is involved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"


@pytest.fixture(scope="module")
def projects():
    from mlflow.projects._project_spec import load_project

    return load_project(str(ROOT)), load_project(str(DEPLOY))


def test_the_cluster_project_uses_the_image_and_mirrors_the_root_entry_points(projects):
    root, cluster = projects
    assert cluster.env_type == "docker_env" and cluster.docker_env["image"] == "iac-lth:latest"
    assert root.env_type == "conda_env"  # the root project keeps its conda environment
    assert set(cluster._entry_points) == set(root._entry_points)
    for name, ep in root._entry_points.items():
        other = cluster._entry_points[name]
        assert {k: (p.type, p.default) for k, p in other.parameters.items()} == {
            k: (p.type, p.default) for k, p in ep.parameters.items()
        }, name
        # Same options in the same order; only the program differs (the installed package, not the checkout's script).
        assert other.command.startswith(f"python -m iac.cli {name} ")
        assert other.command.replace(f"python -m iac.cli {name}", f"python entrypoints/{name}.py", 1) == ep.command


def _render(cluster, entry: str, params: dict) -> dict:
    from mlflow.projects import _parse_kubernetes_config
    from mlflow.projects.kubernetes import _get_kubernetes_job_definition, _get_run_command

    config = json.loads((DEPLOY / "kubernetes_config.json").read_text())
    cwd = os.getcwd()
    os.chdir(ROOT)  # the template path in the config is relative to the project root
    try:
        kube = _parse_kubernetes_config(config)
    finally:
        os.chdir(cwd)
    command = _get_run_command([cluster.get_entry_point(entry).compute_command(params, storage_dir=None)])
    env = {"MLFLOW_RUN_ID": "0123abcd", "MLFLOW_TRACKING_URI": "http://tracking-host:5000", "MLFLOW_EXPERIMENT_ID": "7"}
    image = f"{config['repository-uri']}:5a1b2c3"
    return _get_kubernetes_job_definition(cluster.name, image, "sha256:" + "e" * 64, command, env, kube["kube-job-template"])


def test_the_rendered_job_asks_for_a_gpu_shared_memory_and_the_data_volume(projects):
    _, cluster = projects
    job = _render(cluster, "main", {"budget": "paper", "dataset": "acdc", "source": "/data/raw/ACDC", "data": "/data/prepared/acdc"})
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["name"].startswith("iac-lth-cluster-") and job["metadata"]["namespace"] == "iac-lth"
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    (container,) = spec["containers"]
    assert container["image"] == "registry.example.org/iac-lth:5a1b2c3@sha256:" + "e" * 64
    cmd = container["command"]
    assert cmd[:4] == ["python", "-m", "iac.cli", "main"]
    assert cmd[cmd.index("--budget") + 1] == "paper" and cmd[cmd.index("--data") + 1] == "/data/prepared/acdc"
    assert cmd[cmd.index("--executor") + 1] == "local"  # every other parameter takes its default
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MLFLOW_TRACKING_URI"] == "http://tracking-host:5000" and env["MLFLOW_RUN_ID"] == "0123abcd"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    res = container["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 1 and res["requests"]["nvidia.com/gpu"] == 1
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["dshm"] == "/dev/shm" and volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    assert mounts["data"] == "/data" and volumes["data"]["persistentVolumeClaim"]["claimName"] == "iac-lth-data"


def test_every_entry_point_renders_a_runnable_command(projects):
    from mlflow.projects.kubernetes import _get_run_command

    _, cluster = projects
    for name in cluster._entry_points:
        command = _get_run_command([cluster.get_entry_point(name).compute_command({}, storage_dir=None)])
        assert command[:4] == ["python", "-m", "iac.cli", name]
        options = [c for c in command[4:] if c.startswith("--")]
        assert len(options) == len(set(options)) == len(cluster.get_entry_point(name).parameters)
