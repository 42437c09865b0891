"""Seeded slice augmentation."""

from __future__ import annotations

import torch
from torch.utils.data import Subset
from trainkit import ListDataset, make_slices

from iac.train.augment import SliceAugment, make_augment, reseed_augment


def _run(aug, items):
    return [aug(dict(s)) for s in items]


def _same(a, b):
    return all(torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"]) for x, y in zip(a, b))


def test_disabled_is_none():
    assert make_augment(False, 0) is None
    assert isinstance(make_augment(True, 0), SliceAugment)


def test_same_seed_same_output_and_other_seed_differs():
    items = make_slices(8)
    a = _run(make_augment(True, 3), items)
    assert _same(a, _run(make_augment(True, 3), items))
    assert not _same(a, _run(make_augment(True, 4), items))
    # Re-seeding an used instance restarts its sequence.
    aug = make_augment(True, 5)
    first = _run(aug, items)
    aug.set_random_state(5)
    assert _same(first, _run(aug, items))


def test_types_shapes_and_labels_are_kept():
    items = make_slices(8)
    for src, out in zip(items, _run(make_augment(True, 1), items)):
        assert type(out["image"]) is torch.Tensor and type(out["label"]) is torch.Tensor
        assert out["image"].dtype == torch.float32 and out["label"].dtype == torch.long
        assert out["image"].shape == src["image"].shape and out["label"].shape == src["label"].shape
        assert set(out["label"].unique().tolist()) <= {0, 1}
        assert out["case"] == src["case"] and out["z"] == src["z"]
        assert torch.isfinite(out["image"]).all()


def test_augmentation_changes_some_slices():
    items = make_slices(8)
    changed = sum(not torch.equal(s["image"], o["image"]) for s, o in zip(items, _run(make_augment(True, 0), items)))
    assert changed >= 4


def test_reseed_finds_augment_through_subset():
    aug = make_augment(True, 0)
    ds = Subset(ListDataset(make_slices(4), augment=aug), [0, 1])
    assert reseed_augment(ds, 9)
    a = [ds[i] for i in range(2)]
    reseed_augment(ds, 9)
    assert _same(a, [ds[i] for i in range(2)])
    assert not reseed_augment(ListDataset(make_slices(2)), 9)
