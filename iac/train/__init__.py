"""The training engine: loaders, steps, schedule, the epoch loop, losses, checkpoints.

The public names are re-exported here; see the submodules for details.
"""

from iac.train.augment import AugmentSettings, SliceAugment, make_augment, reseed_augment
from iac.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from iac.train.device import (
    autocast,
    make_grad_scaler,
    resolve_device,
    seed_everything,
    to_channels_last,
)
from iac.train.loader import PairedLoader, make_loader
from iac.train.losses import make_loss
from iac.train.steps import EpochStats, LossLog, TrainingDivergedError, run_epoch, train_step
from iac.train.trainer import FitResult, Trainer, fit

__all__ = [
    "AugmentSettings",
    "CheckpointError",
    "EpochStats",
    "FitResult",
    "LossLog",
    "PairedLoader",
    "SliceAugment",
    "Trainer",
    "TrainingDivergedError",
    "autocast",
    "capture_rng_state",
    "fit",
    "load_checkpoint",
    "make_augment",
    "make_grad_scaler",
    "make_loader",
    "make_loss",
    "reseed_augment",
    "resolve_device",
    "restore_rng_state",
    "run_epoch",
    "save_checkpoint",
    "seed_everything",
    "to_channels_last",
    "train_step",
]
