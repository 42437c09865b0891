"""Seeded loaders: the order depends only on the generator, and resumes from its state."""

from __future__ import annotations

import torch
from trainkit import ListDataset, make_slices

from iac.train.loader import PairedLoader, make_loader


def _ids(batch) -> list[float]:
    return batch["image"][:, 0, 0, 0].tolist()  # one value per slice identifies it


def _order(loader, n_epochs: int = 2) -> list[list[float]]:
    return [[x for b in loader for x in _ids(b)] for _ in range(n_epochs)]


def test_make_loader_order_follows_the_generator_and_drops_a_short_last_batch():
    ds = ListDataset(make_slices(10))
    a = _order(make_loader(ds, 4, torch.Generator().manual_seed(3)))
    b = _order(make_loader(ds, 4, torch.Generator().manual_seed(3)))
    c = _order(make_loader(ds, 4, torch.Generator().manual_seed(4)))
    assert a == b and a != c
    assert all(len(epoch) == 8 for epoch in a)  # 10 slices, batch 4: the incomplete batch is dropped
    assert a[0] != a[1]  # a new shuffle every epoch


def test_paired_loader_cycles_the_secondary_and_resumes_exactly():
    primary, secondary = ListDataset(make_slices(12, seed=1)), ListDataset(make_slices(4, seed=2))
    loader = PairedLoader(primary, secondary, batch_size=2, seed=7)
    assert len(loader) == 6
    first = [(tuple(_ids(p)), tuple(_ids(s))) for p, s in loader]
    assert len(first) == 6  # one pass over the primary; the secondary (2 batches) restarted twice
    every_secondary = {x for b in loader.secondary for x in _ids(b)}
    assert {x for _, s in first for x in s} <= every_secondary  # drawn from the secondary only, reshuffled each restart
    state = loader.state_dict()
    second = [(tuple(_ids(p)), tuple(_ids(s))) for p, s in loader]
    again = PairedLoader(primary, secondary, batch_size=2, seed=0)  # another seed, then the saved state
    again.load_state_dict(state)
    assert [(tuple(_ids(p)), tuple(_ids(s))) for p, s in again] == second
