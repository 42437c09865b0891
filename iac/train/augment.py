"""Training-time augmentation of 2-D slices with MONAI dictionary transforms.

A sample is ``{"image": (C,H,W) float, "label": (1,H,W) int, ...}`` as yielded
by ``iac.data.dataset.SliceDataset``; other keys pass through untouched.
Randomness comes only from the transforms' own NumPy generators, which the
trainer re-seeds at the start of every epoch (and in every DataLoader worker)
from its seeded generator through :meth:`SliceAugment.set_random_state`, so a
run, and a resumed run, sees the same augmented slices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
from monai.transforms import (
    Compose,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
)


@dataclass(frozen=True)
class AugmentSettings:
    """Probabilities and ranges of the slice augmentation (nnU-Net-like, milder)."""

    flip_prob: float = 0.5  # per in-plane axis
    rot90_prob: float = 0.5  # rotate by k*90 degrees, k in 1..3
    affine_prob: float = 0.3  # small rotation + scaling
    rotate_deg: float = 15.0  # affine rotation range, +- degrees
    scale: float = 0.1  # affine scale range per axis, +- fraction
    intensity_scale_prob: float = 0.3
    intensity_scale: float = 0.1  # image * (1 + f), f in +-0.1
    intensity_shift_prob: float = 0.3
    intensity_shift: float = 0.1  # image + o, o in +-0.1 (images are normalised)
    noise_prob: float = 0.15
    noise_std: float = 0.05  # Gaussian noise standard deviation


_KEYS = ("image", "label")


class SliceAugment:
    """Seeded random augmentation of one slice sample (a callable).

    Args:
        seed: Initial seed of the transforms' generators.
        settings: Probabilities and ranges; defaults to :class:`AugmentSettings`.
    """

    def __init__(self, seed: int = 0, settings: AugmentSettings | None = None) -> None:
        s = settings or AugmentSettings()
        self.settings = s
        self.transform = Compose(
            [
                RandFlipd(keys=_KEYS, prob=s.flip_prob, spatial_axis=0),
                RandFlipd(keys=_KEYS, prob=s.flip_prob, spatial_axis=1),
                RandRotate90d(keys=_KEYS, prob=s.rot90_prob, max_k=3, spatial_axes=(0, 1)),
                RandAffined(
                    keys=_KEYS,
                    prob=s.affine_prob,
                    rotate_range=(math.radians(s.rotate_deg),),
                    scale_range=(s.scale, s.scale),
                    mode=("bilinear", "nearest"),
                    padding_mode="zeros",
                ),
                RandScaleIntensityd(keys="image", prob=s.intensity_scale_prob, factors=s.intensity_scale),
                RandShiftIntensityd(keys="image", prob=s.intensity_shift_prob, offsets=s.intensity_shift),
                RandGaussianNoised(keys="image", prob=s.noise_prob, mean=0.0, std=s.noise_std),
            ]
        )
        self.set_random_state(seed)

    def set_random_state(self, seed: int) -> "SliceAugment":
        """Re-seed every random transform (deterministically from ``seed``)."""
        self.transform.set_random_state(seed=int(seed) % 2**32)
        return self

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Augment ``image`` and ``label`` of ``sample``; returns a new dict."""
        image = torch.as_tensor(sample["image"], dtype=torch.float32)
        label = torch.as_tensor(sample["label"])
        if image.dim() != 3 or label.dim() != 3 or label.shape[0] != 1:
            raise ValueError(
                f"expected image (C,H,W) and label (1,H,W); got {tuple(image.shape)} and {tuple(label.shape)}"
            )
        out = self.transform({"image": image, "label": label})
        result = dict(sample)
        # MONAI returns MetaTensors (and float labels after resampling): hand
        # back plain tensors with the dataset's dtypes.
        result["image"] = _plain(out["image"]).to(torch.float32).contiguous()
        result["label"] = _plain(out["label"]).round().to(torch.long).contiguous()
        return result


def _plain(x: Any) -> torch.Tensor:
    t = torch.as_tensor(x)
    return t.as_subclass(torch.Tensor) if type(t) is not torch.Tensor else t


def make_augment(enabled: bool, seed: int = 0, settings: AugmentSettings | None = None) -> Callable | None:
    """The training augmentation, or ``None`` when disabled.

    Args:
        enabled: ``TrainConfig.augment``.
        seed: Initial seed (the trainer re-seeds it per epoch from its own
            generator, so this only matters when used outside the trainer).
        settings: Optional probabilities and ranges.

    Returns:
        A :class:`SliceAugment` (pass it as ``SliceDataset(..., augment=...)``)
        or ``None``.
    """
    return SliceAugment(seed, settings) if enabled else None


def reseed_augment(dataset: Any, seed: int) -> bool:
    """Re-seed the augmentation attached to ``dataset`` (if any).

    Looks for an ``augment`` attribute with ``set_random_state`` on the
    dataset, unwrapping ``torch.utils.data.Subset``-style ``.dataset``
    wrappers.

    Returns:
        Whether an augmentation was found and re-seeded.
    """
    seen = 0
    while dataset is not None and seen < 8:
        aug = getattr(dataset, "augment", None)
        if aug is not None and hasattr(aug, "set_random_state"):
            aug.set_random_state(seed)
            return True
        dataset = getattr(dataset, "dataset", None)
        seen += 1
    return False
