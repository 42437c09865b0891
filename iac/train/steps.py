"""One optimisation step, one epoch of steps, and the learning-rate schedule.

These are the pieces both :class:`iac.train.trainer.Trainer` (``retrain``)
and the architecture search (:mod:`iac.nas.search`) are built from: the
weight step (:func:`train_step`), the divergence check on the losses
(:class:`LossLog`), the optimiser and the per-step schedule.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from iac.config import LR_SCHEDULES
from iac.faults import fault_point
from iac.progress import bars_enabled
from iac.train.device import autocast, make_grad_scaler
from iac.train.loader import move_batch

# Losses are checked for NaN/Inf in groups of this many steps: one host-device
# synchronisation per group instead of one per step (CUDA); the error still
# names the exact step.
LOSS_CHECK_EVERY = 16
_DEFAULT_HINT = "lower the learning rate (lr) or disable amp"


class TrainingDivergedError(RuntimeError):
    """The loss (or the weights) became NaN or infinite.

    Attributes:
        epoch: 1-based epoch.
        step: 1-based step within the epoch (``None`` when found in the weights).
        global_step: 1-based step since the start of training, if known.
        value: The offending loss value, if known.
    """

    def __init__(self, epoch: int, step: int | None, global_step: int | None = None, value: float | None = None,
                 detail: str = "", hint: str = _DEFAULT_HINT) -> None:
        self.epoch, self.step, self.global_step, self.value = epoch, step, global_step, value
        where = f"epoch {epoch}" + (f", step {step}" if step is not None else "")
        if global_step is not None:
            where += f" (global step {global_step})"
        what = f"loss is {value}" if value is not None else (detail or "non-finite values")
        if value is not None and detail:
            what = f"{detail} {what}"
        super().__init__(
            f"training diverged at {where}: {what}; {hint}. No model is returned from a diverged run."
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


class LossLog:
    """The losses of an epoch's steps, checked for NaN/Inf in groups.

    Losses stay on the device until a group of ``check_every`` is complete
    (one synchronisation per group); a non-finite one raises
    :class:`TrainingDivergedError` naming its exact step.

    Args:
        epoch: 1-based epoch, for messages.
        global_step: Steps done before this epoch, for messages.
        what: Which loss this is (``"weight loss"``, ...), for messages.
        hint: What to change when it diverges, for messages.
        check_every: Group size.
    """

    def __init__(self, epoch: int, global_step: int = 0, *, what: str = "", hint: str = _DEFAULT_HINT,
                 check_every: int = LOSS_CHECK_EVERY) -> None:
        self.epoch, self.global_step, self.what, self.hint = epoch, global_step, what, hint
        self.check_every = check_every
        self.steps, self.slices, self.total = 0, 0, 0.0
        self._pending: list[torch.Tensor] = []
        self._sizes: list[int] = []

    def add(self, loss: torch.Tensor, n_slices: int) -> bool:
        """Record one step's detached loss; returns True when a group was just checked."""
        self.steps += 1
        self._pending.append(loss)
        self._sizes.append(int(n_slices))
        if len(self._pending) >= self.check_every:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        """Check the pending losses now."""
        if not self._pending:
            return
        first = self.steps - len(self._pending) + 1
        values = torch.stack(self._pending).double().cpu()
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise TrainingDivergedError(self.epoch, first + i, self.global_step + first + i, float(values[i]),
                                        detail=self.what, hint=self.hint)
        self.total += sum(v * s for v, s in zip(values.tolist(), self._sizes))
        self.slices += sum(self._sizes)
        self._pending, self._sizes = [], []

    @property
    def mean(self) -> float:
        """Slice-weighted mean of the checked losses (NaN before any)."""
        return self.total / self.slices if self.slices else float("nan")


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
    clip_norm: float | None = None,
    clip_params: Iterable[torch.Tensor] | None = None,
) -> torch.Tensor:
    """One optimisation step; returns the detached loss (not synchronised).

    The forward pass runs under autocast when ``amp`` on CUDA; the loss is
    computed in float32. With ``clip_norm``, the gradient norm of
    ``clip_params`` (default: the optimiser's parameters) is clipped first.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
        logits = model(image)  # (B, K, H, W)
    loss = loss_fn(logits.float(), label)
    scaler.scale(loss).backward()
    if clip_norm is not None:
        scaler.unscale_(optimizer)
        params = clip_params if clip_params is not None else [p for g in optimizer.param_groups for p in g["params"]]
        nn.utils.clip_grad_norm_(params, clip_norm)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


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
        progress: Show a tqdm bar (only when stderr is a terminal, :func:`iac.progress.bars_enabled`).
        desc: Bar label.

    Returns:
        The epoch's :class:`EpochStats`.

    Raises:
        TrainingDivergedError: A loss was NaN or infinite.
    """
    scaler = scaler or make_grad_scaler(device, False)
    model.train()
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(total=total, desc=desc or f"epoch {epoch}", leave=False, disable=not (progress and bars_enabled()),
               dynamic_ncols=True)
    losses = LossLog(epoch, global_step)
    data_seconds = 0.0
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
            fault_point("mid_epoch")
            image, label = move_batch(batch, device, channels_last)
            loss = train_step(model, image, label, loss_fn, optimizer, scaler, device=device, amp=amp)
            if scheduler is not None:
                scheduler.step()
            if losses.add(loss, int(image.shape[0])):
                bar.set_postfix(loss=f"{losses.mean:.4f}")
            bar.update(1)
        losses.flush()
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    return EpochStats(loss=losses.mean if losses.slices else 0.0, steps=losses.steps, slices=losses.slices,
                      seconds=seconds, data_seconds=data_seconds)


def implanted_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the implanted cells and their output projections (not the skips they wrap)."""
    from iac.nas.implant import IACSkip

    found: dict[int, nn.Parameter] = {}
    for mod in model.modules():
        if isinstance(mod, IACSkip):
            inner = {id(p) for p in mod.inner.parameters()}
            found.update((id(p), p) for p in mod.parameters() if id(p) not in inner)
    return list(found.values())


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, implant_lr_scale: float = 1.0) -> torch.optim.AdamW:
    """AdamW over the model's trainable parameters.

    Args:
        model: The network.
        lr: Learning rate of every trainable parameter.
        weight_decay: AdamW weight decay.
        implant_lr_scale: With a value other than 1, the implanted cells and
            their output projections (:func:`implanted_parameters`) form a
            second parameter group at ``lr * implant_lr_scale``; with 1, one
            group as before.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if implant_lr_scale <= 0:
        raise ValueError(f"implant_lr_scale must be > 0, got {implant_lr_scale}")
    if implant_lr_scale == 1.0:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    implanted = {id(p) for p in implanted_parameters(model) if p.requires_grad}
    if not implanted:
        raise ValueError(f"implant_lr_scale={implant_lr_scale} but the model has no trainable implanted cell")
    groups = [{"params": [p for p in params if id(p) not in implanted]},
              {"params": [p for p in params if id(p) in implanted], "lr": lr * implant_lr_scale}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, weight_decay=weight_decay)


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
