"""What every step's click command shares: option checks and the MLflow run.

Only the commands, the tracker, the registry, the pyfunc model and the study
driver (:mod:`iac.study`) import MLflow. A command parses and
validates its options, builds the step's config, opens a run with
:func:`step_run`, and hands an :class:`iac.tracking.MlflowTracker` to the core.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, Iterator, Sequence

import click

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Model downloads print one progress line per file of the packaged code; the
# steps show their own progress instead.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow.store", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def one_of(name: str, value: str, valid: Sequence[str]) -> str:
    """Return ``value`` if valid, else raise a usage error that lists the valid names."""
    if value in valid:
        return value
    close = difflib.get_close_matches(value, list(valid), n=1)
    hint = f" — did you mean {close[0]!r}?" if close else ""
    raise click.BadParameter(f"{value!r} is not one of {', '.join(valid)}{hint}", param_hint=f"--{name}")


def build_config(cls: type, **values: Any) -> Any:
    """``cls(**values)``, with a :class:`iac.config.ConfigError` turned into a usage error.

    The configs validate themselves; the error names the option matching the
    field (``--w-lr`` for ``w_lr``). A config with a ``device`` also has it
    checked against this machine (:func:`check_device`) before any work starts.
    """
    from iac.config import ConfigError

    try:
        cfg = cls(**values)
    except ConfigError as err:
        raise click.BadParameter(err.reason, param_hint=f"--{err.field.replace('_', '-')}") from err
    if isinstance(getattr(cfg, "device", None), str):
        check_device(cfg.device)
    return cfg


def check_device(value: str) -> None:
    """A device this machine can use, else a usage error in one line (CPU-only PyTorch, no GPU, driver too old)."""
    from iac.train.device import resolve_device

    try:
        resolve_device(value)
    except (ValueError, RuntimeError) as err:
        raise click.BadParameter(str(err), param_hint="--device") from err


def optional(value: str | None) -> str | None:
    """MLflow passes unset string parameters as '' (or 'none'); map them to None."""
    if value is None:
        return None
    v = str(value).strip()
    return None if v.lower() in ("", "none", "null") else v


def positive(name: str, value: float, allow_zero: bool = False) -> float:
    if value < 0 or (value == 0 and not allow_zero):
        raise click.BadParameter(f"must be {'>= 0' if allow_zero else '> 0'}, got {value}", param_hint=f"--{name}")
    return value


def prepared_folder(name: str, value: str) -> Path:
    """A prepared dataset folder that exists and has a manifest."""
    p = Path(value).expanduser()
    if not (p / "manifest.json").is_file():
        raise click.BadParameter(
            f"{value!r} is not a prepared dataset folder (no manifest.json); run `prepare` first",
            param_hint=f"--{name}",
        )
    return p


def model_ref(name: str, value: str) -> str:
    """A model reference: models:/name/N, models:/name@alias, models:/<model_id> or runs:/id/path."""
    if not value.startswith(("models:/", "runs:/")):
        raise click.BadParameter(
            f"{value!r} is not a model URI (expected models:/name/N, models:/name@alias, models:/<model_id> "
            "or runs:/<run id>/model)",
            param_hint=f"--{name}",
        )
    return value


def deterministic_tag(device: str, deterministic: bool) -> str:
    """The ``deterministic`` run tag: whether the run uses deterministic algorithms (always on CPU)."""
    from iac.train.device import resolve_device, use_deterministic

    return str(use_deterministic(resolve_device(device), deterministic)).lower()


def git_commit() -> str | None:
    """The project's git commit; outside a checkout the image's ``$IAC_GIT_COMMIT`` (None when neither)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("IAC_GIT_COMMIT", "").strip() or None


def git_dirty() -> bool:
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return bool(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return False


def local_store_path(uri: str) -> Path | None:
    """The file or folder behind a local tracking store URI (``sqlite:///...``, ``file:...``, a path); None for a server or database."""
    from urllib.parse import urlparse

    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :].split("?", 1)[0]
        return None if path in ("", ":memory:") else Path(path)
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(parsed.path)
    if parsed.scheme:
        return None
    return Path(uri)


def check_store_writable(uri: str | None = None) -> None:
    """Stop with one line when a local tracking store cannot be written (a read-only mount, another owner).

    Probes by creating and removing a file beside the store and opening an existing
    SQLite file for appending, so nothing of the store changes. Called before a step
    opens its run, so a read-only store leaves no half-written run or output behind.

    Raises:
        click.ClickException: the store (or the folder it would be created in) is not writable.
    """
    import tempfile

    import mlflow

    uri = uri or mlflow.get_tracking_uri()
    path = local_store_path(uri)
    if path is None:
        return
    folder = path if path.is_dir() or not path.suffix else path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".iac-write-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
        if path.is_file():
            with open(path, "ab"):
                pass
    except OSError as err:
        reason = err.strerror or str(err)
        raise click.ClickException(
            f"the tracking store {uri} is not writable ({reason}: {err.filename or folder}); "
            "mount it read-write, or set MLFLOW_TRACKING_URI to a writable store"
        ) from err


_CHECKED_STORES: set[str] = set()


def check_store() -> None:
    """Fail in seconds, with one line, when the tracking store cannot be used (once per store and process).

    Raises:
        click.ClickException: the server or database does not answer, refuses the
            password, or holds a schema this MLflow cannot use (:mod:`iac.backend`).
    """
    import mlflow

    from iac.backend import BackendError, check_tracking_store

    uri = mlflow.get_tracking_uri()
    if uri in _CHECKED_STORES:
        return
    try:
        check_tracking_store(uri)
    except BackendError as e:
        raise click.ClickException(str(e)) from None
    _CHECKED_STORES.add(uri)


@contextlib.contextmanager
def step_run(
    step: str,
    tags: dict[str, Any],
    run_name: str | None = None,
    experiment: str | None = None,
    system_metrics: bool = False,
    run_id: str | None = None,
) -> Iterator[Any]:
    """Open the MLflow run of one step and tag it.

    Under ``mlflow run`` the run already exists (``MLFLOW_RUN_ID``) and is
    resumed; otherwise a new run starts in ``experiment`` (or the active/default
    one). A nested call inside an active run (the ``main`` pipeline calling steps
    directly) starts a child run in the parent's experiment. The run ends
    FAILED when the step raises. ``system_metrics`` records CPU, memory and GPU
    use (MLflow's system metrics) for the long steps.
    """
    import mlflow

    from iac.commands.store import open_store

    open_store()
    if experiment and not os.environ.get("MLFLOW_RUN_ID"):
        mlflow.set_experiment(experiment)
    parent = mlflow.active_run()
    nested = parent is not None
    kwargs: dict[str, Any] = {"run_name": run_name, "nested": nested, "log_system_metrics": system_metrics}
    if nested:
        kwargs["experiment_id"] = parent.info.experiment_id  # children stay with their parent
    if run_id:
        kwargs = {"run_id": run_id, "log_system_metrics": system_metrics, "nested": nested}
    with mlflow.start_run(**kwargs) as run:
        commit = git_commit()
        all_tags = {"step": step, **{k: v for k, v in tags.items() if v is not None}}
        if commit:
            all_tags["iac.git_commit"] = commit
            all_tags["iac.git_dirty"] = str(git_dirty()).lower()
        mlflow.set_tags({k: str(v) for k, v in all_tags.items()})
        from iac.study.claims import Heartbeat  # the step cache tells live runs from dead ones by it

        with Heartbeat(run.info.run_id):
            yield run


def tracker_for(run) -> Any:
    from iac.tracking import MlflowTracker

    return MlflowTracker(run.info.run_id)


def echo_done(step: str, run, extra: str = "") -> None:
    """Tell the user where to look."""
    import mlflow

    click.echo(
        f"{step}: run {run.info.run_id} finished{(' — ' + extra) if extra else ''}\n"
        f"  tracking store: {mlflow.get_tracking_uri()}  (browse with `mlflow ui --backend-store-uri {mlflow.get_tracking_uri()}`)"
    )


CHECKPOINT_ARTIFACT = "checkpoints/last.pt"


# MLflow's SQL store looks a dataset up by (experiment, name, digest) and inserts it when it is
# missing, in one transaction but without a lock: two runs logging the same new dataset at the
# same moment both insert, and the second fails on the datasets table's key. Its transaction is
# rolled back whole, and by then the row exists, so logging again reuses it.
DATASET_INPUT_ATTEMPTS = 3


def log_dataset_input(folder: Path, name: str, digest: str, context: str) -> None:
    """Log a folder as the active run's dataset input with its ``context`` (training, search, evaluation, ...)."""
    import warnings

    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():
        # Several registered local sources match a plain folder; they are equivalent.
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(Path(folder).resolve()))
    dataset = MetaDataset(source=source, name=name, digest=digest[:36])
    for attempt in range(DATASET_INPUT_ATTEMPTS):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except mlflow.exceptions.MlflowException as err:
            if attempt + 1 == DATASET_INPUT_ATTEMPTS or not _lost_dataset_race(err):
                raise


def _lost_dataset_race(err: Exception) -> bool:
    """Whether ``err`` is the datasets table's key violation (PostgreSQL, MySQL or SQLite wording)."""
    text = str(err)
    return ("dataset_pk" in text and ("duplicate key" in text.lower() or "Duplicate entry" in text)) or (
        "UNIQUE constraint failed: datasets." in text
    )
