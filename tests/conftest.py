"""Shared fixtures: one MLflow SQLite store per test session, one-thread torch, tiny cohorts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> str:
    """A SQLite tracking + registry store shared by every test of the session.

    Creating a SQLite store runs its migrations (seconds), so it is made once.
    Tests isolate themselves by experiment name rather than by store.
    """
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_REGISTRY_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # Artifacts of the default experiment go next to the database.
    os.environ["IAC_ARTIFACT_ROOT"] = str(root / "artifacts")
    return uri


@pytest.fixture
def experiment(mlflow_store, request) -> str:
    """A fresh experiment per test (named after the test), set as active."""
    import mlflow

    name = f"test-{request.node.name}"[:200]
    root = Path(os.environ["IAC_ARTIFACT_ROOT"]) / name
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=root.as_uri())
    mlflow.set_experiment(name)
    return name


@pytest.fixture
def single_thread():
    """Run on one intra-op thread: tensors in the tests are tiny, and on shared cores
    thread synchronisation costs more than the arithmetic (one thread is several
    times faster, and results do not depend on the thread count)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
