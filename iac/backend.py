"""Check a tracking store or a Ray cluster before a step uses it, in seconds and with one clear line.

MLflow's client retries an unreachable server for minutes (urllib3 retries
with exponential back-off) and reports a wrong PostgreSQL password or a store
written by a newer MLflow as a long traceback. The commands call
:func:`check_tracking_store` (and ``main`` :func:`check_ray_address`) first,
with a short timeout and no retries; the MLflow client keeps its own retries
for the rest of the run, so a tracking server that restarts in the middle of a
run is waited for rather than fatal.

Errors are :class:`BackendError` (a ``ValueError``) with a one-line message
that never shows a password.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

# Seconds the checks wait for a server to answer (well inside the 10 s a user waits for an error).
CHECK_TIMEOUT_S = 4.0


class BackendError(ValueError):
    """The tracking store or Ray cluster cannot be used; the message says why in one line."""


def redact(uri: str) -> str:
    """``uri`` with the password replaced by ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def check_tracking_store(uri: str | None = None, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Raise :class:`BackendError` unless the tracking store at ``uri`` answers and its schema is usable.

    Args:
        uri: a tracking URI (``http(s)://`` server, ``postgresql://``, ``mysql://``,
            ``sqlite://`` or a file store); None = MLflow's current tracking URI.
        timeout: seconds to wait for a server or database.
    """
    if uri is None:
        import mlflow

        uri = mlflow.get_tracking_uri()
    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        _check_http(uri, timeout)
    elif scheme.startswith(("postgresql", "mysql", "mssql")):
        _check_database(uri, timeout)
    elif scheme == "sqlite":
        import sqlalchemy

        db = sqlalchemy.engine.make_url(uri).database
        if db and db != ":memory:" and Path(db).is_file():  # a new file is created by MLflow itself
            _check_database(uri, timeout)


def _check_http(uri: str, timeout: float) -> None:
    import requests

    try:
        resp = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
    except requests.RequestException as e:
        raise BackendError(
            f"tracking server {redact(uri)} is not reachable ({_reason(e)}); start it (`iac server`) "
            "or set MLFLOW_TRACKING_URI to a running one"
        ) from None
    if resp.status_code != 200:
        raise BackendError(
            f"tracking server {redact(uri)} answered HTTP {resp.status_code} on /health; "
            "is it an MLflow tracking server?"
        )


def _reason(e: BaseException) -> str:
    """The innermost reason of a connection error ('connection refused', 'timed out', ...)."""
    text = str(e)
    for pattern, reason in (
        (r"Connection refused", "connection refused"),
        (r"timed out|Timeout", "no answer within the time limit"),
        (r"Name or service not known|nodename nor servname|getaddrinfo failed|Temporary failure in name resolution", "unknown host"),
    ):
        if re.search(pattern, text):
            return reason
    return type(e).__name__


def _check_database(uri: str, timeout: float) -> None:
    """Connect with a timeout, then compare the store's schema revision with this MLflow's migrations."""
    import sqlalchemy
    from sqlalchemy.exc import NoSuchModuleError, OperationalError, ProgrammingError

    url = sqlalchemy.engine.make_url(uri)
    connect_args: dict = {}
    if url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = max(1, int(timeout))
    elif url.get_backend_name() == "mysql":
        connect_args["connect_timeout"] = max(1, int(timeout))
    try:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
    except (ModuleNotFoundError, NoSuchModuleError) as e:
        extra = ""
        if url.get_backend_name() == "postgresql":
            extra = " (pip install 'iac-lth[postgres]' and write the URI as postgresql+psycopg2://...)"
        raise BackendError(f"tracking store {redact(uri)} needs a database driver that is not installed: {e}{extra}") from None
    try:
        with engine.connect() as con:
            try:
                rows = con.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).fetchall()
            except (OperationalError, ProgrammingError):
                rows = []  # a new, empty store: MLflow creates its tables
    except OperationalError as e:
        raise BackendError(_database_error(uri, url, e)) from None
    finally:
        engine.dispose()
    if rows:
        _check_schema(uri, str(rows[0][0]))


def _database_error(uri: str, url, e: Exception) -> str:
    text = str(getattr(e, "orig", e))
    where = f"{url.host or 'localhost'}:{url.port or 5432}" if url.get_backend_name() == "postgresql" else str(url.host or url.database)
    if "password authentication failed" in text or "Access denied" in text:
        return f"the database at {where} refused the password of user {url.username!r} (tracking store {redact(uri)}): check the password in the URI"
    if re.search(r'database "[^"]+" does not exist', text) or "Unknown database" in text:
        return f"database {url.database!r} does not exist at {where} (tracking store {redact(uri)}): create it first (createdb {url.database})"
    if "Connection refused" in text or "could not connect" in text or "timeout expired" in text:
        return f"the database at {where} is not reachable ({'no answer' if 'timeout' in text else 'connection refused'}; tracking store {redact(uri)})"
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"cannot open the tracking store {redact(uri)}: {first}"


def _check_schema(uri: str, revision: str) -> None:
    """Raise unless ``revision`` is this MLflow's newest schema revision."""
    import mlflow
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config

    script = ScriptDirectory.from_config(_get_alembic_config(uri))
    head = script.get_current_head()
    if revision == head:
        return
    known = {rev.revision for rev in script.walk_revisions()}
    if revision not in known:
        raise BackendError(
            f"tracking store {redact(uri)} has schema revision {revision}, which this MLflow ({mlflow.__version__}) "
            "does not know: it was written by a newer MLflow; upgrade MLflow to that version (nothing was changed)"
        )
    raise BackendError(
        f"tracking store {redact(uri)} has the older schema revision {revision} (this MLflow's is {head}): "
        f"back it up, then run `mlflow db upgrade {redact(uri)}`"
    )


def check_ray_address(address: str, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Raise :class:`BackendError` unless a Ray cluster's GCS answers at ``address`` (``host:port``).

    ``auto`` and ``local`` (start a local cluster) are not checked here; a
    ``ray://`` client address is checked on its host and port.
    """
    if address in ("", "auto", "local"):
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise BackendError(f"ray_address {address!r} is not host:port (e.g. 10.0.0.5:6379), 'auto' or 'local'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        reason = "no answer within the time limit" if isinstance(e, socket.timeout) else (e.strerror or type(e).__name__).lower()
        raise BackendError(
            f"no Ray cluster at {address} ({reason}); start one with `ray start --head` or fix ray_address"
        ) from None
