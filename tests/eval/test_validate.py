"""Patient-level validation Dice on the prepared grid (training and search)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from trainkit import FakePrepared

from iac.eval.validate import make_validator, validate_patient_dice


class _Threshold(nn.Module):
    """Class 1 where the image is above 0.5."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.cat([0.5 - x, x - 0.5], dim=1) + 0 * self.dummy


def test_patient_dice_by_hand():
    z, h, w = 3, 4, 4
    # Patient A, frame 1: perfect. Frame 2: ground truth 4 px, prediction 2 of them -> 2*2/(4+2).
    lab_a1 = np.zeros((z, h, w), np.uint8)
    lab_a1[1, :2, :2] = 1
    img_a1 = lab_a1[None].astype(np.float32)
    lab_a2 = np.zeros((z, h, w), np.uint8)
    lab_a2[2, :2, :2] = 1
    img_a2 = np.zeros((1, z, h, w), np.float32)
    img_a2[0, 2, 0, :2] = 1
    # Patient B: nothing to find and nothing found -> 1 (both empty).
    lab_b = np.zeros((z, h, w), np.uint8)
    img_b = np.zeros((1, z, h, w), np.float32)
    ds = FakePrepared({"a1": (img_a1, lab_a1, "A"), "a2": (img_a2, lab_a2, "A"), "b": (img_b, lab_b, "B")})
    model = _Threshold().train()
    mean, per_patient = validate_patient_dice(model, ds, "val", "cpu", batch_size=2)
    assert per_patient == pytest.approx({"A": (1 + 2 / 3) / 2, "B": 1.0})
    assert mean == pytest.approx(((1 + 2 / 3) / 2 + 1) / 2)
    assert model.training  # mode restored
    with pytest.raises(ValueError, match="test"):
        validate_patient_dice(model, ds, "test", "cpu")


def test_validator_takes_the_device_from_the_model():
    ds = FakePrepared({"a": (np.ones((1, 2, 4, 4), np.float32), np.ones((2, 4, 4), np.uint8), "A")})
    validate = make_validator(ds, "val", batch_size=1)
    mean, per_patient = validate(_Threshold())
    assert mean == 1.0 and per_patient == {"A": 1.0}
