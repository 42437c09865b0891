"""Dice + cross-entropy loss."""

from __future__ import annotations

import pytest
import torch
from monai.losses import DiceCELoss

from iac.config import TrainConfig
from iac.train.losses import make_loss


def _logits_for(label: torch.Tensor, k: int, scale: float) -> torch.Tensor:
    onehot = torch.nn.functional.one_hot(label[:, 0], k).permute(0, 3, 1, 2).float()
    return scale * (2 * onehot - 1)


def test_good_prediction_scores_lower_than_bad():
    loss = make_loss(TrainConfig())
    assert isinstance(loss, DiceCELoss)
    label = torch.zeros(2, 1, 16, 16, dtype=torch.long)
    label[:, :, 4:10, 4:10] = 1
    label[1, :, 12:, 12:] = 2
    good = loss(_logits_for(label, 3, 8.0), label)
    bad = loss(_logits_for((label + 1) % 3, 3, 8.0), label)
    assert good.ndim == 0 and torch.isfinite(good)
    assert float(good) < 0.05 < float(bad)


def test_gradient_reaches_logits():
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    label = torch.randint(0, 2, (2, 1, 8, 8))
    make_loss()(logits, label).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_weights_come_from_config():
    loss = make_loss(TrainConfig(dice_weight=0.0, ce_weight=2.0))
    logits = torch.randn(2, 3, 8, 8)
    label = torch.randint(0, 3, (2, 1, 8, 8))
    ce = torch.nn.functional.cross_entropy(logits, label[:, 0])
    assert torch.allclose(loss(logits, label), 2.0 * ce, atol=1e-6)


@pytest.mark.parametrize("dice,ce", [(-1.0, 1.0), (0.0, 0.0)])
def test_bad_weights(dice, ce):
    with pytest.raises(ValueError, match="dice_weight"):
        make_loss(dice_weight=dice, ce_weight=ce)
