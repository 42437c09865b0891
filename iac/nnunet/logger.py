"""nnU-Net's logger mechanism, feeding the project's tracker (and so MLflow).

nnU-Net's ``MetaLogger`` forwards every ``log(key, value, epoch)`` (losses,
pseudo-Dice per class, EMA pseudo-Dice, learning rate, epoch timestamps) and
``log_summary`` to each logger in its ``loggers`` list; it ships one for
Weights & Biases. :class:`TrackerLogger` is one for an
:class:`iac.tracking.Tracker`: numbers become metrics at step = epoch,
configuration becomes parameters. The search trainer adds its per-epoch
values (operation weights, JS divergences, surviving operations, pruning
events) through :meth:`TrackerLogger.log_many`.
"""

from __future__ import annotations

import math
from numbers import Number
from typing import Any

from iac.tracking import Tracker

__all__ = ["TrackerLogger", "attach_tracker"]

# Keys nnU-Net logs that are not training measurements (wall-clock timestamps).
_SKIPPED = ("epoch_start_timestamps", "epoch_end_timestamps")


class TrackerLogger:
    """An nnU-Net logger writing to a :class:`Tracker`."""

    def __init__(self, tracker: Tracker, prefix: str = "nnunet/") -> None:
        self.tracker, self.prefix = tracker, prefix

    def update_config(self, config: dict) -> None:
        """Hyper-parameters (``hparas``) become parameters; plans and dataset.json stay in nnU-Net's folder."""
        hp = config.get("hparas") if isinstance(config, dict) else None
        if isinstance(hp, dict):
            self.tracker.log_params({f"{self.prefix}{k}": v for k, v in hp.items()})

    def log(self, key: str, value: Any, step: int) -> None:
        """One number per key and epoch (lists arrive per class as ``key/class_i``)."""
        if key in _SKIPPED or isinstance(value, bool) or not isinstance(value, Number):
            return
        value = float(value)
        if math.isfinite(value):
            self.tracker.log_metrics({f"{self.prefix}{key}": value}, step=int(step))

    def log_many(self, values: dict[str, Any], step: int) -> None:
        """Several numbers of one epoch in one call (the search trainer's per-epoch values)."""
        clean = {f"{self.prefix}{k}": float(v) for k, v in values.items()
                 if isinstance(v, Number) and not isinstance(v, bool) and math.isfinite(float(v))}
        if clean:
            self.tracker.log_metrics(clean, step=int(step))

    def log_summary(self, key: str, value: Any) -> None:
        """Final values (e.g. the final validation Dice) as metrics without a step."""
        if isinstance(value, Number) and not isinstance(value, bool) and math.isfinite(float(value)):
            self.tracker.log_metrics({f"{self.prefix}{key}": float(value)})


def attach_tracker(trainer: Any, tracker: Tracker) -> None:
    """Add a :class:`TrackerLogger` to an nnU-Net trainer's ``MetaLogger``."""
    trainer.logger.loggers.append(TrackerLogger(tracker))
