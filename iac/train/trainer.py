"""The epoch loop of ``retrain``: :class:`Trainer` and :func:`fit`.

:class:`Trainer` runs epochs of AdamW with a per-step cosine schedule over a
seeded DataLoader, validates with patient-level Dice, keeps the best weights,
checkpoints every epoch and resumes bit-identically on CPU. Its pieces (the
loader, the step, the schedule, the validation) live in
:mod:`iac.train.loader`, :mod:`iac.train.steps` and :mod:`iac.eval.validate`,
where the architecture search uses them too.

Tracking happens once per epoch (never inside the batch loop) through an
:class:`iac.tracking.Tracker`.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from iac.eval.validate import ValidateFn
from iac.faults import fault_point
from iac.tracking import Tracker
from iac.train.augment import reseed_augment
from iac.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    check_checkpoint_header,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from iac.train.device import (
    make_grad_scaler,
    resolve_device,
    seed_everything,
    set_deterministic,
    to_channels_last,
    use_deterministic,
)
from iac.train.loader import make_loader
from iac.train.losses import make_loss
from iac.train.steps import (
    LR_SCHEDULES,
    check_finite_state,
    make_optimizer,
    make_scheduler,
    run_epoch,
    state_to_cpu,
)

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
_CHECKPOINT_KIND = "iac.train.Trainer"
_CHECKPOINT_VERSION = 1


@dataclass
class FitResult:
    """Outcome of :meth:`Trainer.fit`.

    Attributes:
        best_state: CPU copy of the selected weights (best validation Dice, or
            the last epoch without validation).
        best_val_dice: Patient-level mean foreground Dice of ``best_state``
            (``None`` without validation).
        best_epoch: 1-based epoch of ``best_state``.
        history: One record per epoch (``epoch``, ``train_loss``, ``lr``,
            ``epoch_seconds``, ``slices_per_second``, ``data_wait_share``,
            and ``val_dice`` on validated epochs).
        seconds: Training wall time, summed over resumed segments.
    """

    best_state: dict[str, torch.Tensor]
    best_val_dice: float | None
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


# Top-level keys of a trainer checkpoint (what a resume verifies before loading).
CHECKPOINT_KEYS = ("kind", "version", "settings", "epoch", "global_step", "model", "optimizer", "scheduler",
                   "best_state", "best_val_dice", "best_epoch", "history", "elapsed_seconds", "rng",
                   "loader_generator")


def _code_version() -> str:
    import iac

    return iac.__version__


def check_trainer_checkpoint(state: Mapping[str, Any], model: nn.Module, implant_lr_scale: float | None = None) -> None:
    """Raise a one-line :class:`CheckpointError` unless ``state`` can continue training ``model``.

    Checks the kind, the format version (a checkpoint of another code version),
    the keys, that the network's tensors have the checkpoint's names and
    shapes (a checkpoint of another network cannot be loaded), and, when
    ``implant_lr_scale`` is given, that the checkpoint was trained with it (the
    optimiser's parameter groups depend on it).
    """
    check_checkpoint_header(state, "training", _CHECKPOINT_KIND, _CHECKPOINT_VERSION, CHECKPOINT_KEYS,
                            "start afresh (resume='')")
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    saved = {k: tuple(v.shape) for k, v in state["model"].items()}
    if own != saved:
        diff = sorted(set(own) ^ set(saved)) or sorted(k for k in own if own[k] != saved[k])
        raise CheckpointError(
            f"the training checkpoint is of another network ({len(diff)} tensors differ, first {diff[0]!r}); "
            "resume with the settings it was written with, or start afresh (resume='')"
        )
    saved_scale = float(state["settings"].get("implant_lr_scale", 1.0))  # written before the setting: 1
    if implant_lr_scale is not None and saved_scale != float(implant_lr_scale):
        raise CheckpointError(
            f"the training checkpoint was trained with implant_lr_scale={saved_scale} and cannot continue with "
            f"implant_lr_scale={float(implant_lr_scale)} (its optimiser has other parameter groups); "
            "resume with the settings it was written with, or start afresh (resume='')"
        )


class Trainer:
    """Epoch loop with validation, model selection, checkpoints and resume.

    Args:
        model: The network; moved to ``device`` (and to channels-last on CUDA).
        train_data: Map-style dataset of ``{"image", "label"}`` dicts (e.g. a
            ``SliceDataset``). An augmentation found at ``train_data.augment``
            is re-seeded every epoch from the trainer's generator.
        validate: ``validate(model) -> mean Dice`` or ``(mean Dice, per
            patient)``; see :func:`make_validator`. ``None``: keep the last epoch.
        tracker: Receives per-epoch metrics and the parameter counts.
        checkpoint_dir: Folder for ``last.pt`` (every epoch) and ``best.pt``;
            ``None``: no checkpoints.
        epochs: Total epochs of the run.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        implant_lr_scale: Learning-rate multiplier of the implanted cells and
            their output projections (1: one rate for every parameter).
        lr_schedule: ``cosine`` (per step, down to ``min_lr``) or ``constant``.
        min_lr: Final cosine learning rate.
        batch_size: Slices per step.
        seed: Seeds Python, NumPy, PyTorch and the loader's generator.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (or a torch.device).
        amp: Mixed precision on CUDA (ignored on CPU).
        channels_last: Channels-last on CUDA (ignored on CPU).
        deterministic: Deterministic CUDA kernels and no cuDNN autotuner
            (:func:`iac.train.device.set_deterministic`); CPU runs always are.
        num_workers: DataLoader workers.
        val_every: Validate every N epochs (and always after the last one).
        max_slices_per_epoch: Random subset of slices per epoch (``None``: all).
        loss_fn: Defaults to :func:`iac.train.losses.make_loss` with weights 1.
        progress: Show a tqdm bar per epoch and an epoch summary line.
        on_epoch_end: Called with each epoch's record after its checkpoint.
    """

    # Long only because it stores and checks each documented setting; the logic is in fit().
    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset,
        *,
        validate: ValidateFn | None = None,
        tracker: Tracker | None = None,
        checkpoint_dir: str | Path | None = None,
        epochs: int = 30,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        lr_schedule: str = "cosine",
        min_lr: float = 0.0,
        implant_lr_scale: float = 1.0,
        batch_size: int = 16,
        seed: int = 0,
        device: str | torch.device = "auto",
        amp: bool = True,
        channels_last: bool = True,
        deterministic: bool = False,
        num_workers: int = 0,
        val_every: int = 1,
        max_slices_per_epoch: int | None = None,
        loss_fn: nn.Module | None = None,
        progress: bool = True,
        on_epoch_end: Callable[[dict[str, float]], None] | None = None,
    ) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        if val_every < 1:
            raise ValueError(f"val_every must be >= 1, got {val_every}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"unknown lr_schedule {lr_schedule!r}; valid: {', '.join(LR_SCHEDULES)}")
        self.device = resolve_device(device)
        self.epochs, self.lr, self.weight_decay = int(epochs), float(lr), float(weight_decay)
        self.lr_schedule, self.min_lr = lr_schedule, float(min_lr)
        self.implant_lr_scale = float(implant_lr_scale)
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.amp, self.channels_last = bool(amp), bool(channels_last)
        self.deterministic = use_deterministic(self.device, deterministic)
        self.num_workers, self.val_every = int(num_workers), int(val_every)
        self.max_slices_per_epoch = max_slices_per_epoch
        self.validate, self.tracker = validate, tracker or Tracker()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.progress, self.on_epoch_end = progress, on_epoch_end
        self.train_data = train_data
        self.loss_fn = (loss_fn or make_loss()).to(self.device)
        self.model = to_channels_last(model.to(self.device), self.device, self.channels_last)

        # Everything random in the loop flows from these, seeded in fit().
        self.generator = torch.Generator()
        self.loader = make_loader(
            train_data, self.batch_size, self.generator, num_workers=self.num_workers,
            max_slices=max_slices_per_epoch, pin_memory=self.device.type == "cuda",
        )
        self.optimizer = make_optimizer(self.model, self.lr, self.weight_decay, self.implant_lr_scale)
        self.scheduler = make_scheduler(self.optimizer, lr_schedule, self.epochs * len(self.loader), self.min_lr)
        self.scaler = make_grad_scaler(self.device, self.amp)

        self.epoch = 0  # completed epochs
        self.global_step = 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_val_dice: float | None = None
        self.best_epoch = 0
        self.history: list[dict[str, float]] = []
        self.elapsed = 0.0

    @classmethod
    def from_config(cls, model: nn.Module, train_data: Dataset, cfg: Any, **kwargs: Any) -> "Trainer":
        """Build a trainer from an :class:`iac.config.TrainConfig`.

        Keyword arguments (``validate``, ``tracker``, ``checkpoint_dir``,
        ``loss_fn``, ``progress``, ``on_epoch_end``, or any setting) override.
        """
        settings = dict(
            epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, lr_schedule=cfg.lr_schedule,
            min_lr=getattr(cfg, "min_lr", 0.0), implant_lr_scale=getattr(cfg, "implant_lr_scale", 1.0),
            batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device,
            amp=cfg.amp, channels_last=cfg.channels_last, num_workers=cfg.num_workers, val_every=cfg.val_every,
            deterministic=getattr(cfg, "deterministic", False),
            max_slices_per_epoch=cfg.max_slices_per_epoch,
        )
        settings.update(kwargs)
        if "loss_fn" not in settings:
            settings["loss_fn"] = make_loss(cfg)
        return cls(model, train_data, **settings)

    # -- checkpoint state ------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs, "lr": self.lr, "weight_decay": self.weight_decay,
            "lr_schedule": self.lr_schedule, "min_lr": self.min_lr, "implant_lr_scale": self.implant_lr_scale,
            "batch_size": self.batch_size,
            "seed": self.seed, "max_slices_per_epoch": self.max_slices_per_epoch,
            "steps_per_epoch": len(self.loader),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the last epoch ended."""
        return {
            "kind": _CHECKPOINT_KIND,
            "version": _CHECKPOINT_VERSION,
            "code": _code_version(),
            "settings": self._settings(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_state": self.best_state,
            "best_val_dice": self.best_val_dice,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "elapsed_seconds": self.elapsed,
            "rng": capture_rng_state(),
            "loader_generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (RNG states included)."""
        check_trainer_checkpoint(state, self.model, self.implant_lr_scale)
        saved = state.get("settings", {})
        for key in ("batch_size", "seed", "max_slices_per_epoch", "steps_per_epoch"):
            if key in saved and saved[key] != self._settings()[key]:
                warnings.warn(
                    f"resuming with {key}={self._settings()[key]!r} but the checkpoint used {saved[key]!r}; "
                    "the run will not match an uninterrupted one",
                    stacklevel=3,
                )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.best_state = state["best_state"]
        self.best_val_dice = state["best_val_dice"]
        self.best_epoch = int(state["best_epoch"])
        self.history = [dict(r) for r in state["history"]]
        self.elapsed = float(state["elapsed_seconds"])
        restore_rng_state(state["rng"])
        self.generator.set_state(state["loader_generator"].cpu().to(torch.uint8))

    def save(self) -> Path | None:
        """Write ``last.pt`` into the checkpoint folder (if one is set)."""
        if self.checkpoint_dir is None:
            return None
        return save_checkpoint(self.checkpoint_dir / LAST_CHECKPOINT, self.state_dict())

    # -- the loop ----------------------------------------------------------------

    def fit(self, resume: str | Path | None = None) -> FitResult:
        """Train for the remaining epochs.

        Args:
            resume: A checkpoint file written by this trainer, or a folder
                holding ``last.pt``. The run continues after its epoch with
                every generator restored, so on CPU the final weights equal
                those of an uninterrupted run. The optimiser and schedule
                (learning rates included) continue from the checkpoint; a
                changed ``batch_size``, ``seed`` or slice cap is warned about.

        Returns:
            The :class:`FitResult`.

        Raises:
            TrainingDivergedError: A loss or the selected weights are NaN/Inf.
        """
        if resume is not None:
            path = Path(resume)
            if path.is_dir():
                path = path / LAST_CHECKPOINT
            self.load_state_dict(load_checkpoint(path))
            set_deterministic(self.deterministic)  # the RNG states come from the checkpoint
        else:
            seed_everything(self.seed, deterministic=self.deterministic)
            self.generator.manual_seed(self.seed)
            n_all = sum(p.numel() for p in self.model.parameters())
            n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
            self.tracker.log_params({"n_parameters": n_all, "n_trainable_parameters": n_train})

        while self.epoch < self.epochs:
            self._one_epoch()

        if self.best_state is None:  # no validation: the last epoch is the result
            self.best_state = state_to_cpu(self.model.state_dict())
            self.best_epoch = self.epoch
        check_finite_state(self.best_state, self.best_epoch)
        final = {"best_epoch": float(self.best_epoch)}
        if self.best_val_dice is not None:
            final["best_val_dice"] = self.best_val_dice
        self.tracker.log_metrics(final, step=self.epoch)
        return FitResult(
            best_state=self.best_state,
            best_val_dice=self.best_val_dice,
            best_epoch=self.best_epoch,
            history=list(self.history),
            seconds=self.elapsed,
        )

    def _one_epoch(self) -> None:
        epoch = self.epoch + 1
        start = time.perf_counter()
        # The augmentation is re-seeded from the loader's generator, so the
        # epoch's random draws depend only on the state saved at the last
        # checkpoint (with workers, seed_worker re-seeds each worker's copy).
        reseed_augment(self.train_data, int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))
        lr = self.optimizer.param_groups[0]["lr"]
        stats = run_epoch(
            self.model, self.loader, self.loss_fn, self.optimizer, device=self.device, scaler=self.scaler,
            scheduler=self.scheduler, amp=self.amp, channels_last=self.channels_last, epoch=epoch,
            global_step=self.global_step, progress=self.progress, desc=f"epoch {epoch}/{self.epochs}",
        )
        self.global_step += stats.steps
        record: dict[str, float] = {
            "epoch": epoch,
            "train_loss": stats.loss,
            "lr": lr,
            "slices_per_second": stats.slices_per_second,
            "data_wait_share": stats.data_wait_share,
        }
        if self.validate is not None and (epoch % self.val_every == 0 or epoch == self.epochs):
            t_val = time.perf_counter()
            out = self.validate(self.model)
            dice = float(out[0] if isinstance(out, tuple) else out)
            record["val_dice"] = dice
            record["val_seconds"] = time.perf_counter() - t_val
            if math.isfinite(dice) and (self.best_val_dice is None or dice > self.best_val_dice):
                self.best_val_dice, self.best_epoch = dice, epoch
                self.best_state = state_to_cpu(self.model.state_dict())
                if self.checkpoint_dir is not None:
                    save_checkpoint(
                        self.checkpoint_dir / BEST_CHECKPOINT,
                        {"model": self.best_state, "epoch": epoch, "val_dice": dice},
                    )
        record["epoch_seconds"] = time.perf_counter() - start
        self.elapsed += record["epoch_seconds"]
        self.epoch = epoch
        self.history.append(record)
        fault_point("before_checkpoint")
        self.save()
        self.tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)
        if self.progress:
            val = f" val_dice {record['val_dice']:.4f}" if "val_dice" in record else ""
            tqdm.write(f"epoch {epoch}/{self.epochs} loss {stats.loss:.4f}{val} "
                       f"({record['epoch_seconds']:.1f} s, {stats.slices_per_second:.0f} slices/s)")
        if self.on_epoch_end is not None:
            self.on_epoch_end(dict(record))


def fit(
    model: nn.Module,
    train_data: Dataset,
    cfg: Any,
    *,
    resume: str | Path | None = None,
    **kwargs: Any,
) -> FitResult:
    """Train ``model`` with the settings of a :class:`iac.config.TrainConfig`.

    Args:
        model: The network.
        train_data: Dataset of ``{"image", "label"}`` dicts.
        cfg: The settings (``epochs``, ``lr``, ``batch_size``, ``seed``, ...).
        resume: Checkpoint file or folder to continue from.
        **kwargs: Passed to :class:`Trainer` (``validate``, ``tracker``,
            ``checkpoint_dir``, ``progress``, overrides of settings).

    Returns:
        The :class:`FitResult`.
    """
    return Trainer.from_config(model, train_data, cfg, **kwargs).fit(resume=resume)
