"""Training loss: Dice + cross-entropy (MONAI ``DiceCELoss``).

The network outputs logits ``(B, K, H, W)``; labels are class indices
``(B, 1, H, W)``. The Dice term follows nnU-Net's 2-D setting: computed over
the whole batch ("batch Dice", so slices without foreground do not produce
unstable per-slice ratios) and over foreground classes only; cross-entropy
covers every class including background.
"""

from __future__ import annotations

from typing import Any

from monai.losses import DiceCELoss
from torch import nn

# Defaults of the Dice term (see the module docstring for the reasons).
DICE_INCLUDE_BACKGROUND = False  # background is left to cross-entropy
DICE_BATCH = True  # one Dice per class over the batch, not per slice
DICE_SMOOTH = 1e-5  # numerator and denominator smoothing (MONAI default)


def make_loss(cfg: Any = None, *, dice_weight: float | None = None, ce_weight: float | None = None) -> nn.Module:
    """Build the Dice + cross-entropy loss.

    Args:
        cfg: A settings object with ``dice_weight`` and ``ce_weight``
            (e.g. :class:`iac.config.TrainConfig`); ``None`` uses 1.0 for both.
        dice_weight: Overrides ``cfg.dice_weight``.
        ce_weight: Overrides ``cfg.ce_weight``.

    Returns:
        A module called as ``loss(logits (B,K,H,W), labels (B,1,H,W)) -> scalar``.

    Raises:
        ValueError: A weight is negative, or both are zero.
    """
    lambda_dice = float(dice_weight if dice_weight is not None else getattr(cfg, "dice_weight", 1.0))
    lambda_ce = float(ce_weight if ce_weight is not None else getattr(cfg, "ce_weight", 1.0))
    if lambda_dice < 0 or lambda_ce < 0 or lambda_dice + lambda_ce == 0:
        raise ValueError(
            f"loss weights must be >= 0 and not both 0; got dice_weight={lambda_dice}, ce_weight={lambda_ce}"
        )
    return DiceCELoss(
        include_background=DICE_INCLUDE_BACKGROUND,
        to_onehot_y=True,
        softmax=True,
        batch=DICE_BATCH,
        smooth_nr=DICE_SMOOTH,
        smooth_dr=DICE_SMOOTH,
        lambda_dice=lambda_dice,
        lambda_ce=lambda_ce,
    )
