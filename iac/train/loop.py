"""Supervised training of a segmentation network (``retrain``).

:class:`Trainer` runs epochs of AdamW with a per-step cosine schedule over a
seeded DataLoader, validates with patient-level Dice, keeps the best weights,
checkpoints every epoch and resumes bit-identically on CPU. The pieces it is
made of (:func:`make_loader`, :func:`train_step`, :func:`run_epoch`,
:func:`validate_patient_dice`, :func:`check_finite_state`) are public so the
architecture search can reuse them inside its own loop.

Tracking happens once per epoch (never inside the batch loop) through an
:class:`iac.tracking.Tracker`.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from tqdm.auto import tqdm

from iac.tracking import Tracker
from iac.train.augment import reseed_augment
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

LR_SCHEDULES = ("cosine", "constant")
# Losses are checked for NaN/Inf in groups of this many steps: one host-device
# synchronisation per group instead of one per step (CUDA); the error still
# names the exact step.
LOSS_CHECK_EVERY = 16
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
_CHECKPOINT_KIND = "iac.train.Trainer"
_CHECKPOINT_VERSION = 1

ValidateFn = Callable[[nn.Module], "float | tuple[float, Mapping[str, float]]"]


class TrainingDivergedError(RuntimeError):
    """The loss (or the weights) became NaN or infinite.

    Attributes:
        epoch: 1-based epoch.
        step: 1-based step within the epoch (``None`` when found in the weights).
        global_step: 1-based step since the start of training, if known.
        value: The offending loss value, if known.
    """

    def __init__(self, epoch: int, step: int | None, global_step: int | None = None, value: float | None = None,
                 detail: str = "") -> None:
        self.epoch, self.step, self.global_step, self.value = epoch, step, global_step, value
        where = f"epoch {epoch}" + (f", step {step}" if step is not None else "")
        if global_step is not None:
            where += f" (global step {global_step})"
        what = f"loss is {value}" if value is not None else (detail or "non-finite values")
        super().__init__(
            f"training diverged at {where}: {what}; lower the learning rate (lr) or disable amp. "
            "No model is returned from a diverged run."
        )


@dataclass
class EpochStats:
    """What one training epoch did (times in seconds)."""

    loss: float  # mean training loss over the epoch's slices
    steps: int
    slices: int
    seconds: float  # wall time of the epoch's training part
    data_seconds: float  # time spent waiting for the DataLoader

    @property
    def slices_per_second(self) -> float:
        return self.slices / self.seconds if self.seconds > 0 else float("nan")

    @property
    def data_wait_share(self) -> float:
        return self.data_seconds / self.seconds if self.seconds > 0 else float("nan")


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


# ----------------------------------------------------------------------------
# Reusable pieces
# ----------------------------------------------------------------------------


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed NumPy, ``random`` and the augmentation.

    PyTorch gives each worker the seed ``base_seed + worker_id``, where
    ``base_seed`` is drawn from the loader's generator every epoch; the other
    generators in the worker are derived from it.
    """
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        reseed_augment(info.dataset, seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    generator: torch.Generator,
    *,
    num_workers: int = 0,
    max_slices: int | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A shuffling DataLoader whose order depends only on ``generator``.

    Args:
        dataset: Map-style dataset of ``{"image", "label", ...}`` dicts.
        batch_size: Slices per step.
        generator: Drives the shuffle, the per-epoch subset and the workers'
            seeds; save its ``get_state()`` to resume the same order.
        num_workers: DataLoader worker processes.
        max_slices: Draw this many distinct slices per epoch (a new random
            subset each epoch); ``None`` or more than the dataset: all.
        pin_memory: Pin host memory (useful for CUDA).

    Returns:
        The loader. The last incomplete batch is dropped when at least one
        full batch exists (normalisation layers dislike batches of one).
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("the training dataset is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_slices is not None and max_slices < 1:
        raise ValueError(f"max_slices_per_epoch must be >= 1 or None, got {max_slices}")
    n_samples = n if max_slices is None else min(n, int(max_slices))
    sampler = RandomSampler(dataset, replacement=False, num_samples=n_samples, generator=generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        generator=generator,
        drop_last=n_samples >= batch_size,
        pin_memory=pin_memory,
        persistent_workers=False,  # fresh workers per epoch, re-seeded from the generator
    )


def move_batch(batch: Mapping[str, Any], device: torch.device, channels_last: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Image ``(B,C,H,W)`` float and label ``(B,1,H,W)`` long on ``device``."""
    image = batch["image"].to(device, dtype=torch.float32, non_blocking=True)
    label = batch["label"].to(device, dtype=torch.long, non_blocking=True)
    return to_channels_last(image, device, channels_last), label


def train_step(
    model: nn.Module,
    image: torch.Tensor,
    label: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    *,
    device: torch.device,
    amp: bool = False,
) -> torch.Tensor:
    """One optimisation step; returns the detached loss (not synchronised).

    The forward pass runs under autocast when ``amp`` on CUDA; the loss is
    computed in float32.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
        logits = model(image)  # (B, K, H, W)
    loss = loss_fn(logits.float(), label)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


def _check_losses(pending: list[torch.Tensor], first_step: int, epoch: int, global_first: int) -> list[float]:
    values = torch.stack(pending).double().cpu()
    bad = (~torch.isfinite(values)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise TrainingDivergedError(epoch, first_step + i, global_first + i, float(values[i]))
    return values.tolist()


def run_epoch(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    scaler: torch.amp.GradScaler | None = None,
    scheduler: Any = None,
    amp: bool = False,
    channels_last: bool = False,
    epoch: int = 1,
    global_step: int = 0,
    progress: bool = True,
    desc: str | None = None,
) -> EpochStats:
    """Train ``model`` for one pass over ``loader``.

    Args:
        model: The network (put in train mode here).
        loader: Yields ``{"image": (B,C,H,W), "label": (B,1,H,W)}`` batches.
        loss_fn: ``loss(logits, labels) -> scalar``.
        optimizer: The optimiser.
        device: Where to compute.
        scaler: Gradient scaler (default: disabled).
        scheduler: Stepped once per optimisation step, if given.
        amp: Mixed precision (CUDA only).
        channels_last: Channels-last inputs (CUDA only).
        epoch: 1-based epoch, for messages.
        global_step: Steps done before this epoch, for messages.
        progress: Show a tqdm bar.
        desc: Bar label.

    Returns:
        The epoch's :class:`EpochStats`.

    Raises:
        TrainingDivergedError: A loss was NaN or infinite.
    """
    scaler = scaler or make_grad_scaler(device, False)
    model.train()
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(total=total, desc=desc or f"epoch {epoch}", leave=False, disable=not progress, dynamic_ncols=True)
    loss_sum, n_slices, steps = 0.0, 0, 0
    data_seconds = 0.0
    pending: list[torch.Tensor] = []
    sizes: list[int] = []
    start = time.perf_counter()
    try:
        iterator = iter(loader)
        while True:
            t0 = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                break
            data_seconds += time.perf_counter() - t0
            image, label = move_batch(batch, device, channels_last)
            loss = train_step(model, image, label, loss_fn, optimizer, scaler, device=device, amp=amp)
            if scheduler is not None:
                scheduler.step()
            steps += 1
            pending.append(loss)
            sizes.append(int(image.shape[0]))
            if len(pending) >= LOSS_CHECK_EVERY:
                first = steps - len(pending) + 1
                values = _check_losses(pending, first, epoch, global_step + first)
                loss_sum += sum(v * s for v, s in zip(values, sizes))
                n_slices += sum(sizes)
                pending, sizes = [], []
                bar.set_postfix(loss=f"{loss_sum / max(n_slices, 1):.4f}")
            bar.update(1)
        if pending:
            first = steps - len(pending) + 1
            values = _check_losses(pending, first, epoch, global_step + first)
            loss_sum += sum(v * s for v, s in zip(values, sizes))
            n_slices += sum(sizes)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    return EpochStats(loss=loss_sum / max(n_slices, 1), steps=steps, slices=n_slices, seconds=seconds,
                      data_seconds=data_seconds)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, min_lr: float = 0.0):
    """Per-step learning-rate schedule.

    Args:
        optimizer: The optimiser.
        schedule: ``"cosine"`` (from ``lr`` down to ``min_lr`` over
            ``total_steps``) or ``"constant"``.
        total_steps: Steps of the whole run.
        min_lr: Final learning rate of the cosine schedule.
    """
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps), eta_min=min_lr)
    if schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    raise ValueError(f"unknown lr_schedule {schedule!r}; valid: {', '.join(LR_SCHEDULES)}")


def state_to_cpu(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a state dict (safe to keep while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def check_finite_state(state: Mapping[str, torch.Tensor], epoch: int) -> None:
    """Raise :class:`TrainingDivergedError` if a floating tensor holds NaN/Inf."""
    for name, t in state.items():
        if torch.is_floating_point(t) and not bool(torch.isfinite(t).all()):
            raise TrainingDivergedError(epoch, None, detail=f"weight {name!r} holds NaN/Inf")


def _case_foreground_dice(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> float:
    """Mean foreground Dice of one volume (MONAI ``compute_dice`` on one-hot).

    Both empty scores 1, exactly one empty scores 0 (``ignore_empty=False``).
    """
    from monai.metrics import compute_dice

    # (1, K, Z, H, W) boolean one-hot: one byte per voxel and class.
    p = torch.stack([pred == k for k in range(num_classes)])[None]
    y = torch.stack([label == k for k in range(num_classes)])[None]
    dice = compute_dice(p, y, include_background=False, ignore_empty=False)  # (1, K-1)
    return float(dice.mean())


def validate_patient_dice(
    model: nn.Module,
    prepared_dataset: Any,
    split: str,
    device: torch.device | str,
    batch_size: int = 32,
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> tuple[float, dict[str, float]]:
    """Patient-level mean foreground Dice on a split of a prepared dataset.

    Every slice of every case is predicted (argmax), the slices are stacked
    into the case's volume on the prepared grid, the mean Dice over
    foreground classes is computed per case, averaged over a patient's cases
    (e.g. ACDC's two frames), then over patients.

    Args:
        model: The network (evaluated in eval mode; its mode is restored).
        prepared_dataset: An ``iac.data.store.PreparedDataset``.
        split: ``train``, ``val`` or ``test``.
        device: Where to predict (the model must already be there).
        batch_size: Slices per forward pass.
        amp: Mixed precision (CUDA only).
        channels_last: Channels-last inputs (CUDA only).

    Returns:
        ``(mean over patients, {patient: Dice})``.

    Raises:
        ValueError: The split has no cases.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    cases = list(prepared_dataset.cases(split))
    if not cases:
        raise ValueError(f"split {split!r} of {getattr(prepared_dataset, 'name', 'the dataset')!r} has no cases")
    num_classes = int(prepared_dataset.num_classes)
    per_case: dict[str, list[float]] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for case in cases:
                image = prepared_dataset.image(case.case_id)  # (C, Z, H, W)
                label = torch.from_numpy(np.asarray(prepared_dataset.label(case.case_id)).astype(np.int64))
                preds = []
                for z0 in range(0, image.shape[1], batch_size):
                    chunk = np.array(image[:, z0 : z0 + batch_size], dtype=np.float32)  # copy out of the memory map
                    x = torch.from_numpy(chunk).permute(1, 0, 2, 3).to(device)  # (b, C, H, W)
                    x = to_channels_last(x, device, channels_last)
                    with autocast(device, amp):
                        logits = model(x)  # (b, K, H, W)
                    preds.append(logits.argmax(dim=1).to("cpu"))
                pred = torch.cat(preds)  # (Z, H, W)
                dice = _case_foreground_dice(pred, label, num_classes)
                per_case.setdefault(str(case.patient), []).append(dice)
    finally:
        model.train(was_training)
    per_patient = {p: float(np.mean(v)) for p, v in per_case.items()}
    return float(np.mean(list(per_patient.values()))), per_patient


def make_validator(prepared_dataset: Any, split: str = "val", batch_size: int = 32, *, amp: bool = False,
                   channels_last: bool = False) -> ValidateFn:
    """A ``validate(model) -> (mean Dice, per patient)`` for :class:`Trainer`.

    The device is taken from the model's parameters at call time.
    """

    def validate(model: nn.Module) -> tuple[float, dict[str, float]]:
        device = next(model.parameters()).device
        return validate_patient_dice(model, prepared_dataset, split, device, batch_size, amp=amp,
                                     channels_last=channels_last)

    return validate


# ----------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------


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
        lr_schedule: ``cosine`` (per step, down to ``min_lr``) or ``constant``.
        min_lr: Final cosine learning rate.
        batch_size: Slices per step.
        seed: Seeds Python, NumPy, PyTorch and the loader's generator.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (or a torch.device).
        amp: Mixed precision on CUDA (ignored on CPU).
        channels_last: Channels-last on CUDA (ignored on CPU).
        num_workers: DataLoader workers.
        val_every: Validate every N epochs (and always after the last one).
        max_slices_per_epoch: Random subset of slices per epoch (``None``: all).
        loss_fn: Defaults to :func:`iac.train.losses.make_loss` with weights 1.
        progress: Show a tqdm bar per epoch and an epoch summary line.
        on_epoch_end: Called with each epoch's record after its checkpoint.
    """

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
        batch_size: int = 16,
        seed: int = 0,
        device: str | torch.device = "auto",
        amp: bool = True,
        channels_last: bool = True,
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
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.amp, self.channels_last = bool(amp), bool(channels_last)
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
        self.optimizer = make_optimizer(self.model, self.lr, self.weight_decay)
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
            min_lr=getattr(cfg, "min_lr", 0.0), batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device,
            amp=cfg.amp, channels_last=cfg.channels_last, num_workers=cfg.num_workers, val_every=cfg.val_every,
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
            "lr_schedule": self.lr_schedule, "min_lr": self.min_lr, "batch_size": self.batch_size,
            "seed": self.seed, "max_slices_per_epoch": self.max_slices_per_epoch,
            "steps_per_epoch": len(self.loader),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the last epoch ended."""
        return {
            "kind": _CHECKPOINT_KIND,
            "version": _CHECKPOINT_VERSION,
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
        if state.get("kind") != _CHECKPOINT_KIND or state.get("version") != _CHECKPOINT_VERSION:
            raise CheckpointError(
                f"not a trainer checkpoint of version {_CHECKPOINT_VERSION} "
                f"(kind={state.get('kind')!r}, version={state.get('version')!r})"
            )
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
        else:
            seed_everything(self.seed, deterministic=self.device.type == "cpu")
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


__all__ = [
    "EpochStats",
    "FitResult",
    "Trainer",
    "TrainingDivergedError",
    "check_finite_state",
    "fit",
    "make_loader",
    "make_optimizer",
    "make_scheduler",
    "make_validator",
    "move_batch",
    "run_epoch",
    "seed_worker",
    "state_to_cpu",
    "train_step",
    "validate_patient_dice",
]
