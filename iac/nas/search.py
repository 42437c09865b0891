"""The one search loop shared by ``search_full`` and ``search_lth``.

PC-DARTS first-order bilevel optimisation on a frozen, pre-trained U-Net with
cells implanted in its skips: cell weights step on one half of the training
patients, architecture weights (alpha, beta) on the other half. The two
searches differ only in the policy handed in:

- :class:`iac.nas.pruning.NoPruning` (``search_full``): never prunes;
- :class:`iac.nas.pruning.JSStabilityPruning` (``search_lth``): prunes stable
  edges progressively and the loop stops once every edge is decided.

Every ``check_every`` architecture steps the loop records a *check* (each
edge's surviving operations and their softmax weights) and hands it to the
policy; pruning events are then applied to the supernet and its optimizers.
Recording, deciding, applying and reporting stay apart: the policy never logs,
and tracking happens once per epoch.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from iac.config import SearchConfig, StabilityConfig, to_dict
from iac.nas.genotype import Genotype, SearchSpace
from iac.nas.supernet import SearchNetwork
from iac.tracking import Tracker

log = logging.getLogger(__name__)

TRAJECTORY_SCHEMA = 1


class SearchDivergedError(RuntimeError):
    """A search loss became NaN or infinite."""


@dataclass
class SearchResult:
    """What a finished search returns."""

    genotype: Genotype
    epochs_run: int
    search_seconds: float
    stopped_early: bool
    trajectory: dict[str, Any]
    pruning_log: list[dict[str, Any]]
    epoch_seconds: list[float] = field(default_factory=list)


def make_space(cfg: SearchConfig) -> SearchSpace:
    """The search space a config describes."""
    return SearchSpace(
        ops=tuple(cfg.ops),
        nodes=cfg.nodes,
        n_inputs=2 if cfg.cell_inputs == "skip+up" else 1,
        steps_per_node=cfg.steps_per_node,
        k=cfg.k,
        cell_channels=cfg.cell_channels,
        per_level=cfg.per_level,
    )


def split_patients(patients: list[str], seed: int) -> tuple[list[str], list[str]]:
    """Split training patients into a weight half and an architecture half (seeded, disjoint)."""
    if len(patients) < 2:
        raise ValueError(f"the search needs at least 2 training patients to split into weight/architecture halves, got {len(patients)}")
    order = sorted(patients)
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    half = len(order) // 2
    return sorted(order[:half]), sorted(order[half:])


def effective_warmup(cfg: SearchConfig) -> int:
    """Warm-up epochs, clamped to half of ``epochs`` with a warning for short runs."""
    cap = cfg.epochs // 2
    if cfg.warmup_epochs > cap:
        warnings.warn(
            f"warmup_epochs={cfg.warmup_epochs} is more than half of epochs={cfg.epochs}; using {cap}",
            stacklevel=2,
        )
        return cap
    return cfg.warmup_epochs


def check_record(supernet: SearchNetwork, check: int, epoch: int, arch_step: int) -> dict[str, Any]:
    """The JSON record of every edge's surviving operations and weights right now."""
    archs = []
    for a in range(supernet.n_archs):
        edges = []
        for e in supernet.edge_states(a):
            edges.append(
                {
                    "edge": f"{e.src}->{e.dst}",
                    "ops": list(e.ops),
                    "alpha": [float(x) for x in e.alpha],
                    "beta": float(e.beta),
                    "alive": bool(e.alive),
                }
            )
        archs.append({"edges": edges})
    return {"check": check, "epoch": epoch, "arch_step": arch_step, "archs": archs}


class _Loaders:
    """Seeded loaders over the weight and architecture halves, re-created per epoch."""

    def __init__(self, w_ds, a_ds, batch_size: int, seed: int, max_slices: int | None) -> None:
        self.w_ds, self.a_ds = w_ds, a_ds
        self.batch_size = batch_size
        self.max_slices = max_slices
        self.gen_w = torch.Generator().manual_seed(seed)
        self.gen_a = torch.Generator().manual_seed(seed + 1)

    def _loader(self, ds, gen):
        from torch.utils.data import DataLoader, RandomSampler

        n = len(ds) if self.max_slices is None else min(len(ds), self.max_slices)
        sampler = RandomSampler(ds, replacement=False, num_samples=n, generator=gen)
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, drop_last=False, num_workers=0)

    def epoch(self):
        """Yield (weight batch, architecture batch) pairs for one epoch."""
        a_iter = iter(self._loader(self.a_ds, self.gen_a))
        for wb in self._loader(self.w_ds, self.gen_w):
            try:
                ab = next(a_iter)
            except StopIteration:
                a_iter = iter(self._loader(self.a_ds, self.gen_a))
                ab = next(a_iter)
            yield wb, ab

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"gen_w": self.gen_w.get_state(), "gen_a": self.gen_a.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.gen_w.set_state(state["gen_w"])
        self.gen_a.set_state(state["gen_a"])

    def __len__(self) -> int:
        n = len(self.w_ds) if self.max_slices is None else min(len(self.w_ds), self.max_slices)
        return math.ceil(n / self.batch_size)


def _optimizers(supernet: SearchNetwork, cfg: SearchConfig):
    w_opt = torch.optim.AdamW(list(supernet.weight_parameters()), lr=cfg.w_lr, weight_decay=cfg.w_weight_decay)
    a_opt = torch.optim.Adam(
        list(supernet.arch_parameters()), lr=cfg.arch_lr, betas=tuple(cfg.arch_betas), weight_decay=cfg.arch_weight_decay
    )
    return w_opt, a_opt


def _lr_at(cfg: SearchConfig, epoch: int) -> float:
    """Cosine decay of the cell-weight learning rate over the full epoch budget."""
    return 0.5 * cfg.w_lr * (1.0 + math.cos(math.pi * epoch / max(1, cfg.epochs)))


def run_search(
    cfg: SearchConfig,
    unet: torch.nn.Module,
    data,
    policy,
    tracker: Tracker | None = None,
    stability: StabilityConfig | None = None,
    checkpoint_path: Path | None = None,
    resume_from: Path | None = None,
    stop_after_epochs: int | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> SearchResult:
    """Search a cell in the skips of a trained U-Net.

    Args:
        cfg: search settings.
        unet: the pre-trained baseline U-Net (it is wrapped, not copied).
        data: a :class:`iac.data.store.PreparedDataset`.
        policy: ``NoPruning`` or ``JSStabilityPruning`` (same interface).
        tracker: where per-epoch metrics go.
        stability: supplies ``check_every`` (architecture steps between checks);
            the default config's value is used when None.
        checkpoint_path: checkpoint written atomically after every epoch.
        resume_from: a checkpoint to continue from (same settings).
        stop_after_epochs: stop (as if killed) after this many epochs in total;
            used to test resumption.
        progress: show a progress bar.
        on_epoch: called with each epoch record.

    Returns:
        The derived genotype, the trajectory and timings.
    """
    from tqdm.auto import tqdm

    from iac.data.dataset import SliceDataset
    from iac.nas.pruning import apply_events
    from iac.train.checkpoint import load_checkpoint, restore_rng_state
    from iac.train.device import resolve_device, seed_everything
    from iac.train.loop import validate_patient_dice
    from iac.train.losses import make_loss

    tracker = tracker or Tracker()
    stability = stability or StabilityConfig()
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    space = make_space(cfg)
    warmup = effective_warmup(cfg)

    w_patients, a_patients = split_patients(data.patients("train"), cfg.seed)
    loaders = _Loaders(
        SliceDataset(data, "train", patients=w_patients),
        SliceDataset(data, "train", patients=a_patients),
        cfg.batch_size,
        cfg.seed,
        cfg.max_slices_per_epoch,
    )
    supernet = SearchNetwork(unet, space, freeze_backbone=cfg.freeze_backbone).to(device)
    loss_fn = make_loss()
    use_amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    trajectory: dict[str, Any] = {
        "schema": TRAJECTORY_SCHEMA,
        "space": space.to_dict() if hasattr(space, "to_dict") else to_dict(space),
        "settings": to_dict(cfg),
        "check_every": stability.check_every,
        "warmup_epochs": warmup,
        "split": {"weight": w_patients, "arch": a_patients},
        "checks": [],
        "epochs": [],
        "events": [],
    }
    start_epoch, arch_step, n_checks, cum_seconds = 0, 0, 0, 0.0

    if resume_from is not None:
        state = load_checkpoint(resume_from)
        supernet.apply_masks(state["masks"])
        supernet.load_state_dict(state["model"])
        w_opt, a_opt = _optimizers(supernet, cfg)
        w_opt.load_state_dict(state["w_opt"])
        a_opt.load_state_dict(state["a_opt"])
        policy.load_state_dict(state["policy"])
        loaders.load_state_dict(state["loaders"])
        restore_rng_state(state["rng"])
        trajectory = state["trajectory"]
        start_epoch, arch_step, n_checks = int(state["epoch"]) + 1, int(state["arch_step"]), int(state["n_checks"])
        cum_seconds = float(state["cum_seconds"])
        log.info("resumed search at epoch %d (arch step %d)", start_epoch, arch_step)
    else:
        w_opt, a_opt = _optimizers(supernet, cfg)

    stopped_early = bool(trajectory["epochs"] and trajectory["epochs"][-1].get("all_decided"))
    last_epoch = start_epoch - 1
    for epoch in range(start_epoch, cfg.epochs):
        if stopped_early:
            break
        if stop_after_epochs is not None and epoch >= stop_after_epochs:
            break
        t0 = time.perf_counter()
        for g in w_opt.param_groups:
            g["lr"] = _lr_at(cfg, epoch)
        supernet.train()
        arch_on = epoch >= warmup
        w_losses, a_losses = [], []
        # The derived genotype changes only with architecture steps; it is
        # refreshed at each check, not re-derived every batch.
        geno_str = str(supernet.genotype())[:48]
        bar = tqdm(loaders.epoch(), total=len(loaders), desc=f"search {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress)
        for wb, ab in bar:
            # Weight step on the weight half: (B, C, H, W) images, (B, 1, H, W) labels.
            x, y = wb["image"].to(device), wb["label"].to(device)
            w_opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=use_amp):
                loss = loss_fn(supernet(x), y)
            _check_finite(loss, epoch, "weight")
            scaler.scale(loss).backward()
            scaler.step(w_opt)
            scaler.update()
            w_losses.append(float(loss.detach()))
            if not arch_on:
                continue
            # First-order architecture step on the architecture half.
            xa, ya = ab["image"].to(device), ab["label"].to(device)
            a_opt.zero_grad(set_to_none=True)
            w_opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, enabled=use_amp):
                a_loss = loss_fn(supernet(xa), ya)
            _check_finite(a_loss, epoch, "architecture")
            a_loss.backward()
            a_opt.step()
            a_losses.append(float(a_loss.detach()))
            arch_step += 1
            if arch_step % stability.check_every == 0:
                n_checks += 1
                record = check_record(supernet, n_checks, epoch, arch_step)
                events = policy.observe(record)
                record["status"] = _status_of(policy)
                trajectory["checks"].append(record)
                if events:
                    apply_events(supernet, events, w_opt, a_opt)
                    trajectory["events"].extend(_event_dict(ev) for ev in events)
                geno_str = str(supernet.genotype())[:48]
            bar.set_postfix(loss=f"{w_losses[-1]:.3f}", geno=geno_str)

        val_dice, _ = validate_patient_dice(supernet, data, "val", device, cfg.batch_size)
        all_decided = bool(getattr(policy, "all_decided", False))
        rec = _epoch_record(supernet, epoch, arch_step, w_losses, a_losses, val_dice, all_decided)
        trajectory["epochs"].append(rec)
        if checkpoint_path is not None:
            rec["epoch_seconds"] = time.perf_counter() - t0  # provisional, rewritten below
            _save(checkpoint_path, supernet, w_opt, a_opt, policy, loaders, trajectory, epoch, arch_step, n_checks, cum_seconds + rec["epoch_seconds"])
        epoch_seconds = time.perf_counter() - t0
        cum_seconds += epoch_seconds
        rec["epoch_seconds"] = epoch_seconds
        rec["cum_seconds"] = cum_seconds
        tracker.log_metrics(_epoch_metrics(rec, trajectory), step=epoch)
        if on_epoch:
            on_epoch(rec)
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}/{cfg.epochs}  loss {rec['train_loss']:.4f}  val Dice {val_dice:.4f}  "
                f"{epoch_seconds:.1f}s  ops {rec['surviving_ops']}  {rec['genotype_str']}"
            )
        last_epoch = epoch
        stopped_early = all_decided

    # Resave the final checkpoint so it holds the final timings.
    if checkpoint_path is not None and last_epoch >= start_epoch:
        _save(checkpoint_path, supernet, w_opt, a_opt, policy, loaders, trajectory, last_epoch, arch_step, n_checks, cum_seconds)
    genotype = supernet.genotype()
    trajectory["final_genotype"] = genotype.to_dict() if hasattr(genotype, "to_dict") else str(genotype)
    return SearchResult(
        genotype=genotype,
        epochs_run=len(trajectory["epochs"]),
        search_seconds=cum_seconds,
        stopped_early=stopped_early,
        trajectory=trajectory,
        pruning_log=list(trajectory["events"]),
        epoch_seconds=[e["epoch_seconds"] for e in trajectory["epochs"]],
    )


def _check_finite(loss: torch.Tensor, epoch: int, which: str) -> None:
    if not torch.isfinite(loss):
        raise SearchDivergedError(
            f"{which} loss became {float(loss)} in epoch {epoch + 1}; lower the learning rates (w_lr / arch_lr)"
        )


def _status_of(policy) -> Any:
    status = getattr(policy, "last_status", None)
    if status is None:
        return None
    try:
        return {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in status.items()}
    except AttributeError:
        return status


def _event_dict(ev) -> dict[str, Any]:
    if hasattr(ev, "to_dict"):
        return ev.to_dict()
    import dataclasses

    return dataclasses.asdict(ev)


def _epoch_record(supernet, epoch, arch_step, w_losses, a_losses, val_dice, all_decided) -> dict[str, Any]:
    genotype = supernet.genotype()
    archs = check_record(supernet, -1, epoch, arch_step)["archs"]
    surviving = sum(len(e["ops"]) for a in archs for e in a["edges"] if e["alive"])
    return {
        "epoch": epoch,
        "arch_steps": arch_step,
        "train_loss": float(np.mean(w_losses)) if w_losses else float("nan"),
        "arch_loss": float(np.mean(a_losses)) if a_losses else None,
        "val_dice": float(val_dice),
        "archs": archs,
        "surviving_ops": surviving,
        "params": int(sum(p.numel() for p in supernet.weight_parameters())),
        "genotype": genotype.to_dict() if hasattr(genotype, "to_dict") else None,
        "genotype_str": str(genotype),
        "all_decided": all_decided,
    }


def _epoch_metrics(rec: dict[str, Any], trajectory: dict[str, Any]) -> dict[str, float]:
    m = {
        "train_loss": rec["train_loss"],
        "val_dice": rec["val_dice"],
        "epoch_seconds": rec["epoch_seconds"],
        "cum_seconds": rec["cum_seconds"],
        "surviving_ops": rec["surviving_ops"],
        "cell_params": rec["params"],
    }
    if rec["arch_loss"] is not None:
        m["arch_loss"] = rec["arch_loss"]
    for a, arch in enumerate(rec["archs"]):
        for e in arch["edges"]:
            key = e["edge"].replace("->", "_")
            for op, p in zip(e["ops"], e["alpha"]):
                m[f"alpha/a{a}/e{key}/{op}"] = p
            m[f"beta/a{a}/e{key}"] = e["beta"]
    # JS divergence of the last check this epoch, where the policy reports it.
    checks = [c for c in trajectory["checks"] if c["epoch"] == rec["epoch"] and c.get("status")]
    if checks and isinstance(checks[-1]["status"], dict):
        for key, st in checks[-1]["status"].items():
            js = st.get("js") if isinstance(st, dict) else None
            if js is not None:
                m[f"js/{key}".replace("->", "_")] = js
    return m


def _save(path, supernet, w_opt, a_opt, policy, loaders, trajectory, epoch, arch_step, n_checks, cum_seconds) -> None:
    from iac.train.checkpoint import capture_rng_state, save_checkpoint

    save_checkpoint(
        path,
        {
            "model": supernet.state_dict(),
            "masks": supernet.masks(),
            "w_opt": w_opt.state_dict(),
            "a_opt": a_opt.state_dict(),
            "policy": policy.state_dict(),
            "loaders": loaders.state_dict(),
            "rng": capture_rng_state(),
            "trajectory": trajectory,
            "epoch": epoch,
            "arch_step": arch_step,
            "n_checks": n_checks,
            "cum_seconds": cum_seconds,
        },
    )
