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



class Architect:
    """Adam on the architecture weights of a :class:`iac.nas.supernet.SearchNetwork`.

    Args:
        supernet: The network whose ``arch_parameters()`` are optimised.
        loss_fn: ``loss(logits, labels) -> scalar``.
        lr: Adam learning rate (PC-DARTS: 6e-4).
        betas: Adam betas (PC-DARTS: (0.5, 0.999)).
        weight_decay: Adam weight decay on alpha and beta (PC-DARTS: 1e-3).
        precision: ``"fp32"``, or ``"bf16"`` to autocast the forward pass to
            bfloat16 (CUDA; ignored elsewhere). Never float16: the alpha and
            beta gradients pass through the zero-initialised output
            projection and are small enough to underflow in float16 without
            a gradient scaler, and bfloat16 has float32's range.

    Besides stepping, it keeps the mean and variance of each edge's alpha
    gradient over the steps since :meth:`take_grad_stats` was last called
    (the search records them at every check: the noise the stability test
    has to see through).
    """

    def __init__(self, supernet: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], *,
                 lr: float, betas: tuple[float, float], weight_decay: float, precision: str = "fp32") -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        self.supernet, self.loss_fn, self.precision = supernet, loss_fn, precision
        self.optimizer = torch.optim.Adam(list(supernet.arch_parameters()), lr=lr, betas=tuple(betas),
                                          weight_decay=weight_decay)
        self._grad_sum: dict[tuple[int, int], torch.Tensor] = {}
        self._grad_sq: dict[tuple[int, int], torch.Tensor] = {}
        self._grad_n = 0

    @classmethod
    def from_config(cls, supernet: nn.Module, loss_fn: Callable, cfg: Any) -> "Architect":
        """Build from a :class:`iac.config.SearchConfig`."""
        return cls(supernet, loss_fn, lr=cfg.arch_lr, betas=tuple(cfg.arch_betas),
                   weight_decay=cfg.arch_weight_decay, precision=cfg.arch_precision)

    def step(self, image: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """One architecture step on ``image`` ``(B, C, H, W)``, ``label`` ``(B, 1, H, W)``.

        Returns:
            The detached loss (not synchronised). Gradients reach the cell
            weights too; the next weight step clears them before its own.
        """
        device = image.device
        self.optimizer.zero_grad(set_to_none=True)
        bf16 = self.precision == "bf16" and device.type == "cuda"
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = self.supernet(image)  # (B, K, H, W)
        loss = self.loss_fn(logits.float(), label)
        loss.backward()
        self._accumulate_grads()
        self.optimizer.step()
        return loss.detach()

    def _accumulate_grads(self) -> None:
        """Add this step's alpha gradients to the running sums (on the device, no synchronisation)."""
        self._grad_n += 1
        for a, arch in enumerate(self.supernet.archs):
            for e, p in enumerate(arch.alpha):
                if p.grad is None:
                    continue
                g = p.grad.detach().double()  # (surviving ops,)
                key = (a, e)
                if key in self._grad_sum and self._grad_sum[key].shape == g.shape:
                    self._grad_sum[key] += g
                    self._grad_sq[key] += g * g
                else:
                    self._grad_sum[key], self._grad_sq[key] = g.clone(), g * g

    def take_grad_stats(self) -> dict[tuple[int, int], tuple[list[float], list[float]]]:
        """Per ``(arch, edge)``: the mean and the (unbiased) variance of each op's alpha gradient; then reset.

        Over the architecture steps since the last call; an empty dict when
        there were none. The variance is 0.0 after a single step.
        """
        n, out = self._grad_n, {}
        for key, s in self._grad_sum.items():
            mean = s / n
            var = (self._grad_sq[key] - n * mean * mean) / (n - 1) if n > 1 else torch.zeros_like(mean)
            out[key] = (mean.tolist(), var.clamp_min(0.0).tolist())
        self._grad_sum, self._grad_sq, self._grad_n = {}, {}, 0
        return out

    def state_dict(self) -> dict[str, Any]:
        """The optimiser and the gradient sums since the last check (a check may straddle a checkpoint)."""
        key = lambda k: f"{k[0]},{k[1]}"  # noqa: E731  (checkpoint keys are strings)
        return {
            "optimizer": self.optimizer.state_dict(),
            "grad_n": self._grad_n,
            "grad_sum": {key(k): v.cpu() for k, v in self._grad_sum.items()},
            "grad_sq": {key(k): v.cpu() for k, v in self._grad_sq.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        device = next(iter(self.supernet.arch_parameters())).device
        key = lambda s: tuple(int(x) for x in s.split(","))  # noqa: E731
        self._grad_n = int(state.get("grad_n", 0))
        self._grad_sum = {key(k): v.to(device) for k, v in state.get("grad_sum", {}).items()}
        self._grad_sq = {key(k): v.to(device) for k, v in state.get("grad_sq", {}).items()}
