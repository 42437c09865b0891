"""Tiny models and in-memory slice data shared by the training tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset


class TinyNet(nn.Module):
    """Two convolutions: enough to learn a threshold segmentation."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


def make_slices(n: int = 12, size: int = 32, seed: int = 0) -> list[dict]:
    """Bright squares on noise; the label is the square (separable by intensity)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        label = torch.zeros(1, size, size, dtype=torch.long)
        y0, x0 = torch.randint(0, size // 2, (2,), generator=g).tolist()
        label[0, y0 : y0 + size // 3, x0 : x0 + size // 3] = 1
        image = label.float() * 2.0 + 0.3 * torch.randn(1, size, size, generator=g)
        out.append({"image": image, "label": label, "case": f"c{i // 4}", "z": i % 4})
    return out


class ListDataset(Dataset):
    """In-memory slices with an optional augmentation (like SliceDataset)."""

    def __init__(self, items: list[dict], augment=None) -> None:
        self.items, self.augment = items, augment

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.items[i])
        return self.augment(item) if self.augment is not None else item


@dataclass
class Case:
    case_id: str
    patient: str
    frame: str | None
    n_slices: int


class FakePrepared:
    """The parts of PreparedDataset that validation reads."""

    name = "fake"

    def __init__(self, volumes: dict[str, tuple[np.ndarray, np.ndarray, str]], num_classes: int = 2) -> None:
        self._v = volumes  # case_id -> (image (C,Z,H,W), label (Z,H,W), patient)
        self.num_classes = num_classes

    def cases(self, split: str) -> list[Case]:
        return [Case(c, p, None, img.shape[1]) for c, (img, _, p) in self._v.items()] if split == "val" else []

    def image(self, case_id: str) -> np.ndarray:
        return self._v[case_id][0]

    def label(self, case_id: str) -> np.ndarray:
        return self._v[case_id][1]
