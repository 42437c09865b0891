"""Slices of a prepared dataset as a torch ``Dataset``.

Every item is one axial slice read from the memory-mapped case arrays, so the
dataset holds only an index of ``(case, z)`` pairs; augmentation (MONAI
dictionary transforms) is chosen by the trainer and handed in as a callable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

if TYPE_CHECKING:  # only for annotations: the slice reader needs no SimpleITK (store -> preprocess)
    from iac.data.store import PreparedDataset


class SliceDataset(Dataset):
    """2-D slices of one split of a prepared dataset.

    Args:
        ds: the prepared dataset.
        split: ``train``, ``val`` or ``test``; None for every case.
        augment: optional callable applied to each item dict (e.g. MONAI ``Compose`` of
            dictionary transforms on keys ``image`` and ``label``).
        patients: restrict to these patient ids (within ``split``).

    Items are ``{"image": FloatTensor (C, H, W), "label": LongTensor (1, H, W), "case": str, "z": int}``.
    """

    def __init__(
        self,
        ds: PreparedDataset,
        split: str | None,
        augment: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        patients: Iterable[str] | None = None,
    ) -> None:
        self.ds = ds
        self.split = split
        self.augment = augment
        cases = ds.cases(split)
        if patients is not None:
            keep = set(patients)
            unknown = keep - {c.patient for c in cases}
            if unknown:
                raise ValueError(f"patients {sorted(unknown)[:5]} are not in split {split!r} of {ds.root}")
            cases = [c for c in cases if c.patient in keep]
        self.cases = cases
        # (N, 2) index of (case number, slice number).
        self.index = np.array([(i, z) for i, c in enumerate(cases) for z in range(c.n_slices)], dtype=np.int64).reshape(-1, 2)
        self._maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.index)

    def _arrays(self, case_id: str) -> tuple[np.ndarray, np.ndarray]:
        if case_id not in self._maps:
            self._maps[case_id] = (self.ds.image(case_id), self.ds.label(case_id))
        return self._maps[case_id]

    def __getitem__(self, i: int) -> dict[str, Any]:
        ci, z = (int(v) for v in self.index[i])
        case_id = self.cases[ci].case_id
        image, label = self._arrays(case_id)
        item = {
            "image": torch.from_numpy(np.array(image[:, z], dtype=np.float32)),  # (C, H, W)
            "label": torch.from_numpy(np.array(label[z][None], dtype=np.int64)),  # (1, H, W)
            "case": case_id,
            "z": z,
        }
        return self.augment(item) if self.augment is not None else item

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are reopened in each DataLoader worker instead of being pickled.
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state
