"""The engine's step pieces: the grouped divergence check, gradient clipping, the schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from trainkit import TinyNet, make_slices

from iac.train.device import make_grad_scaler
from iac.train.steps import LossLog, TrainingDivergedError, make_scheduler, train_step


def test_loss_log_names_the_exact_bad_step_across_groups():
    log = LossLog(epoch=3, global_step=100, what="architecture loss", hint="lower arch_lr", check_every=4)
    for _ in range(5):
        log.add(torch.tensor(0.5), 2)
    log.add(torch.tensor(float("nan")), 2)  # step 6, in the second group
    with pytest.raises(TrainingDivergedError, match=r"epoch 3, step 6 \(global step 106\).*architecture loss.*lower arch_lr") as err:
        log.flush()
    assert err.value.step == 6 and err.value.global_step == 106 and math.isnan(err.value.value)


def test_loss_log_mean_is_slice_weighted_and_checked_in_groups():
    log = LossLog(epoch=1, check_every=2)
    assert math.isnan(log.mean)
    assert log.add(torch.tensor(1.0), 4) is False
    assert log.add(torch.tensor(4.0), 1) is True  # a full group was checked
    log.add(torch.tensor(2.0), 5)
    assert log.slices == 5  # the third loss waits for its group
    log.flush()
    assert log.steps == 3 and log.slices == 10
    assert log.mean == pytest.approx((1 * 4 + 4 * 1 + 2 * 5) / 10)


def test_train_step_clips_the_gradient_norm():
    torch.manual_seed(0)
    model = TinyNet()
    batch = make_slices(4)
    x = torch.stack([b["image"] for b in batch])
    y = torch.stack([b["label"] for b in batch])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: only the gradients are looked at
    scaler = make_grad_scaler(torch.device("cpu"), False)
    loss_fn = nn.CrossEntropyLoss()
    loss = lambda logits, label: loss_fn(logits, label[:, 0])  # noqa: E731
    train_step(model, x * 100, y, loss, opt, scaler, device=torch.device("cpu"))
    free = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    train_step(model, x * 100, y, loss, opt, scaler, device=torch.device("cpu"), clip_norm=1e-3)
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert free > 1e-3
    assert clipped == pytest.approx(1e-3, rel=1e-3)


def test_cosine_schedule_reaches_min_lr_after_total_steps():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, "cosine", total_steps=10, min_lr=0.1)
    lrs = []
    for _ in range(10):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == sorted(lrs, reverse=True)
    assert lrs[-1] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="cosine, constant"):
        make_scheduler(opt, "step", 10)
