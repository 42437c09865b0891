"""The one seam between the core code and experiment tracking.

Core code receives a :class:`Tracker` and never imports MLflow; only entry
points start MLflow runs and hand in an :class:`MlflowTracker`. Tests use
:class:`MemoryTracker`, which records every call for assertions.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Mapping


class Tracker:
    """Interface; the base class itself records nothing (a null tracker)."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log run parameters (flat mapping)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log scalar metrics at an optional step."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a local file into the run's artifacts (under ``artifact_path``), or a
        folder's contents into ``artifact_path`` (default: a folder of the same name)."""

    def log_dict(self, data: Any, name: str) -> None:
        """Write ``data`` as JSON artifact ``name`` (may include folders)."""

    def log_text(self, text: str, name: str) -> None:
        """Write ``text`` as artifact ``name``."""

    def log_figure(self, figure: Any, name: str) -> None:
        """Save a matplotlib figure as artifact ``name`` (PNG)."""

    @property
    def run_id(self) -> str | None:
        return None


NullTracker = Tracker


class MemoryTracker(Tracker):
    """Keeps everything in memory (tests, dry runs)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.metrics: list[tuple[str, float, int | None]] = []
        self.tags: dict[str, Any] = {}
        self.artifacts: dict[str, Any] = {}

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.metrics.extend((k, float(v), step) for k, v in metrics.items())

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.tags.update(tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        p = Path(path)
        key = f"{artifact_path}/{p.name}" if artifact_path else p.name
        self.artifacts[key] = p

    def log_dict(self, data: Any, name: str) -> None:
        self.artifacts[name] = json.loads(json.dumps(data))

    def log_text(self, text: str, name: str) -> None:
        self.artifacts[name] = text

    def log_figure(self, figure: Any, name: str) -> None:
        self.artifacts[name] = figure

    def metric_history(self, key: str) -> list[float]:
        return [v for k, v, _ in self.metrics if k == key]


class MlflowTracker(Tracker):
    """Logs to the active MLflow run (or to ``run_id`` through the client)."""

    # MLflow limits: 500 params/tags per batch call, 1000 metrics.
    _BATCH = 500

    def __init__(self, run_id: str | None = None) -> None:
        import mlflow

        self._mlflow = mlflow
        active = mlflow.active_run()
        self._run_id = run_id or (active.info.run_id if active else None)
        if self._run_id is None:
            raise RuntimeError("MlflowTracker needs an active MLflow run or a run_id")
        self._client = mlflow.MlflowClient()

    @property
    def run_id(self) -> str | None:
        return self._run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters; keys the run already holds are kept.

        Under ``mlflow run`` the entry point's parameters are logged before the
        step starts, as strings (``''`` for unset); MLflow refuses to change a
        logged value, so a resolved value that differs is logged as
        ``<key>.resolved`` instead.
        """
        from mlflow.entities import Param

        existing = self._client.get_run(self._run_id).data.params
        items = []
        for k, v in params.items():
            key, value = str(k), _param_str(v)
            if key in existing:
                if existing[key] == value:
                    continue
                key = f"{key}.resolved"
                if existing.get(key) == value:
                    continue
            items.append(Param(key, value))
        for i in range(0, len(items), self._BATCH):
            self._client.log_batch(self._run_id, params=items[i : i + self._BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [
            Metric(_metric_key(k), float(v), ts, step or 0)
            for k, v in metrics.items()
            if v is not None
        ]
        for i in range(0, len(items), 1000):
            self._client.log_batch(self._run_id, metrics=items[i : i + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        for i in range(0, len(items), self._BATCH):
            self._client.log_batch(self._run_id, tags=items[i : i + self._BATCH])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            # A folder's contents go to `artifact_path`, or to a folder of the same name.
            self._client.log_artifacts(self._run_id, str(p), artifact_path or p.name)
        else:
            self._client.log_artifact(self._run_id, str(p), artifact_path)

    def log_dict(self, data: Any, name: str) -> None:
        self._client.log_dict(self._run_id, data, name)

    def log_text(self, text: str, name: str) -> None:
        self._client.log_text(self._run_id, text, name)

    def log_figure(self, figure: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / Path(name).name
            figure.savefig(target, dpi=110, bbox_inches="tight")
            parent = str(Path(name).parent)
            self._client.log_artifact(self._run_id, str(target), None if parent == "." else parent)


def _param_str(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v) if isinstance(v, (list, dict, tuple)) else str(v)
    return s[:6000]


def _metric_key(k: str) -> str:
    # MLflow metric names allow alphanumerics, _ - . / and space.
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in str(k))
