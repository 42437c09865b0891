"""The architecture step of the bilevel search (DARTS' ``Architect``).

First-order DARTS / PC-DARTS: the architecture weights (alpha per edge, beta
per node) descend the segmentation loss on a batch of the *architecture*
half of the training patients, with the cell weights held at their current
values (no unrolled second-order term). The cell weights step separately, on
the weight half, with the training engine's :func:`iac.train.steps.train_step`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import nn

from iac.train.device import autocast


class Architect:
    """Adam on the architecture weights of a :class:`iac.nas.supernet.SearchNetwork`.

    Args:
        supernet: The network whose ``arch_parameters()`` are optimised.
        loss_fn: ``loss(logits, labels) -> scalar``.
        lr: Adam learning rate (PC-DARTS: 6e-4).
        betas: Adam betas (PC-DARTS: (0.5, 0.999)).
        weight_decay: Adam weight decay on alpha and beta (PC-DARTS: 1e-3).
        amp: Autocast the forward pass (CUDA only).
    """

    def __init__(self, supernet: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
                 lr: float, betas: tuple[float, float], weight_decay: float, amp: bool = False) -> None:
        self.supernet, self.loss_fn, self.amp = supernet, loss_fn, amp
        self.optimizer = torch.optim.Adam(list(supernet.arch_parameters()), lr=lr, betas=tuple(betas),
                                          weight_decay=weight_decay)

    @classmethod
    def from_config(cls, supernet: nn.Module, loss_fn: Callable, cfg: Any, amp: bool = False) -> "Architect":
        """Build from a :class:`iac.config.SearchConfig`."""
        return cls(supernet, loss_fn, lr=cfg.arch_lr, betas=tuple(cfg.arch_betas),
                   weight_decay=cfg.arch_weight_decay, amp=amp)

    def step(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """One architecture step on ``image`` ``(B, C, H, W)``, ``label`` ``(B, 1, H, W)``.

        Returns:
            The detached loss (not synchronised). Gradients reach the cell
            weights too; the next weight step clears them before its own.
        """
        device = image.device
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(device, self.amp):
            logits = self.supernet(image)  # (B, K, H, W)
        loss = self.loss_fn(logits.float(), label)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
