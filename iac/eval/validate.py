"""Patient-level validation Dice during training and search.

Every case of a split is predicted slice by slice on the prepared grid
(:func:`iac.eval.inference.predict_volume`) and scored with the mean
foreground Dice (:func:`iac.eval.metrics.foreground_dice`); a patient's cases
(ACDC's two frames) are averaged, then the patients. ``evaluate`` scores on
the original grid with HD95 as well; validation stays on the prepared grid
because it runs every epoch.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from iac.eval.inference import predict_volume
from iac.eval.metrics import foreground_dice

ValidateFn = Callable[[nn.Module], "float | tuple[float, Mapping[str, float]]"]


def validate_patient_dice(
    model: nn.Module,
    prepared_dataset: Any,
    split: str,
    device: torch.device | str,
    batch_size: int = 32,
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> tuple[float, dict[str, float]]:
    """Patient-level mean foreground Dice on a split of a prepared dataset.

    Args:
        model: The network (evaluated in eval mode; its mode is restored).
        prepared_dataset: An ``iac.data.store.PreparedDataset``.
        split: ``train``, ``val`` or ``test``.
        device: Where to predict (the model must already be there).
        batch_size: Slices per forward pass.
        amp: Mixed precision (CUDA only).
        channels_last: Channels-last inputs (CUDA only).

    Returns:
        ``(mean over patients, {patient: Dice})``.

    Raises:
        ValueError: The split has no cases.
    """
    from iac.train.device import resolve_device

    device = resolve_device(device) if isinstance(device, str) else device
    cases = list(prepared_dataset.cases(split))
    if not cases:
        raise ValueError(f"split {split!r} of {getattr(prepared_dataset, 'name', 'the dataset')!r} has no cases")
    num_classes = int(prepared_dataset.num_classes)
    per_case: dict[str, list[float]] = {}
    for case in cases:
        pred = predict_volume(model, prepared_dataset.image(case.case_id), device, batch_size,
                              amp=amp, channels_last=channels_last)  # (Z, H, W)
        dice = foreground_dice(pred, prepared_dataset.label(case.case_id), num_classes)
        per_case.setdefault(str(case.patient), []).append(dice)
    per_patient = {p: float(np.mean(v)) for p, v in per_case.items()}
    return float(np.mean(list(per_patient.values()))), per_patient


def make_validator(prepared_dataset: Any, split: str = "val", batch_size: int = 32, *, amp: bool = False,
                   channels_last: bool = False) -> ValidateFn:
    """A ``validate(model) -> (mean Dice, per patient)`` for :class:`iac.train.trainer.Trainer`.

    The device is taken from the model's parameters at call time.
    """

    def validate(model: nn.Module) -> tuple[float, dict[str, float]]:
        device = next(model.parameters()).device
        return validate_patient_dice(model, prepared_dataset, split, device, batch_size, amp=amp,
                                     channels_last=channels_last)

    return validate
