"""``iac server``: the shared tracking server of a lab (an ``mlflow server`` with a served artifact store)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from iac.commands.common import setup_logging

DEFAULT_BACKEND = "sqlite:///mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


def server_command(backend_store_uri: str, artifacts_destination: str, host: str, port: int, workers: int) -> list[str]:
    """The ``mlflow server`` command line ``iac server`` runs.

    Artifacts are served by the server itself (``--serve-artifacts``): clients
    upload and download them through HTTP and need no credentials or mount of
    the artifact store.
    """
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", artifacts_destination,
        "--serve-artifacts",
        "--host", host,
        "--port", str(port),
        "--workers", str(workers),
    ]


@click.command("server")
@click.option("--backend-store-uri", default=DEFAULT_BACKEND, show_default=True,
              help="Runs and registry: postgresql://user:password@host:5432/db (shared), or a SQLite file.")
@click.option("--artifacts-destination", default=DEFAULT_ARTIFACTS, show_default=True,
              help="Where the served artifacts are kept: a folder (shared disk) or s3://, gs://, ... URI.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: every host of the lab).")
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--workers", default=4, show_default=True, type=int, help="Server worker processes.")
def server(**o: Any) -> None:
    """Start the shared tracking server: checks the backend store first, then runs `mlflow server`."""
    from iac.backend import BackendError, check_tracking_store

    setup_logging()
    if o["workers"] < 1:
        raise click.BadParameter(f"must be >= 1, got {o['workers']}", param_hint="--workers")
    try:
        check_tracking_store(o["backend_store_uri"])
    except BackendError as e:
        raise click.ClickException(str(e)) from None
    dest = o["artifacts_destination"]
    if "://" not in dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        dest = str(Path(dest).resolve())
    cmd = server_command(o["backend_store_uri"], dest, o["host"], o["port"], o["workers"])
    # MLflow's GenAI job runner is not used by the project; it would start extra worker processes.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # The server replaces this process: a signal to it reaches mlflow directly.
    os.execv(cmd[0], cmd)
