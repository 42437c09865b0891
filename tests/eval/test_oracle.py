"""The way back to the original grid: a soft oracle survives it, a hard label map does not."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from iac.data.preprocess import PreprocessParams, preprocess_case, restore_probabilities, restore_to_grid
from iac.eval.metrics import foreground_dice
from iac.eval.oracle import is_finer, one_hot, soft_oracle

N_CLASSES = 3
FINE = (0.6, 0.6, 6.0)  # (x, y, z) mm of the original grid
TARGET = (1.0, 1.0)  # prepared in-plane spacing: the original is finer (ratio 0.6)
SHAPE = (3, 64, 60)  # (Z, Y, X)


def _finer_case() -> tuple[sitk.Image, np.ndarray]:
    """An elliptic cavity (label 2) in a ring (label 1), drifting and shrinking from slice to slice."""
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]].astype(float)
    cy, cx = 30.0 + 1.3 * z, 28.0 - 0.7 * z
    r = np.hypot((y - cy) / 1.15, x - cx)
    label = np.zeros(SHAPE, np.uint8)
    label[r < 20 - 2 * z] = 1
    label[r < 13 - 2 * z] = 2
    image = sitk.GetImageFromArray((100.0 * label + 10.0).astype(np.float32))
    image.SetSpacing(FINE)
    image.SetOrigin((-12.0, 30.0, 4.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))  # a rotated in-plane frame
    return image, label


@pytest.fixture(scope="module")
def prepared():
    """The case preprocessed as ``prepare`` stores it: (stored label (Z, H, W), geometry, original label)."""
    image, label = _finer_case()
    params = PreprocessParams(target_spacing=TARGET, slice_size=48)
    _, stored, geometry = preprocess_case(image, params, label=label, name="finer")
    assert geometry["resampled"] and geometry["resampled_size"] == [36, 38]
    return stored, geometry, label


def test_soft_oracle_round_trip_keeps_the_reference_on_a_finer_grid(prepared):
    stored, geometry, label = prepared
    soft = soft_oracle(label, geometry, N_CLASSES)
    assert soft.shape == (N_CLASSES, SHAPE[0], 48, 48)
    np.testing.assert_allclose(soft.sum(axis=0), 1.0, atol=1e-5)  # a probability per voxel
    soft_dice = foreground_dice(restore_probabilities(soft, geometry), label, N_CLASSES)
    assert soft_dice >= 0.99
    # The nearest-neighbour restore of the stored hard labels loses what the finer grid held.
    hard_dice = foreground_dice(restore_to_grid(stored, geometry), label, N_CLASSES)
    assert hard_dice < 0.98 and hard_dice < soft_dice - 0.02
    linear_hard = foreground_dice(restore_probabilities(one_hot(stored, N_CLASSES), geometry), label, N_CLASSES)
    assert hard_dice <= linear_hard < soft_dice


def test_restoring_a_few_slices_at_a_time_gives_the_whole_restore(prepared):
    _, geometry, label = prepared
    soft = soft_oracle(label, geometry, N_CLASSES)
    whole = restore_probabilities(soft, geometry)
    parts = [restore_probabilities(soft[:, z : z + 2], geometry, first_slice=z) for z in (0, 2)]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    with pytest.raises(ValueError, match=r"from slice 2; this geometry has 3 slices of 48x48"):
        restore_probabilities(soft[:, :2], geometry, first_slice=2)


def test_is_finer():
    assert is_finer(FINE, TARGET) and is_finer((1.0, 0.5, 5.0), (1.0, 1.0))
    assert not is_finer((1.0, 1.0005, 5.0), (1.0, 1.0)) and not is_finer((1.5, 1.5, 5.0), (1.0, 1.0))


class _SoftOracleNet(torch.nn.Module):
    """Answers every slice with the log of the soft oracle's probabilities, in the order asked."""

    def __init__(self, soft: np.ndarray) -> None:
        super().__init__()
        self.logits = torch.from_numpy(np.log(np.clip(soft, 1e-6, None))).permute(1, 0, 2, 3)  # (Z, K, H, W)
        self.next = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.logits[self.next : self.next + len(x)]
        self.next += len(x)
        return out


@pytest.mark.parametrize("restore, low, high", [("probabilities", 0.99, 1.0), ("labels", 0.0, 0.985)])
def test_evaluate_restores_probabilities_by_default(prepared, restore, low, high):
    from iac.eval.evaluate import evaluate_network

    _, geometry, label = prepared
    soft = soft_oracle(label, geometry, N_CLASSES)
    case = SimpleNamespace(case_id="finer", patient="p1", frame="")
    data = SimpleNamespace(
        cases=lambda split: [case],
        image=lambda case_id: np.zeros((1, *soft.shape[1:]), np.float32),
        geometry=lambda case_id: geometry,
        original_label=lambda case_id: (label, FINE),
        label_names={0: "background", 1: "ring", 2: "cavity"},
        regions={},
    )
    kwargs = {} if restore == "probabilities" else {"restore": restore}
    res = evaluate_network(_SoftOracleNet(soft), data, "test", batch_size=2, progress=False, **kwargs)
    assert low <= res.aggregates["dice_patient_mean_fg"] <= high
