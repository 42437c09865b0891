"""Crash-safe checkpoints in the artifact store, and the resume rule every step shares.

Publishing (:class:`CheckpointPublisher`): an artifact store copies files
without an atomic rename, so a kill during an upload can leave a torn
``checkpoints/last.pt``. Each checkpoint therefore goes first to a staging
slot (``checkpoints/staging/last.pt``) with a digest sidecar, and only then
over ``checkpoints/last.pt`` with its own sidecar. A sidecar
(``<file>.sha256.json``: ``sha256``, ``bytes``, ``seq``) is written after its
file; loading takes the newest slot whose bytes match their sidecar and whose
zip archive verifies. A kill at any moment leaves at least one complete
checkpoint: the previous one or the new one.

Resuming (:func:`find_resume_point`): ``resume=<run>`` takes the newest
verified checkpoint on the run's ``resumed_from`` chain (the run itself, the
run it resumed from, and so on), so a run killed before its first checkpoint
hands over the checkpoint its own predecessor left. When no run of the chain
has one, the step starts afresh in the new run, says so in one line and tags
the run ``resume_started_afresh=true``. The runs a resume takes over are
marked ``KILLED`` with the tag ``superseded_by=<new run>``
(:func:`take_over`), so neither the UI nor ``stats`` take them for live or
finished runs. nnU-Net trainers and any other step call the same two
functions.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import click

from iac.commands.common import CHECKPOINT_ARTIFACT
from iac.faults import fault_point
from iac.train.checkpoint import CheckpointError, file_digest, load_checkpoint, zip_problem

log = logging.getLogger(__name__)

STAGING_ARTIFACT = "checkpoints/staging/last.pt"
DIGEST_SUFFIX = ".sha256.json"
# Run tags of the resume rule.
RESUMED_FROM_TAG = "resumed_from"
CHECKPOINT_RUN_TAG = "resume_checkpoint_run"
FRESH_TAG = "resume_started_afresh"
SUPERSEDED_TAG = "superseded_by"
# Run states a resume may take over (a FINISHED run is never marked).
TAKEOVER_STATES = ("RUNNING", "FAILED", "KILLED", "SCHEDULED")
# Longest resumed_from chain followed (guards against a cycle of hand-set tags).
MAX_CHAIN = 1000


class CheckpointPublisher:
    """Uploads a local checkpoint file to a run's artifacts, staging slot first.

    Args:
        tracker: the run's :class:`iac.tracking.Tracker`.
        artifact: the final artifact path (``checkpoints/last.pt``).
    """

    def __init__(self, tracker: Any, artifact: str = CHECKPOINT_ARTIFACT) -> None:
        self.tracker, self.artifact, self.seq = tracker, artifact, 0
        folder, _, name = artifact.rpartition("/")
        self.staging = f"{folder}/staging/{name}" if folder else f"staging/{name}"

    def publish(self, path: str | Path) -> None:
        """Upload ``path`` (a complete local checkpoint) to the staging slot, then over the final one."""
        path = Path(path)
        self.seq += 1
        meta = {"sha256": file_digest(path), "bytes": path.stat().st_size, "seq": self.seq}
        with tempfile.TemporaryDirectory() as tmp:
            for slot, cut in ((self.staging, False), (self.artifact, True)):
                folder, _, name = slot.rpartition("/")
                copy = Path(tmp) / name
                shutil.copyfile(path, copy)
                if cut:
                    fault_point("checkpoint_upload", lambda: self._upload_torn(copy, folder))
                self.tracker.log_artifact(copy, folder or None)
                side = Path(tmp) / f"{name}{DIGEST_SUFFIX}"
                side.write_text(json.dumps(meta))
                self.tracker.log_artifact(side, folder or None)

    def _upload_torn(self, copy: Path, folder: str) -> None:
        """What a copy cut short by a kill leaves: the first half of the file under the final name."""
        data = copy.read_bytes()
        copy.write_bytes(data[: len(data) // 2])
        self.tracker.log_artifact(copy, folder or None)


def download_verified(run_id: str, dst: Path, artifact: str = CHECKPOINT_ARTIFACT) -> Path | None:
    """The newest complete checkpoint a run published, downloaded into ``dst``.

    Both slots (final and staging) are read; a slot counts when its zip
    archive verifies and, where it has a sidecar, its bytes match the
    sidecar's digest. Checkpoints logged without a sidecar (older runs) are
    verified by their zip archive alone.

    Returns:
        The local file, or None when the run published no checkpoint.

    Raises:
        CheckpointError: the run published checkpoint files but none is complete.
    """
    folder, _, name = artifact.rpartition("/")
    staging = f"{folder}/staging/{name}" if folder else f"staging/{name}"
    found, problems = [], []
    for i, slot in enumerate((artifact, staging)):
        local = _download(run_id, slot, dst / f"slot{i}")
        if local is None:
            continue
        side = _download(run_id, slot + DIGEST_SUFFIX, dst / f"slot{i}")
        meta = json.loads(side.read_text()) if side is not None else None
        problem = zip_problem(local)
        if meta is not None and not problem and file_digest(local) != meta.get("sha256"):
            problem = f"its bytes do not match {slot}{DIGEST_SUFFIX}"
        if problem:
            problems.append(f"{slot}: {problem}")
            continue
        found.append((meta["seq"] if meta is not None else -1, -i, local))
    if found:
        return max(found)[2]
    if problems:
        raise CheckpointError(f"run {run_id}'s checkpoint is truncated or corrupt ({'; '.join(problems)})")
    return None


def _download(run_id: str, artifact: str, dst: Path) -> Path | None:
    """One artifact file of a run, or None when the run does not have it."""
    import mlflow

    folder, _, name = artifact.rpartition("/")
    try:
        listed = mlflow.MlflowClient().list_artifacts(run_id, folder or None)
    except Exception:  # noqa: BLE001 - an unreadable artifact store means: nothing there
        return None
    if not any(a.path == artifact for a in listed):
        return None
    dst.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=str(dst)))


@dataclass
class ResumePoint:
    """Where a resumed step continues from.

    Attributes:
        requested: the run named by ``resume`` (None: no resume asked).
        checkpoint: the verified local checkpoint, or None (start afresh).
        source_run: the run that published it.
        chain: the runs walked, newest first (from ``requested`` to ``source_run``).
        state: the loaded checkpoint (verified), or None.
    """

    requested: str | None = None
    checkpoint: Path | None = None
    source_run: str | None = None
    chain: list[str] = field(default_factory=list)
    state: dict[str, Any] | None = None

    @property
    def fresh(self) -> bool:
        """A resume was asked for but no run of the chain left a checkpoint."""
        return self.requested is not None and self.checkpoint is None

    def tags(self) -> dict[str, str]:
        """Run tags of the new run: where it resumed from, and whether it started afresh."""
        if self.requested is None:
            return {}
        out = {RESUMED_FROM_TAG: self.requested}
        if self.source_run:
            out[CHECKPOINT_RUN_TAG] = self.source_run
        if self.fresh:
            out[FRESH_TAG] = "true"
        return out


def find_resume_point(
    run_id: str | None,
    dst: Path,
    expected_keys: tuple[str, ...] = (),
    check: Callable[[Mapping[str, Any]], None] | None = None,
    echo: Callable[[str], None] = click.echo,
    artifact: str = CHECKPOINT_ARTIFACT,
) -> ResumePoint:
    """The newest verified checkpoint on ``run_id``'s ``resumed_from`` chain.

    Called before the new run starts, so a bad checkpoint stops the step with
    one line and nothing written.

    Args:
        run_id: the run named by ``resume`` (None: nothing to resume).
        dst: a folder to download into.
        expected_keys: top-level keys the checkpoint must hold.
        check: raises :class:`CheckpointError` when the checkpoint cannot
            continue this step (another search space, another network, ...).
        echo: where the one-line notice of a fresh start goes.
        artifact: the checkpoint's artifact path.

    Raises:
        click.ClickException: the run does not exist, or its checkpoint is
            truncated, of another code version or of other settings.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    point = ResumePoint(requested=run_id)
    current = run_id
    while current and current not in point.chain and len(point.chain) < MAX_CHAIN:
        try:
            run = mlflow.get_run(current)
        except MlflowException as e:
            raise click.ClickException(f"resume: run {current!r} does not exist in {mlflow.get_tracking_uri()}") from e
        point.chain.append(current)
        try:
            local = download_verified(current, dst / current, artifact)
            if local is not None:
                state = load_checkpoint(local, expected_keys=expected_keys)
                if check is not None:
                    check(state)
                point.checkpoint, point.source_run, point.state = local, current, state
                break
        except CheckpointError as e:
            raise click.ClickException(f"resume={run_id}: {e}") from e
        current = run.data.tags.get(RESUMED_FROM_TAG) or None
    if point.fresh:
        echo(f"resume: run {run_id} and the runs it resumed from left no checkpoint; starting afresh in a new run")
    elif point.source_run and point.source_run != run_id:
        echo(f"resume: run {run_id} left no checkpoint; continuing from run {point.source_run}'s")
    return point


def take_over(run_ids: list[str], successor: str) -> list[str]:
    """Mark the runs a resume takes over ``KILLED``, tagged ``superseded_by=<successor>``.

    A FINISHED run, the successor itself and a run already superseded are left
    as they are.

    Returns:
        The runs marked.
    """
    import mlflow

    client = mlflow.MlflowClient()
    marked = []
    for rid in dict.fromkeys(run_ids):
        if rid == successor:
            continue
        run = client.get_run(rid)
        if run.info.status not in TAKEOVER_STATES or SUPERSEDED_TAG in run.data.tags:
            continue
        client.set_tag(rid, SUPERSEDED_TAG, successor)
        client.set_terminated(rid, "KILLED")
        marked.append(rid)
    if marked:
        log.info("marked %s KILLED (superseded by %s)", ", ".join(marked), successor)
    return marked
