"""Fixtures of the shared-server tests: a real PostgreSQL cluster and a real tracking server on it."""

from __future__ import annotations

import os

import pytest

from serverkit import Postgres, TrackingServer


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster for the session (started as an unprivileged user when run as root)."""
    pg = Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def tracking_server(postgres, tmp_path_factory):
    """``iac server`` on a PostgreSQL database, with its artifacts served from a folder."""
    root = tmp_path_factory.mktemp("server")
    server = TrackingServer(postgres.create_database("mlflow_shared"), root / "artifacts").start()
    yield server
    server.stop()


@pytest.fixture
def on_server(tracking_server, mlflow_store):
    """Point this process (and the processes it starts) at the tracking server; restore the SQLite store after."""
    import mlflow

    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    os.environ["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_REGISTRY_URI"] = tracking_server.url
    mlflow.set_tracking_uri(tracking_server.url)
    mlflow.set_registry_uri(tracking_server.url)
    yield tracking_server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    mlflow.set_tracking_uri(mlflow_store)
    mlflow.set_registry_uri(mlflow_store)
