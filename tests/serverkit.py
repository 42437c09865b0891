"""A real PostgreSQL 15 cluster and a real ``mlflow server`` on localhost, for the shared-server tests.

``initdb`` refuses to run as root; when the tests run as root, the cluster is
created and started as an unprivileged user: ``postgres`` when it exists, else
a system user ``iacpg`` (created with ``useradd``), else ``nobody``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PG_USER = "iac"  # the database role the tracking server logs in as
PG_PASSWORD = "iac-secret"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl`` (``PG_BIN``, the PATH, or a Debian layout)."""
    candidates = [os.environ.get("PG_BIN", "")]
    found = shutil.which("initdb")
    if found:
        candidates.append(str(Path(found).resolve().parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql or set PG_BIN")


def _os_user() -> pwd.struct_passwd | None:
    """The unprivileged account that runs PostgreSQL (None: run as the current user)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "iacpg"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    if shutil.which("useradd"):
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "iacpg"], check=False)
        try:
            return pwd.getpwnam("iacpg")
        except KeyError:
            pass
    return pwd.getpwnam("nobody")


class Postgres:
    """One throw-away PostgreSQL cluster listening on 127.0.0.1 with password authentication."""

    def __init__(self) -> None:
        self.bin = pg_bin()
        self.user = _os_user()
        # Not under pytest's tmp folder: that is private to root (0700) and the server user must reach it.
        self.root = Path(tempfile.mkdtemp(prefix="iac-pg-"))
        self.data = self.root / "data"
        self.port = free_port()

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        extra = {}
        if self.user is not None:
            extra = dict(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
        env = {**os.environ, "HOME": str(self.root), "LC_ALL": "C.UTF-8"}
        return subprocess.run(args, cwd=self.root, env=env, capture_output=True, text=True, check=True, **extra, **kw)

    def start(self) -> "Postgres":
        """initdb (role ``iac`` with a password) and start the server; waits until it accepts connections."""
        pwfile = self.root / "pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        self.root.chmod(0o755)
        if self.user is not None:
            for p in (self.root, pwfile):
                os.chown(p, self.user.pw_uid, self.user.pw_gid)
        self._run([
            str(self.bin / "initdb"), "-D", str(self.data), "-U", PG_USER, f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync",
        ])
        opts = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start"])
        return self

    def stop(self) -> None:
        """Stop the server and delete the cluster."""
        try:
            self._run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def uri(self, database: str, password: str = PG_PASSWORD) -> str:
        """SQLAlchemy URI of ``database`` through psycopg2 (the ``postgres`` extra)."""
        return f"postgresql+psycopg2://{PG_USER}:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URI."""
        import psycopg2

        con = psycopg2.connect(self.uri("postgres").replace("+psycopg2", ""))
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        con.close()
        return self.uri(name)


class TrackingServer:
    """``iac server`` (an ``mlflow server`` with a served artifact store) in its own process group."""

    def __init__(self, backend_uri: str, artifacts: Path, workers: int = 1) -> None:
        self.backend_uri, self.artifacts, self.workers = backend_uri, artifacts, workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = artifacts.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 120.0) -> "TrackingServer":
        """Start the server and wait for its health check."""
        cmd = [
            sys.executable, "-m", "iac.cli", "server", "--backend-store-uri", self.backend_uri,
            "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers),
        ]
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tracking server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"tracking server did not answer in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        """Terminate the server's process group (the server and its workers)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
