"""The project's search state on nnU-Net's data, network and loss.

:class:`NNUNetSearchState` is a :class:`iac.nas.search.SearchState` whose
loaders are nnU-Net's (the two patient halves of a fold) and whose loss is
nnU-Net's; everything else (the supernet, the cell-weight optimiser and its
cosine schedule, the architect, the pruning policy, the trajectory and the
checkpoint) is the project's, so :func:`iac.nas.search.search_epoch` runs on
it unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from iac.config import to_dict
from iac.nas.genotype import SearchSpace
from iac.nas.search import TRAJECTORY_SCHEMA, SearchState, check_record
from iac.nas.supernet import SearchNetwork
from iac.nnunet.plans import IACPlanSettings
from iac.train.device import make_grad_scaler, seed_everything

__all__ = ["NNUNetSearchState", "make_policy"]


def make_policy(settings: IACPlanSettings, space: SearchSpace):
    """``NoPruning`` for ``method='full'``, the configured IAC-LTH policy for ``'lth'``."""
    from iac.nas.pruning import JSStabilityPruning, NoPruning

    return NoPruning() if settings.method == "full" else JSStabilityPruning(space, settings.stability)


class NNUNetSearchState(SearchState):
    """Search state of :class:`iac.nnunet.trainers.nnUNetTrainerIACSearch`.

    Args:
        settings: the configuration's ``iac`` block.
        network: the nnU-Net network with the baseline's weights (wrapped, not copied).
        loaders: yields ``(weight batch, architecture batch)`` pairs; ``len`` = iterations per epoch.
        loss_fn: nnU-Net's loss of the configuration (without deep supervision).
        device: where the supernet runs.
        epochs: nnU-Net epochs of the search (the mapped budget).
        warmup: nnU-Net epochs before architecture steps start.
        split: the patients of the weight and architecture halves.
        baseline: where the baseline's weights came from (recorded in the trajectory).
    """

    def __init__(self, settings: IACPlanSettings, network: torch.nn.Module, loaders: Any,
                 loss_fn: Callable, device: torch.device, epochs: int, warmup: int,
                 split: dict[str, list[str]], baseline: str) -> None:
        from dataclasses import replace

        self.cfg = replace(settings.search, epochs=epochs, warmup_epochs=warmup)
        seed_everything(self.cfg.seed)
        self.data = None
        self.policy = make_policy(settings, SearchSpace.from_config(self.cfg))
        self.device = device
        self.amp = bool(self.cfg.amp and device.type == "cuda")
        self.loaders = loaders
        space = SearchSpace.from_config(self.cfg)
        self.supernet = SearchNetwork(network, space, freeze_backbone=self.cfg.freeze_backbone).to(device)
        self.loss_fn = loss_fn
        self.scaler = make_grad_scaler(device, self.amp)
        self._build_optimizers()
        self.warmup = warmup
        self.epoch, self.arch_step, self.n_checks, self.cum_seconds = 0, 0, 0, 0.0
        self.trajectory: dict[str, Any] = {
            "schema": TRAJECTORY_SCHEMA,
            "space": space.to_dict(),
            "settings": to_dict(self.cfg),
            "method": settings.method,
            "stability": to_dict(settings.stability) if settings.method == "lth" else None,
            "backbone": "nnunet",
            "baseline": baseline,
            "check_every": self.cfg.check_every,
            "warmup_epochs": warmup,
            "split": split,
            "checks": [],
            "epochs": [],
            "events": [],
        }

    def record_epoch(self, w_log, a_log, val_dice: float, seconds: float) -> dict[str, Any]:
        """Append the epoch record (losses, nnU-Net's pseudo-Dice, timings, weights, genotype) and advance."""
        genotype = self.supernet.genotype()
        archs = check_record(self.supernet, -1, self.epoch, self.arch_step)["archs"]
        self.cum_seconds += seconds
        rec = {
            "epoch": self.epoch,
            "arch_steps": self.arch_step,
            "train_loss": float(w_log.mean),
            "arch_loss": float(a_log.mean) if a_log.steps else None,
            "val_dice": float(val_dice),  # nnU-Net's pseudo-Dice of the validation patches
            "archs": archs,
            "surviving_ops": sum(len(e["ops"]) for a in archs for e in a["edges"] if e["alive"]),
            "params": int(sum(p.numel() for p in self.supernet.weight_parameters())),
            "genotype": genotype.to_dict(),
            "genotype_str": str(genotype),
            "all_decided": self.all_decided,
            "epoch_seconds": seconds,
            "cum_seconds": self.cum_seconds,
        }
        self.trajectory["epochs"].append(rec)
        self.epoch += 1
        return rec
