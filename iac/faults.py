"""A test-only fault-injection hook: kill the process at a named point.

Set ``IAC_FAULT=<point>:<n>`` (``<n>`` defaults to 1) and the process sends
itself ``SIGKILL`` the ``n``-th time the code passes :func:`fault_point` with
that name: nothing is flushed, no ``finally`` runs and the MLflow run stays
``RUNNING``, exactly as after ``kill -9`` or a lost host. Without the variable
:func:`fault_point` is a dictionary look-up and does nothing.

The named points (where the code calls :func:`fault_point`):

- ``before_checkpoint``: an epoch is computed, its checkpoint not yet written;
- ``mid_epoch``: before each training batch (``n`` counts batches over the run);
- ``checkpoint_write``: half of the checkpoint's bytes are in the temporary file;
- ``checkpoint_upload``: the checkpoint is in the artifact store's staging
  slot and half of it has been copied over ``checkpoints/last.pt``;
- ``register``: the model version is created, its tags and alias not yet set.
"""

from __future__ import annotations

import os
import signal
from typing import Callable

ENV = "IAC_FAULT"
POINTS = ("before_checkpoint", "mid_epoch", "checkpoint_write", "checkpoint_upload", "register")

_hits: dict[str, int] = {}


def _target() -> tuple[str, int] | None:
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in POINTS:
        raise ValueError(f"{ENV}={spec!r}: unknown fault point {name!r}; expected one of {', '.join(POINTS)}")
    return name, int(count or 1)


def armed(name: str) -> bool:
    """Whether the next pass through point ``name`` kills the process (counts nothing)."""
    target = _target()
    return target is not None and target[0] == name and _hits.get(name, 0) + 1 == target[1]


def fault_point(name: str, before_kill: Callable[[], None] | None = None) -> None:
    """Kill the process here when ``IAC_FAULT`` names this point and this pass.

    Args:
        name: one of :data:`POINTS`.
        before_kill: run just before the kill (e.g. leave a half-copied file
            behind, as a copy cut short by the kill would).
    """
    target = _target()
    if target is None or target[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == target[1]:
        if before_kill is not None:
            before_kill()
        os.kill(os.getpid(), signal.SIGKILL)
