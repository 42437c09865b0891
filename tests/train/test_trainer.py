"""The trainer (retrain's epoch loop): resume determinism, divergence, selection, tracking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from trainkit import FakePrepared, ListDataset, TinyNet, make_slices

from iac.config import TrainConfig
from iac.tracking import MemoryTracker
from iac.train.augment import make_augment
from iac.train.checkpoint import load_checkpoint
from iac.eval.validate import make_validator
from iac.train.steps import TrainingDivergedError
from iac.train.trainer import Trainer, fit


def _val_set(n: int = 6) -> FakePrepared:
    """Held-out toy volumes: two slices per case, two cases per patient."""
    items = make_slices(n * 2, seed=99)
    vols = {}
    for i in range(n):
        a, b = items[2 * i], items[2 * i + 1]
        image = torch.stack([a["image"], b["image"]], dim=1).numpy()  # (C, Z, H, W)
        label = torch.cat([a["label"], b["label"]]).numpy().astype(np.uint8)  # (Z, H, W)
        vols[f"case{i}"] = (image, label, f"p{i // 2}")
    return FakePrepared(vols)


def _trainer(tmp_path, *, seed_model=0, epochs=3, on_epoch_end=None, augment=True, **kw):
    torch.manual_seed(seed_model)
    model = TinyNet()
    data = ListDataset(make_slices(12), augment=make_augment(augment, 0))
    settings = dict(epochs=epochs, lr=0.02, batch_size=4, seed=0, device="cpu", progress=False,
                    validate=make_validator(_val_set(), "val", batch_size=4),
                    checkpoint_dir=tmp_path, max_slices_per_epoch=10, on_epoch_end=on_epoch_end)
    settings.update(kw)
    return Trainer(model, data, **settings)


class _Stop(Exception):
    pass


def _stop_after(epoch):
    def hook(record):
        if record["epoch"] == epoch:
            raise _Stop

    return hook


def _strip_times(history):
    timing = {"epoch_seconds", "slices_per_second", "data_wait_share", "val_seconds"}
    return [{k: v for k, v in r.items() if k not in timing} for r in history]


def test_resume_ends_bit_identical(tmp_path):
    full = _trainer(tmp_path / "full").fit()

    with pytest.raises(_Stop):
        _trainer(tmp_path / "cut", on_epoch_end=_stop_after(2)).fit()
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["epoch"] == 2
    # A fresh process would build the model with other weights: resume must not care.
    resumed_trainer = _trainer(tmp_path / "cut", seed_model=123)
    resumed = resumed_trainer.fit(resume=tmp_path / "cut")

    final_full = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    for k, v in final_full.items():
        assert torch.equal(resumed_trainer.model.state_dict()[k], v), k
    for k, v in full.best_state.items():
        assert torch.equal(resumed.best_state[k], v), k
    assert resumed.best_epoch == full.best_epoch and resumed.best_val_dice == full.best_val_dice
    assert _strip_times(resumed.history) == _strip_times(full.history)
    assert len(resumed.history) == 3


def test_resume_of_a_finished_run_returns_its_result(tmp_path):
    first = _trainer(tmp_path, epochs=1).fit()
    again = _trainer(tmp_path, epochs=1, seed_model=5).fit(resume=tmp_path / "last.pt")
    assert again.best_epoch == first.best_epoch == 1
    assert all(torch.equal(again.best_state[k], v) for k, v in first.best_state.items())


def test_checkpoints_load_weights_only(tmp_path):
    result = _trainer(tmp_path, epochs=2).fit()
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and len(last["history"]) == 2
    assert {"model", "optimizer", "scheduler", "rng", "loader_generator", "best_state"} <= set(last)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["epoch"] == result.best_epoch and best["val_dice"] == result.best_val_dice
    assert all(torch.equal(best["model"][k], v) for k, v in result.best_state.items())


def test_nan_loss_stops_with_epoch_and_step(tmp_path):
    items = make_slices(8)
    items[5] = dict(items[5], image=torch.full_like(items[5]["image"], float("nan")))
    torch.manual_seed(0)
    trainer = Trainer(TinyNet(), ListDataset(items), epochs=2, batch_size=8, device="cpu", progress=False,
                      checkpoint_dir=tmp_path)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, step 1 .*loss is nan") as info:
        trainer.fit()
    assert (info.value.epoch, info.value.step, info.value.global_step) == (1, 1, 1)
    assert not (tmp_path / "last.pt").exists()  # nothing saved from a diverged epoch


def test_exploding_learning_rate_is_reported(tmp_path):
    torch.manual_seed(0)
    trainer = Trainer(TinyNet(), ListDataset(make_slices(8)), epochs=20, lr=1e10, lr_schedule="constant",
                      batch_size=2, device="cpu", progress=False)
    with pytest.raises(TrainingDivergedError, match="training diverged at epoch"):
        trainer.fit()


def test_learns_the_toy_problem(tmp_path):
    tracker = MemoryTracker()
    trainer = _trainer(tmp_path, epochs=8, augment=False, lr=0.05, max_slices_per_epoch=None, tracker=tracker)
    result = trainer.fit()
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.best_val_dice > 0.9
    # Per-epoch metrics only (no per-batch logging), the parameter count as params.
    for key in ("train_loss", "val_dice", "lr", "epoch_seconds", "slices_per_second", "data_wait_share"):
        assert len(tracker.metric_history(key)) == 8, key
    assert tracker.params["n_parameters"] == sum(p.numel() for p in trainer.model.parameters())
    lrs = tracker.metric_history("lr")
    assert lrs[0] == pytest.approx(0.05) and lrs == sorted(lrs, reverse=True)  # cosine decay
    assert result.seconds > 0


def test_selection_keeps_the_best_epoch(tmp_path):
    scores = iter([0.2, 0.8, 0.5])
    seen = {}

    def validate(model):
        return next(scores), {}

    trainer = None

    def remember(record):
        seen[record["epoch"]] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    trainer = _trainer(tmp_path, validate=validate, on_epoch_end=remember)
    result = trainer.fit()
    assert (result.best_epoch, result.best_val_dice) == (2, 0.8)
    assert all(torch.equal(result.best_state[k], v) for k, v in seen[2].items())
    assert not all(torch.equal(result.best_state[k], v) for k, v in seen[3].items())
    assert [r.get("val_dice") for r in result.history] == [0.2, 0.8, 0.5]


def test_val_every_and_no_validation(tmp_path):
    calls = []
    result = _trainer(tmp_path / "a", epochs=3, val_every=2, validate=lambda m: calls.append(1) or 0.5).fit()
    assert len(calls) == 2  # epoch 2 and the last epoch
    assert ["val_dice" in r for r in result.history] == [False, True, True]

    trainer = _trainer(tmp_path / "b", epochs=2, validate=None)
    result = trainer.fit()
    assert result.best_val_dice is None and result.best_epoch == 2
    assert all(torch.equal(result.best_state[k], v) for k, v in trainer.model.state_dict().items())


def test_max_slices_draws_a_new_subset_each_epoch(tmp_path):
    class Recording(ListDataset):
        def __init__(self, items):
            super().__init__(items)
            self.seen = []

        def __getitem__(self, i):
            self.seen.append(i)
            return super().__getitem__(i)

    data = Recording(make_slices(12))
    trainer = Trainer(TinyNet(), data, epochs=2, batch_size=2, max_slices_per_epoch=6, device="cpu",
                      progress=False)
    trainer.fit()
    first, second = data.seen[:6], data.seen[6:]
    assert len(data.seen) == 12 and len(set(first)) == 6 and len(set(second)) == 6
    assert set(first) != set(second)
    assert [r["epoch"] for r in trainer.history] == [1, 2]


def test_fit_from_train_config(tmp_path):
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, batch_size=4, device="cpu", lr_schedule="constant", lr=0.01)
    result = fit(TinyNet(), ListDataset(make_slices(8)), cfg, progress=False, checkpoint_dir=tmp_path)
    assert result.best_epoch == 1 and len(result.history) == 1
    assert result.history[0]["lr"] == pytest.approx(0.01)


@pytest.mark.parametrize(
    "kwargs,match",
    [({"epochs": 0}, "epochs"), ({"lr_schedule": "step"}, "cosine"), ({"val_every": 0}, "val_every"),
     ({"batch_size": 0}, "batch_size"), ({"device": "gpu"}, "device")],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Trainer(TinyNet(), ListDataset(make_slices(4)), progress=False, **kwargs)


def test_a_checkpoint_resumes_only_with_its_implant_lr_scale(tmp_path):
    from iac.train.checkpoint import CheckpointError
    from iac.train.trainer import check_trainer_checkpoint

    trainer = _trainer(tmp_path, epochs=1)
    trainer.fit()
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["settings"]["implant_lr_scale"] == 1.0
    check_trainer_checkpoint(state, trainer.model, 1.0)
    with pytest.raises(CheckpointError, match=r"trained with implant_lr_scale=1.0 and cannot continue with implant_lr_scale=10.0"):
        check_trainer_checkpoint(state, trainer.model, 10.0)
    del state["settings"]["implant_lr_scale"]  # written before the setting existed: one rate, scale 1
    check_trainer_checkpoint(state, trainer.model, 1.0)
    with pytest.raises(CheckpointError, match="implant_lr_scale"):
        check_trainer_checkpoint(state, trainer.model, 3.0)
