"""Who may resume an unfinished step: a write-once claim in the tracking store, and heartbeats.

Several workers (Ray tasks, or ``main`` on several hosts) share one store.
Two rules keep a step from being resumed twice:

- A run that is still RUNNING is resumed only when it is dead: its heartbeat
  (the run tag ``iac_heartbeat``, refreshed every :data:`HEARTBEAT_EVERY_S`
  seconds by the process running it) is older than the claim timeout. A live
  one is waited for.
- Resuming a run first *claims* it: the run parameter ``iac_resume_claim`` is
  logged with the claimer's token. MLflow refuses to change a logged
  parameter (tags, by contrast, are last-writer-wins), so of two workers that
  claim one run at the same moment exactly one succeeds; the other looks for
  another run or waits.

The heartbeat uses the writer's clock; hosts must agree on the time to well
within the claim timeout (NTP does).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Any, Callable, Iterable

# Run parameter that a resuming worker writes once (its token).
CLAIM_PARAM = "iac_resume_claim"
# Run tag with the unix time of the running process's last sign of life.
HEARTBEAT_TAG = "iac_heartbeat"
# Run tag naming the process that runs the step (host:pid).
WORKER_TAG = "iac_worker"
# Seconds between two heartbeats of a running step.
HEARTBEAT_EVERY_S = 10.0
# Seconds without a heartbeat after which a RUNNING run counts as dead (default of ``main``'s claim_timeout).
DEFAULT_CLAIM_TIMEOUT_S = 60.0


def worker_token() -> str:
    """A token unique to this claim attempt: host, process id and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim(run_id: str, token: str) -> bool:
    """Claim ``run_id`` for resumption; True if this token holds the claim (now or already).

    The claim is the run parameter :data:`CLAIM_PARAM`; the store refuses a
    second, different value, so at most one token ever holds a run.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        client.log_param(run_id, CLAIM_PARAM, token)
        return True
    except MlflowException:
        # Already claimed (the store refused to change the value) -- by us only if the value is ours.
        return client.get_run(run_id).data.params.get(CLAIM_PARAM) == token


def is_alive(run: Any, timeout: float, now: float | None = None) -> bool:
    """Whether a RUNNING run's process showed a sign of life within ``timeout`` seconds.

    The sign is its heartbeat tag, or, before the first heartbeat, its start time.
    """
    now = time.time() if now is None else now
    beat = run.data.tags.get(HEARTBEAT_TAG)
    last = float(beat) if beat else run.info.start_time / 1000.0
    return now - last < timeout


def heartbeat_every() -> float:
    """Seconds between heartbeats: :data:`HEARTBEAT_EVERY_S`, or a quarter of a shorter claim timeout.

    ``main`` passes its ``claim_timeout`` to the processes running steps in
    the environment variable ``IAC_CLAIM_TIMEOUT_S``.
    """
    try:
        timeout = float(os.environ.get("IAC_CLAIM_TIMEOUT_S", DEFAULT_CLAIM_TIMEOUT_S))
    except ValueError:
        timeout = DEFAULT_CLAIM_TIMEOUT_S
    return min(HEARTBEAT_EVERY_S, max(timeout / 4, 0.5))


class Heartbeat:
    """Refreshes a run's heartbeat tag from a daemon thread while a step runs.

    Use as a context manager around the step; the first beat (and the worker
    tag) is written on entry.
    """

    def __init__(self, run_id: str, every: float | None = None) -> None:
        self.run_id, self.every = run_id, every or heartbeat_every()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{run_id[:8]}", daemon=True)

    def _beat(self) -> None:
        import mlflow

        mlflow.MlflowClient().set_tag(self.run_id, HEARTBEAT_TAG, f"{time.time():.3f}")

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self._beat()
            except Exception:  # noqa: BLE001 - a missed beat (server restarting) is retried at the next one
                pass

    def __enter__(self) -> "Heartbeat":
        import mlflow

        mlflow.MlflowClient().set_tag(self.run_id, WORKER_TAG, f"{socket.gethostname()}:{os.getpid()}")
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.every + 5)


def resumable(
    runs: Iterable[Any],
    has_checkpoint: Callable[[str], bool],
    timeout: float,
    unfinished: tuple[str, ...],
) -> tuple[list[Any], list[Any]]:
    """Split a step's unfinished runs into (resumable now, still alive), newest first.

    A run is resumable when it is FAILED or KILLED, or RUNNING without a
    heartbeat for ``timeout`` seconds, has a checkpoint and is not claimed yet.
    A RUNNING run with a recent heartbeat is alive: resuming it would run the
    step twice.
    """
    ready, alive = [], []
    for r in runs:
        if r.info.status not in unfinished:
            continue
        if r.info.status == "RUNNING" and is_alive(r, timeout):
            alive.append(r)
        elif CLAIM_PARAM not in r.data.params and has_checkpoint(r.info.run_id):
            ready.append(r)
    return ready, alive
