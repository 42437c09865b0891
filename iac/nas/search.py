"""The one search loop shared by ``search_full`` and ``search_lth``.

PC-DARTS first-order bilevel optimisation on a frozen, pre-trained U-Net with
cells implanted in its skips: cell weights step on one half of the training
patients (:func:`iac.train.steps.train_step`), architecture weights (alpha,
beta) on the other half (:class:`iac.nas.architect.Architect`). The two
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

import dataclasses
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from tqdm.auto import tqdm

from iac.config import SearchConfig, to_dict
from iac.faults import fault_point
from iac.nas.architect import Architect
from iac.nas.genotype import Genotype, SearchSpace
from iac.nas.mixed_op import keep_inputs_only
from iac.nas.supernet import SearchNetwork
from iac.progress import bars_enabled
from iac.tracking import Tracker
from iac.train.device import make_grad_scaler, resolve_device
from iac.train.loader import PairedLoader, move_batch
from iac.train.steps import LossLog, make_scheduler, train_step

log = logging.getLogger(__name__)

TRAJECTORY_SCHEMA = 1
_CHECKPOINT_KIND = "iac.nas.SearchState"
_CHECKPOINT_VERSION = 2
_DIVERGED_HINT = "lower the learning rates (w_lr / arch_lr)"


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


def check_record(supernet: SearchNetwork, check: int, epoch: int, arch_step: int,
                 grad_stats: Mapping[tuple[int, int], tuple[list[float], list[float]]] | None = None
                 ) -> dict[str, Any]:
    """The JSON record of every edge's surviving operations and weights right now.

    With ``grad_stats`` (:meth:`Architect.take_grad_stats`), each edge also
    carries ``grad_mean`` and ``grad_var``: its alpha gradient's mean and
    variance per operation over the architecture steps since the last check.
    """
    archs = []
    for a in range(supernet.n_archs):
        edges = []
        for e, st in enumerate(supernet.edge_states(a)):
            rec = {"edge": f"{st.src}->{st.dst}", "ops": list(st.ops), "alpha": [float(x) for x in st.alpha],
                   "beta": float(st.beta), "alive": bool(st.alive), "mass": float(st.mass)}
            if grad_stats and (a, e) in grad_stats and len(grad_stats[(a, e)][0]) == len(st.ops):
                rec["grad_mean"], rec["grad_var"] = grad_stats[(a, e)]
            edges.append(rec)
        archs.append({"edges": edges})
    return {"check": check, "epoch": epoch, "arch_step": arch_step, "archs": archs}


def make_weight_optimizer(params: list[torch.nn.Parameter], cfg: SearchConfig) -> torch.optim.Optimizer:
    """The cell weights' optimiser: AdamW (ours) or SGD with momentum (PC-DARTS)."""
    if cfg.w_optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.w_lr, momentum=cfg.w_momentum, weight_decay=cfg.w_weight_decay)
    return torch.optim.AdamW(params, lr=cfg.w_lr, weight_decay=cfg.w_weight_decay)


class SearchState:
    """Everything a search carries from one epoch to the next, and its checkpoint.

    Built from the settings, the baseline U-Net and the data; the networks,
    optimisers, schedule, loaders' generators, policy and trajectory are
    restored together by :meth:`load_state_dict`, so a resumed search on CPU
    equals an uninterrupted one.

    Args:
        cfg: Search settings.
        unet: The pre-trained baseline U-Net (wrapped, not copied).
        data: A :class:`iac.data.store.PreparedDataset`.
        policy: ``NoPruning`` or ``JSStabilityPruning``.
    """

    def __init__(self, cfg: SearchConfig, unet: torch.nn.Module, data: Any, policy: Any) -> None:
        from iac.data.dataset import SliceDataset
        from iac.data.splits import split_search_halves
        from iac.train.losses import make_loss

        self.cfg, self.data, self.policy = cfg, data, policy
        self.device = resolve_device(cfg.device)
        self.amp = bool(cfg.amp and self.device.type == "cuda")
        space = SearchSpace.from_config(cfg)
        w_patients, a_patients = split_search_halves(data.patients("train"), cfg.seed)
        self.loaders = PairedLoader(SliceDataset(data, "train", patients=w_patients),
                                    SliceDataset(data, "train", patients=a_patients),
                                    cfg.batch_size, cfg.seed, cfg.max_slices_per_epoch)
        self.supernet = SearchNetwork(unet, space, freeze_backbone=cfg.freeze_backbone).to(self.device)
        if cfg.compile_cells:
            from iac.nas.compiled import compile_cells

            compile_cells(self.supernet)
        self.loss_fn = make_loss()
        self.scaler = make_grad_scaler(self.device, self.amp)
        self._build_optimizers()
        self.warmup = effective_warmup(cfg)
        self.epoch, self.arch_step, self.n_checks, self.cum_seconds = 0, 0, 0, 0.0
        self.trajectory: dict[str, Any] = {
            "schema": TRAJECTORY_SCHEMA,
            "space": space.to_dict(),
            "settings": to_dict(cfg),
            "check_every": cfg.check_every,
            "warmup_epochs": self.warmup,
            "split": {"weight": w_patients, "arch": a_patients},
            "checks": [],
            "epochs": [],
            "events": [],
        }

    def _build_optimizers(self) -> None:
        """Optimisers over the supernet's current parameters (again after pruning masks are applied)."""
        self.w_opt = make_weight_optimizer(list(self.supernet.weight_parameters()), self.cfg)
        # Cosine decay of the cell-weight learning rate per step over the whole epoch budget.
        self.schedule = make_scheduler(self.w_opt, "cosine", self.cfg.epochs * len(self.loaders))
        self.architect = Architect.from_config(self.supernet, self.loss_fn, self.cfg)

    @property
    def all_decided(self) -> bool:
        """The policy has decided every edge (LTH's stop rule; never for the full search)."""
        return bool(getattr(self.policy, "all_decided", False))

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: plain containers and tensors only."""
        from iac.train.checkpoint import capture_rng_state

        return {
            "kind": _CHECKPOINT_KIND, "version": _CHECKPOINT_VERSION, "code": _code_version(),
            "model": self.supernet.state_dict(), "masks": self.supernet.masks(),
            "w_opt": self.w_opt.state_dict(), "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(), "architect": self.architect.state_dict(),
            "policy": self.policy.state_dict(), "loaders": self.loaders.state_dict(), "rng": capture_rng_state(),
            "trajectory": self.trajectory, "epoch": self.epoch, "arch_step": self.arch_step,
            "n_checks": self.n_checks, "cum_seconds": self.cum_seconds,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (pruning masks are re-applied first)."""
        from iac.train.checkpoint import restore_rng_state

        check_search_checkpoint(state, self.cfg)
        self.supernet.apply_masks(state["masks"])
        self.supernet.load_state_dict(state["model"])
        self._build_optimizers()  # pruning replaced parameters: optimisers over the survivors, then load
        self.w_opt.load_state_dict(state["w_opt"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        self.architect.load_state_dict(state["architect"])
        self.policy.load_state_dict(state["policy"])
        self.loaders.load_state_dict(state["loaders"])
        restore_rng_state(state["rng"])
        self.trajectory = state["trajectory"]
        self.epoch, self.arch_step = int(state["epoch"]), int(state["arch_step"])
        self.n_checks, self.cum_seconds = int(state["n_checks"]), float(state["cum_seconds"])

    def save(self, path: Path) -> None:
        """Write :meth:`state_dict` atomically."""
        from iac.train.checkpoint import save_checkpoint

        save_checkpoint(path, self.state_dict())


# Top-level keys of a search checkpoint (what a resume verifies before loading).
CHECKPOINT_KEYS = ("kind", "version", "model", "masks", "w_opt", "schedule", "architect", "policy", "loaders",
                   "rng", "trajectory", "epoch", "arch_step", "n_checks", "cum_seconds")


def check_search_checkpoint(state: Mapping[str, Any], cfg: SearchConfig) -> None:
    """Raise a one-line :class:`CheckpointError` unless ``state`` can continue a search with ``cfg``.

    Checks the kind and format version (a checkpoint of another code version)
    and the search space (operations, nodes, inputs, width, partial channels,
    per-level cells): a checkpoint of another space cannot be loaded.
    """
    from iac.train.checkpoint import CheckpointError, check_checkpoint_header

    check_checkpoint_header(state, "search", _CHECKPOINT_KIND, _CHECKPOINT_VERSION, CHECKPOINT_KEYS,
                            "start the search afresh (resume='')")
    saved = (state.get("trajectory") or {}).get("space")
    space = SearchSpace.from_config(cfg).to_dict()
    if saved != space:
        diff = sorted(k for k in set(space) | set(saved or {}) if (saved or {}).get(k) != space.get(k))
        raise CheckpointError(
            f"the search checkpoint is from another search space (differs in {', '.join(diff)}: "
            + "; ".join(f"{k} {(saved or {}).get(k)!r} vs {space.get(k)!r}" for k in diff)
            + "); resume with the settings it was written with, or start afresh (resume='')"
        )


def check_and_prune(state: SearchState, epoch: int) -> None:
    """Record a check, let the policy decide, and apply its pruning events."""
    from iac.nas.pruning import apply_events

    state.n_checks += 1
    record = check_record(state.supernet, state.n_checks, epoch, state.arch_step,
                          state.architect.take_grad_stats())
    events = state.policy.observe(record)
    record["status"] = _status_of(state.policy)
    state.trajectory["checks"].append(record)
    if events:
        apply_events(state.supernet, events, state.w_opt, state.architect.optimizer)
        state.trajectory["events"].extend(_event_dict(ev) for ev in events)


def search_epoch(state: SearchState, epoch: int, progress: bool = True) -> tuple[LossLog, LossLog]:
    """One epoch of the bilevel search: a weight step, then an architecture step, per batch pair.

    Architecture steps start after the warm-up; every ``check_every`` of them
    a check is recorded and the policy may prune.

    Returns:
        The weight and architecture losses of the epoch.
    """
    cfg, supernet, device = state.cfg, state.supernet, state.device
    w_log = LossLog(epoch + 1, what="weight loss", hint=_DIVERGED_HINT)
    a_log = LossLog(epoch + 1, what="architecture loss", hint=_DIVERGED_HINT)
    arch_on = epoch >= state.warmup
    supernet.train()
    # The derived genotype (shown in the bar) changes only with architecture steps: refreshed at checks.
    progress = progress and bars_enabled()  # the epoch's summary line is printed by the loop either way
    geno = str(supernet.genotype())[:48] if progress else ""
    bar = tqdm(state.loaders, total=len(state.loaders), desc=f"search {epoch + 1}/{cfg.epochs}", leave=False,
               disable=not progress)
    bar.set_postfix(geno=geno)
    arch_first = cfg.step_order == "arch_first"
    for w_batch, a_batch in bar:
        fault_point("mid_epoch")
        if arch_on and arch_first:
            _arch_step(state, a_batch, a_log, epoch, w_log)
        x, y = move_batch(w_batch, device)  # (B, C, H, W), (B, 1, H, W)
        w_log.add(train_step(supernet, x, y, state.loss_fn, state.w_opt, state.scaler, device=device,
                             amp=state.amp, clip_norm=cfg.w_grad_clip), x.shape[0])
        state.schedule.step()
        if arch_on and not arch_first:
            _arch_step(state, a_batch, a_log, epoch, w_log)
        if progress and arch_on and state.arch_step % cfg.check_every == 0:
            geno = str(supernet.genotype())[:48]
            bar.set_postfix(geno=geno)
    w_log.flush(), a_log.flush()
    return w_log, a_log


def _arch_step(state: SearchState, batch: Mapping[str, Any], a_log: LossLog, epoch: int, w_log: LossLog) -> None:
    """One architecture step; a check (and maybe pruning) every ``check_every`` of them."""
    xa, ya = move_batch(batch, state.device)
    a_log.add(state.architect.step(xa, ya), xa.shape[0])
    state.arch_step += 1
    if state.arch_step % state.cfg.check_every == 0:
        a_log.flush(), w_log.flush()  # no decision rests on a diverged state
        check_and_prune(state, epoch)


def run_search(
    cfg: SearchConfig,
    unet: torch.nn.Module,
    data: Any,
    policy: Any,
    tracker: Tracker | None = None,
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
        checkpoint_path: checkpoint written atomically after every epoch.
        resume_from: a checkpoint to continue from (same settings).
        stop_after_epochs: stop (as if killed) after this many epochs in total;
            used to test resumption.
        progress: show a progress bar (on a terminal) and one summary line per epoch.
        on_epoch: called with each epoch record.

    Returns:
        The derived genotype, the trajectory and timings.
    """
    from iac.train.checkpoint import load_checkpoint
    from iac.train.device import seed_everything, use_deterministic

    tracker = tracker or Tracker()
    seed_everything(cfg.seed, deterministic=use_deterministic(resolve_device(cfg.device), cfg.deterministic))
    state = SearchState(cfg, unet, data, policy)
    if resume_from is not None:
        state.load_state_dict(load_checkpoint(resume_from))
        log.info("resumed search at epoch %d (arch step %d)", state.epoch, state.arch_step)
    last = min(cfg.epochs, stop_after_epochs if stop_after_epochs is not None else cfg.epochs)
    with keep_inputs_only(recompute_enabled(cfg.recompute_backward, state.device)):
        _search_loop(state, cfg, data, last, tracker, checkpoint_path, progress, on_epoch)
    genotype = state.supernet.genotype()
    state.trajectory["final_genotype"] = genotype.to_dict()
    return SearchResult(
        genotype=genotype,
        epochs_run=len(state.trajectory["epochs"]),
        search_seconds=state.cum_seconds,
        stopped_early=bool(state.trajectory["epochs"] and state.all_decided),
        trajectory=state.trajectory,
        pruning_log=list(state.trajectory["events"]),
        epoch_seconds=[e["epoch_seconds"] for e in state.trajectory["epochs"]],
    )


def recompute_enabled(setting: str, device: torch.device) -> bool:
    """Whether ``recompute_backward`` (``"auto"``, ``"true"``, ``"false"``) is on for ``device``.

    ``"auto"`` is on CUDA only: a GPU's memory limits image size and batch,
    a CPU host's memory rarely does, and the recomputation costs a CPU step
    22–28 % more time (docs/benchmarks.md).
    """
    return setting == "true" or (setting == "auto" and torch.device(device).type == "cuda")


def _search_loop(state: SearchState, cfg: SearchConfig, data: Any, last: int, tracker: Tracker,
                 checkpoint_path: Path | None, progress: bool,
                 on_epoch: Callable[[dict[str, Any]], None] | None) -> None:
    """Epochs until ``last`` or until every edge is decided: search, validate, record, checkpoint, log."""
    from iac.eval.validate import validate_patient_dice

    while state.epoch < last and not (state.trajectory["epochs"] and state.all_decided):
        t0 = time.perf_counter()
        w_log, a_log = search_epoch(state, state.epoch, progress)
        val_dice, _ = validate_patient_dice(state.supernet, data, "val", state.device, cfg.batch_size)
        rec = _epoch_record(state.supernet, state.epoch, state.arch_step, w_log, a_log, val_dice, state.all_decided)
        rec["epoch_seconds"] = time.perf_counter() - t0
        state.cum_seconds += rec["epoch_seconds"]
        rec["cum_seconds"] = state.cum_seconds
        state.trajectory["epochs"].append(rec)
        state.epoch += 1
        fault_point("before_checkpoint")
        if checkpoint_path is not None:
            state.save(checkpoint_path)
        tracker.log_metrics(_epoch_metrics(rec, state.trajectory), step=rec["epoch"])
        if on_epoch:
            on_epoch(rec)
        if progress:
            tqdm.write(f"epoch {state.epoch}/{cfg.epochs}  loss {rec['train_loss']:.4f}  val Dice {val_dice:.4f}  "
                       f"{rec['epoch_seconds']:.1f}s  ops {rec['surviving_ops']}  {rec['genotype_str']}")


def _code_version() -> str:
    import iac

    return iac.__version__


def _status_of(policy) -> Any:
    status = getattr(policy, "last_status", None)
    if status is None:
        return None
    try:
        return {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in status.items()}
    except AttributeError:
        return status


def _event_dict(ev) -> dict[str, Any]:
    return ev.to_dict() if hasattr(ev, "to_dict") else dataclasses.asdict(ev)


def _epoch_record(supernet, epoch, arch_step, w_log: LossLog, a_log: LossLog, val_dice, all_decided) -> dict[str, Any]:
    genotype = supernet.genotype()
    archs = check_record(supernet, -1, epoch, arch_step)["archs"]
    surviving = sum(len(e["ops"]) for a in archs for e in a["edges"] if e["alive"])
    return {
        "epoch": epoch,
        "arch_steps": arch_step,
        "train_loss": w_log.mean,
        "arch_loss": a_log.mean if a_log.steps else None,
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
