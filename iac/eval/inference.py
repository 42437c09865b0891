"""Slice-wise prediction of whole volumes with a 2-D network, and its way back to the original grid."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from iac.config import RESTORE_METHODS, check_one_of


@torch.no_grad()
def predict_volume(
    model: torch.nn.Module,
    image: np.ndarray,
    device: torch.device | str = "cpu",
    batch_size: int = 32,
    return_probs: bool = False,
    *,
    amp: bool = False,
    channels_last: bool = False,
) -> np.ndarray:
    """Predict a label map for every slice of a preprocessed volume.

    Args:
        model: network mapping (B, C, H, W) images to (B, K, H, W) logits.
        image: preprocessed volume, (C, Z, H, W) float32.
        device: where to run the network.
        batch_size: slices per forward pass.
        return_probs: return softmax probabilities (K, Z, H, W) instead of labels.
        amp: mixed precision (CUDA only).
        channels_last: channels-last inputs (CUDA only).

    Returns:
        Label map (Z, H, W) uint8, or probabilities (K, Z, H, W) float32.
    """
    if image.ndim != 4:
        raise ValueError(f"expected a (C, Z, H, W) volume, got shape {tuple(image.shape)}")
    from iac.train.device import autocast, to_channels_last

    was_training = model.training
    model.eval()
    device = torch.device(device)
    outs = []
    n_slices = image.shape[1]
    try:
        for start in range(0, n_slices, batch_size):
            # Copy out of the (read-only, memory-mapped) store: (C, b, H, W) -> (b, C, H, W).
            chunk = np.array(np.moveaxis(image[:, start : start + batch_size], 1, 0), dtype=np.float32)
            x = to_channels_last(torch.from_numpy(chunk).to(device), device, channels_last)
            with autocast(device, amp):
                logits = model(x)  # (b, K, H, W)
            if return_probs:
                outs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
            else:
                outs.append(logits.argmax(dim=1).to(torch.uint8).cpu().numpy())
    finally:
        model.train(was_training)
    if return_probs:
        return np.moveaxis(np.concatenate(outs, axis=0), 1, 0)  # (K, Z, H, W)
    return np.concatenate(outs, axis=0)  # (Z, H, W)


def predict_original_grid(
    model: torch.nn.Module,
    image: np.ndarray,
    geometry: dict[str, Any],
    restore: str = "probabilities",
    device: torch.device | str = "cpu",
    batch_size: int = 32,
) -> np.ndarray:
    """Predict a preprocessed volume and put the labels on its original grid.

    Args:
        model: network mapping (B, C, H, W) images to (B, K, H, W) logits.
        image: preprocessed volume, (C, Z, H, W) float32.
        geometry: the volume's geometry (``PreparedDataset.geometry`` or
            ``preprocess_volume``'s second value).
        restore: ``"probabilities"``: softmax probabilities restored linearly,
            then argmax (:func:`iac.data.preprocess.restore_probabilities`),
            ``batch_size`` slices at a time so that the (K, Z, Y, X) stack is
            never held whole; ``"labels"``: the argmax restored by nearest
            neighbour (:func:`iac.data.preprocess.restore_to_grid`).
        device: where to run the network.
        batch_size: slices per forward pass.

    Returns:
        uint8 label map (Z, Y, X) on the original grid.
    """
    from iac.data.preprocess import restore_probabilities, restore_to_grid

    check_one_of("restore", restore, RESTORE_METHODS)
    if restore == "labels":
        return restore_to_grid(predict_volume(model, image, device, batch_size), geometry)
    parts = []
    for start in range(0, image.shape[1], batch_size):
        probs = predict_volume(model, image[:, start : start + batch_size], device, batch_size, return_probs=True)
        parts.append(restore_probabilities(probs, geometry, first_slice=start))  # (b, Y, X)
    return np.concatenate(parts, axis=0)
