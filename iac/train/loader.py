"""Seeded data loading for training and search.

:func:`make_loader` builds a shuffling DataLoader whose order depends only on
one ``torch.Generator``: save the generator's state with a checkpoint and the
resumed run draws the same batches. :class:`PairedLoader` pairs two such
loaders for the bilevel search (a weight batch with an architecture batch).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from iac.train.augment import reseed_augment
from iac.train.device import to_channels_last


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed NumPy, ``random`` and the augmentation.

    PyTorch gives each worker the seed ``base_seed + worker_id``, where
    ``base_seed`` is drawn from the loader's generator every epoch; the other
    generators in the worker are derived from it.
    """
    import random

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    if info is not None:
        reseed_augment(info.dataset, seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    generator: torch.Generator,
    *,
    num_workers: int = 0,
    max_slices: int | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """A shuffling DataLoader whose order depends only on ``generator``.

    Args:
        dataset: Map-style dataset of ``{"image", "label", ...}`` dicts.
        batch_size: Slices per step.
        generator: Drives the shuffle, the per-epoch subset and the workers'
            seeds; save its ``get_state()`` to resume the same order.
        num_workers: DataLoader worker processes.
        max_slices: Draw this many distinct slices per epoch (a new random
            subset each epoch); ``None`` or more than the dataset: all.
        pin_memory: Pin host memory (useful for CUDA).

    Returns:
        The loader. The last incomplete batch is dropped when at least one
        full batch exists (normalisation layers dislike batches of one).
    """
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("the training dataset is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_slices is not None and max_slices < 1:
        raise ValueError(f"max_slices_per_epoch must be >= 1 or None, got {max_slices}")
    n_samples = n if max_slices is None else min(n, int(max_slices))
    sampler = RandomSampler(dataset, replacement=False, num_samples=n_samples, generator=generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=seed_worker if num_workers > 0 else None,
        generator=generator,
        drop_last=n_samples >= batch_size,
        pin_memory=pin_memory,
        persistent_workers=False,  # fresh workers per epoch, re-seeded from the generator
    )


def move_batch(batch: Mapping[str, Any], device: torch.device, channels_last: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Image ``(B,C,H,W)`` float and label ``(B,1,H,W)`` long on ``device``."""
    image = batch["image"].to(device, dtype=torch.float32, non_blocking=True)
    label = batch["label"].to(device, dtype=torch.long, non_blocking=True)
    return to_channels_last(image, device, channels_last), label


class PairedLoader:
    """Pairs every batch of a primary loader with one of a secondary loader.

    The secondary loader restarts whenever it runs out, so an epoch is one
    pass over the primary (DARTS: a training batch with a validation batch).
    Each loader has its own generator, so the two orders are independent and
    both are restored by :meth:`load_state_dict`.

    Args:
        primary: Dataset defining the epoch (the weight half of the search).
        secondary: Dataset cycled alongside (the architecture half).
        batch_size: Slices per batch of both.
        seed: Seeds the primary generator; the secondary gets ``seed + 1``.
        max_slices: Slices per epoch drawn from each dataset (``None``: all).
    """

    def __init__(self, primary: Dataset, secondary: Dataset, batch_size: int, seed: int,
                 max_slices: int | None = None) -> None:
        self.generators = (torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1))
        self.primary = make_loader(primary, batch_size, self.generators[0], max_slices=max_slices)
        self.secondary = make_loader(secondary, batch_size, self.generators[1], max_slices=max_slices)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        other = iter(self.secondary)
        for batch in self.primary:
            try:
                paired = next(other)
            except StopIteration:
                other = iter(self.secondary)
                paired = next(other)
            yield batch, paired

    def __len__(self) -> int:
        return len(self.primary)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"primary": self.generators[0].get_state(), "secondary": self.generators[1].get_state()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.generators[0].set_state(state["primary"])
        self.generators[1].set_state(state["secondary"])
