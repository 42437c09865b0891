"""The architecture step: alpha and beta move, the cell weights do not."""

from __future__ import annotations

import pytest
import torch

from iac.nas.architect import Architect
from iac.nas.supernet import SearchNetwork
from iac.train.losses import make_loss


@pytest.fixture
def supernet(make_unet, space):
    return SearchNetwork(make_unet(), space).train()


def _batch(seed: int = 0, size: int = 16, classes: int = 3):
    """An image batch and labels for the tiny U-Net of tests/nas/conftest.py (1 channel, 3 classes, 16 px)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 1, size, size, generator=g), torch.randint(0, classes, (2, 1, size, size), generator=g)


def test_architect_step_moves_every_architecture_weight_and_no_cell_weight(supernet, single_thread):
    arch = Architect(supernet, make_loss(), lr=0.1, betas=(0.5, 0.999), weight_decay=0.0)
    # The cell's output projection starts at zero, so no alpha gradient flows yet: open it first.
    with torch.no_grad():
        for p in supernet.weight_parameters():
            p.add_(0.05 * torch.randn_like(p))
    before_w = [p.detach().clone() for p in supernet.weight_parameters()]
    before_a = [p.detach().clone() for p in supernet.arch_parameters()]
    loss = arch.step(*_batch())
    assert torch.isfinite(loss) and not loss.requires_grad
    for p in supernet.arch_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert all(not torch.equal(a, p) for a, p in zip(before_a, supernet.arch_parameters()))
    assert all(torch.equal(w, p) for w, p in zip(before_w, supernet.weight_parameters()))


def test_architect_state_round_trips(supernet, single_thread):
    a = Architect(supernet, make_loss(), lr=0.1, betas=(0.5, 0.999), weight_decay=1e-3)
    a.step(*_batch(1))
    b = Architect(supernet, make_loss(), lr=0.1, betas=(0.5, 0.999), weight_decay=1e-3)
    b.load_state_dict(a.state_dict())
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for k in sa["state"]:
        assert torch.equal(sa["state"][k]["exp_avg"], sb["state"][k]["exp_avg"])


def test_from_config_takes_the_search_settings(supernet):
    from iac.config import SearchConfig

    cfg = SearchConfig(arch_lr=0.02, arch_betas=(0.4, 0.9), arch_weight_decay=0.5)
    group = Architect.from_config(supernet, make_loss(), cfg).optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (0.02, (0.4, 0.9), 0.5)


def test_gradient_statistics_since_the_last_check(supernet, single_thread):
    arch = Architect(supernet, make_loss(), lr=0.0, betas=(0.5, 0.999), weight_decay=0.0)  # lr 0: same point
    with torch.no_grad():
        for p in supernet.weight_parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert arch.take_grad_stats() == {}
    grads = []
    for seed in range(3):
        arch.step(*_batch(seed))
        grads.append(supernet.archs[0].alpha[0].grad.detach().double().clone())
    stats = arch.take_grad_stats()
    mean, var = stats[(0, 0)]
    g = torch.stack(grads)
    assert torch.allclose(torch.tensor(mean, dtype=torch.float64), g.mean(0))
    assert torch.allclose(torch.tensor(var, dtype=torch.float64), g.var(0, unbiased=True))
    assert arch.take_grad_stats() == {}  # reset after each take


def test_bf16_precision_is_only_for_cuda_and_fp16_is_refused(supernet):
    with pytest.raises(ValueError, match="fp32' or 'bf16"):
        Architect(supernet, make_loss(), lr=0.1, betas=(0.5, 0.999), weight_decay=0.0, precision="fp16")
    arch = Architect(supernet, make_loss(), lr=0.1, betas=(0.5, 0.999), weight_decay=0.0, precision="bf16")
    loss = arch.step(*_batch())  # on the CPU the step stays in float32
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
