"""Bad tracking stores and Ray addresses fail in seconds with one clear line, no traceback, nothing written."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from iac.backend import BackendError, check_ray_address, check_tracking_store, redact
from serverkit import PG_PASSWORD, PROJECT_ROOT, free_port

FAST = 10.0  # seconds: the bound a user waits for the error (MLflow's own retries take minutes)


@pytest.fixture
def tracking_uri(mlflow_store):
    """Set the tracking URI for one test, restoring the session's SQLite store afterwards."""
    import mlflow

    def use(uri: str) -> None:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)

    yield use
    use(mlflow_store)


def _one_line_error(result) -> str:
    """The CLI output of a failed command: exactly one ``Error:`` line and no traceback."""
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_an_unreachable_server_fails_main_in_seconds(tracking_uri, tmp_path):
    import mlflow

    from iac.commands.main import main

    url = f"http://127.0.0.1:{free_port()}"
    tracking_uri(url)
    t0 = time.monotonic()
    result = CliRunner().invoke(main, ["--budget", "smoke", "--report-dir", str(tmp_path / "out")])
    assert time.monotonic() - t0 < FAST
    line = _one_line_error(result)
    assert f"tracking server {url} is not reachable (connection refused)" in line
    assert mlflow.active_run() is None and not (tmp_path / "out").exists()  # nothing started, nothing written


@pytest.fixture
def silent_port():
    """A port that accepts connections (the kernel completes them) but never answers: a hung server."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def test_a_silent_server_or_database_times_out_quickly(silent_port):
    for uri in (f"http://127.0.0.1:{silent_port}", f"postgresql+psycopg2://iac:pw@127.0.0.1:{silent_port}/mlflow"):
        t0 = time.monotonic()
        with pytest.raises(BackendError, match=r"not reachable \((no answer|no answer within the time limit)"):
            check_tracking_store(uri, timeout=2)
        assert time.monotonic() - t0 < FAST


def test_a_wrong_postgres_password_is_one_line(postgres, tracking_uri):
    from iac.commands.registry import registry

    uri = postgres.uri("postgres", password="not-the-password")
    result = CliRunner().invoke(registry, ["list", "--tracking-uri", uri])
    line = _one_line_error(result)
    assert "refused the password of user 'iac'" in line
    assert "not-the-password" not in line and PG_PASSWORD not in line  # no password on the screen


def test_iac_server_refuses_a_wrong_password_before_starting(postgres, tmp_path):
    artifacts = tmp_path / "artifacts"
    cmd = [sys.executable, "-m", "iac.cli", "server", "--backend-store-uri", postgres.uri("postgres", password="wrong"),
           "--artifacts-destination", str(artifacts), "--port", str(free_port())]
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"Error: the database at 127.0.0.1:{postgres.port} refused the password of user 'iac' "
        f"(tracking store {redact(postgres.uri('postgres', password='wrong'))}): check the password in the URI"
    ]
    assert not artifacts.exists()


def test_a_store_of_a_newer_mlflow_is_refused_and_left_as_it_was(tmp_path, tracking_uri):
    import sqlite3

    import mlflow

    from iac.commands.registry import registry

    uri = f"sqlite:///{tmp_path / 'newer.db'}"
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()  # a real store, created by this MLflow
    with sqlite3.connect(tmp_path / "newer.db") as con:
        con.execute("UPDATE alembic_version SET version_num = 'f0f0f0f0f0f0'")
        tables = con.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
    before = (tmp_path / "newer.db").read_bytes()
    result = CliRunner().invoke(registry, ["list", "--tracking-uri", uri])
    line = _one_line_error(result)
    assert "schema revision f0f0f0f0f0f0" in line and "written by a newer MLflow" in line
    assert (tmp_path / "newer.db").read_bytes() == before
    with sqlite3.connect(tmp_path / "newer.db") as con:
        assert con.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall() == tables


def test_an_older_schema_names_the_upgrade_and_a_newer_postgres_schema_is_refused(postgres):
    import psycopg2

    from iac.backend import _check_schema

    uri = postgres.create_database("newer_schema")
    con = psycopg2.connect(uri.replace("+psycopg2", ""))
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute("CREATE TABLE alembic_version (version_num varchar(32) NOT NULL)")
        cur.execute("INSERT INTO alembic_version VALUES ('f0f0f0f0f0f0')")
    con.close()
    with pytest.raises(BackendError, match=r"revision f0f0f0f0f0f0, which this MLflow .* does not know"):
        check_tracking_store(uri)
    first = "451aebb31d03"  # MLflow's first schema revision (add metric step)
    with pytest.raises(BackendError, match=f"older schema revision {first}.*mlflow db upgrade"):
        _check_schema(uri, first)


def test_a_missing_database_and_a_bad_ray_address_are_one_line(postgres):
    with pytest.raises(BackendError, match="database 'nope' does not exist"):
        check_tracking_store(postgres.uri("nope"))
    with pytest.raises(BackendError, match=r"no Ray cluster at 127\.0\.0\.1:\d+ \(connection refused\)"):
        check_ray_address(f"127.0.0.1:{free_port()}")
    with pytest.raises(BackendError, match="is not host:port"):
        check_ray_address("headnode")


def test_an_unreachable_ray_address_fails_main_in_seconds(mlflow_store, tmp_path):
    from iac.commands.main import main

    address = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    result = CliRunner().invoke(main, ["--budget", "smoke", "--executor", "ray", "--ray-address", address,
                                       "--report-dir", str(tmp_path / "out")])
    assert time.monotonic() - t0 < FAST
    line = _one_line_error(result)
    assert line == f"Error: no Ray cluster at {address} (connection refused); start one with `ray start --head` or fix ray_address"
    assert not (tmp_path / "out").exists()
