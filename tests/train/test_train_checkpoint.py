"""Atomic, weights-only checkpoints and RNG capture."""

from __future__ import annotations

import datetime
import random

import numpy as np
import pytest
import torch
from trainkit import TinyNet

from iac.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)


def test_round_trip_with_weights_only(tmp_path):
    model = TinyNet()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "rng": capture_rng_state(),
        "history": [{"epoch": 1, "loss": 0.5}],
        "best": None,
    }
    path = save_checkpoint(tmp_path / "sub" / "ck.pt", state)
    raw = torch.load(path, weights_only=True)  # no arbitrary unpickling
    assert raw["history"] == state["history"]
    loaded = load_checkpoint(path)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded["model"][k], v)
    opt2 = torch.optim.AdamW(TinyNet().parameters(), lr=1e-3)
    opt2.load_state_dict(loaded["optimizer"])
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["ck.pt"]  # no temporary left


def test_unsupported_object_is_refused_before_writing(tmp_path):
    with pytest.raises(CheckpointError, match=r"state\['bad'\].*ndarray"):
        save_checkpoint(tmp_path / "x.pt", {"ok": 1, "bad": np.zeros(2)})
    assert not list(tmp_path.iterdir())


def test_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    path = tmp_path / "pickled.pt"
    torch.save({"obj": datetime.date(2020, 1, 1)}, path)  # not allowed by weights_only
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)


def test_rng_capture_restores_every_generator(tmp_path):
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    state = capture_rng_state()
    first = (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist())
    save_checkpoint(tmp_path / "rng.pt", {"rng": state})
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert (random.random(), np.random.randn(3).tolist(), torch.rand(3).tolist()) == first
