"""Supervised training: loss, augmentation, devices, checkpoints and the loop.

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
from iac.train.losses import make_loss
from iac.train.loop import (
    EpochStats,
    FitResult,
    Trainer,
    TrainingDivergedError,
    fit,
    make_loader,
    make_validator,
    run_epoch,
    train_step,
    validate_patient_dice,
)

__all__ = [
    "AugmentSettings",
    "CheckpointError",
    "EpochStats",
    "FitResult",
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
    "make_validator",
    "reseed_augment",
    "resolve_device",
    "restore_rng_state",
    "run_epoch",
    "save_checkpoint",
    "seed_everything",
    "to_channels_last",
    "train_step",
    "validate_patient_dice",
]
