"""The search trajectory: the JSON record of one search, saved and loaded as a pair.

The search loop (:mod:`iac.nas.search`) builds it; :mod:`iac.nas.analysis`,
:mod:`iac.nas.replay`, :mod:`iac.nas.plots` and ``iac analyze`` read it.
Schema (``docs/architecture.md``)::

    {"space": SearchSpace.to_dict(),
     "checks": [{"check": n, "epoch": e, "arch_step": s,
                 "archs": [{"edges": [{"edge": "i->j", "ops": [...], "alpha": [...],
                                       "beta": b, "alive": true}, ...]}, ...],
                 "status": {...}}, ...],        # status: the live policy's report (IAC-LTH only)
     "epochs": [{"epoch": e, "val_dice": ..., "epoch_seconds": ..., "cum_seconds": ...,
                 "archs": [...], "genotype": Genotype.to_dict(), ...}, ...],
     "events": [PruneEvent.to_dict(), ...],     # after the search
     "final_genotype": Genotype.to_dict()}      # after the search

A check is recorded every ``check_every`` architecture steps: per edge the
surviving operations, softmax(alpha) over them and the node weight beta.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from iac.atomic import atomic_write_text
from iac.nas.genotype import Genotype, SearchSpace, discretize
from iac.nas.pruning import edge_states_of

__all__ = [
    "save_trajectory",
    "load_trajectory",
    "trajectory_space",
    "final_genotype",
    "epoch_checks",
    "epoch_time_split",
]

# Keys every trajectory has, from the first epoch on.
REQUIRED_KEYS = ("space", "checks", "epochs")


def save_trajectory(path: str | Path, trajectory: Mapping[str, Any]) -> Path:
    """Writes a trajectory as JSON, atomically (a reader never sees half a file).

    The JSON (compact, as the search always wrote it) goes to a temporary
    file in the same folder, which then replaces ``path``; the folder is
    created if needed. :func:`load_trajectory` reads it back.

    Args:
        path: The file to write (usually ``.../trajectory.json``).
        trajectory: A trajectory dict (schema in the module docstring).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    text = json.dumps(trajectory)  # serialise first: an unserialisable value leaves no file behind
    return atomic_write_text(path, text)


def load_trajectory(source: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """A trajectory dict from a JSON file (or an already loaded dict), validated.

    Raises:
        ValueError: If it lacks ``space``, ``checks`` or ``epochs``.
    """
    if isinstance(source, Mapping):
        traj = dict(source)
        where = "trajectory"
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"trajectory file {str(path)!r} does not exist")
        try:
            traj = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"trajectory file {str(path)!r} is not valid JSON: {err}") from None
        where = f"trajectory file {str(path)!r}"
    missing = [k for k in REQUIRED_KEYS if k not in traj]
    if missing:
        raise ValueError(f"{where} lacks {missing}; a search trajectory has 'space', 'checks' and 'epochs'")
    return traj


def trajectory_space(trajectory: Mapping[str, Any]) -> SearchSpace:
    """The search space the trajectory was recorded in."""
    return SearchSpace.from_dict(trajectory["space"])


def final_genotype(trajectory: Mapping[str, Any]) -> Genotype:
    """The search's final genotype.

    ``final_genotype`` if recorded, else the last epoch's ``genotype``, else
    the discretisation of the last check.

    Raises:
        ValueError: If the trajectory has none of them.
    """
    if trajectory.get("final_genotype"):
        return Genotype.from_dict(trajectory["final_genotype"])
    epochs = trajectory.get("epochs") or []
    if epochs and epochs[-1].get("genotype"):
        return Genotype.from_dict(epochs[-1]["genotype"])
    if trajectory.get("checks"):
        space = trajectory_space(trajectory)
        last = trajectory["checks"][-1]
        return Genotype(space, tuple(discretize(space, edge_states_of(space, a)) for a in last["archs"]))
    raise ValueError("the trajectory has no final genotype, no epoch genotype and no check to derive one from")


def epoch_checks(trajectory: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """The last check of every epoch that has one, by epoch."""
    out: dict[int, dict[str, Any]] = {}
    for rec in trajectory["checks"]:
        out[int(rec["epoch"])] = rec
    return dict(sorted(out.items()))


def epoch_time_split(trajectory: dict[str, Any]) -> dict[str, float]:
    """Epoch times of a search: overall, with every operation, and once pruning has begun.

    ``mean_epoch_seconds_before_pruning`` averages the search epochs after the
    warm-up (architecture steps running, every operation present) up to and
    including the first epoch with a pruning event; ``..._after_pruning`` the
    epochs after that one; ``last_epoch_seconds`` is the cost the search ended
    at. Epochs count from 0, as in the trajectory.
    """
    epochs = trajectory["epochs"]
    if not epochs:
        return {}
    times = np.array([e["epoch_seconds"] for e in epochs])
    out = {"mean_epoch_seconds": float(times.mean()), "last_epoch_seconds": float(times[-1])}
    events = trajectory.get("events", [])
    if events:
        first = min(e["epoch"] for e in events)
        warmup = min(int(trajectory.get("warmup_epochs") or 0), first)
        before = times[warmup : first + 1]
        after = times[first + 1 :]
        if len(before):
            out["mean_epoch_seconds_before_pruning"] = float(before.mean())
        if len(after):
            out["mean_epoch_seconds_after_pruning"] = float(after.mean())
    return out
