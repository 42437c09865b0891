"""Create or upgrade the tracking store once, under an inter-process lock.

MLflow creates a new SQL store's schema (and upgrades an old one) the first
time a process opens it; two processes doing that at once on a new SQLite
file collide (``table experiments already exists``, ``duplicate column
name``). :func:`open_store` makes every command open the tracking and
registry stores while holding a file lock next to the database, so the first
user creates the schema and every later one finds it ready. A SQLite store is
for one machine (the lock is a local file); several hosts share an
``mlflow server`` (``http://``), which creates its store once itself.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import click

# Seconds to wait for another process creating or upgrading the store.
STORE_LOCK_TIMEOUT = float(os.environ.get("IAC_STORE_LOCK_TIMEOUT", "300"))
# Database schemes MLflow opens through SQLAlchemy (and migrates on first use).
_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")

_ready: set[tuple[str, str]] = set()


class StoreLockedError(click.ClickException):
    """Another process held the store's lock for longer than the timeout."""


def store_lock_path(uri: str) -> Path | None:
    """The lock file guarding ``uri``'s creation, or None for a store that needs none.

    SQLite: ``<database file>.lock`` beside the file. Another SQL database:
    a file in the temporary folder named after the URI (it guards the
    processes of this machine; other machines should go through a server).
    """
    scheme = urlparse(uri).scheme.split("+", 1)[0]
    if scheme not in _SQL_SCHEMES:
        return None
    if scheme == "sqlite":
        db = uri.split(":///", 1)[1] if ":///" in uri else ""
        if not db or db == ":memory:":
            return None
        return Path(db).expanduser().resolve().with_name(Path(db).name + ".lock")
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"iac-store-{digest}.lock"


def open_store(timeout: float | None = None) -> None:
    """Create or upgrade the current tracking and registry stores under their lock (once per process).

    Args:
        timeout: seconds to wait for the lock (default :data:`STORE_LOCK_TIMEOUT`).

    Raises:
        StoreLockedError: another process held the lock for longer.
        click.ClickException: the store (or the folder it would be created in) is not writable.
    """
    import mlflow
    from filelock import FileLock, Timeout

    from iac.commands.common import check_store, check_store_writable

    uri, reg = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    if (uri, reg) in _ready:
        return
    # A server or database that does not answer, refuses the password or holds a schema this MLflow
    # cannot use, and a read-only local store, each stop here with one line before anything is written.
    check_store()
    check_store_writable(uri)
    wait = STORE_LOCK_TIMEOUT if timeout is None else timeout
    locks = [p for p in dict.fromkeys([store_lock_path(uri), store_lock_path(reg)]) if p is not None]
    held = []
    try:
        for path in locks:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(path), timeout=wait)
            try:
                lock.acquire()
            except Timeout:
                raise StoreLockedError(
                    f"tracking store {uri} is locked by another process for more than {wait:g} s "
                    f"(lock file {path}); wait for that process or raise IAC_STORE_LOCK_TIMEOUT"
                ) from None
            held.append(lock)
        # The first calls create (or upgrade) the schema and MLflow's default experiment.
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=reg)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    finally:
        for lock in reversed(held):
            lock.release()
    _ready.add((uri, reg))
