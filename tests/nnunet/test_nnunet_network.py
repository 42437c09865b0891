"""Cells in nnU-Net's skips: the baseline at step 0, gradients only into the cells,
every baseline key loads, deep supervision keeps working."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from iac.nas.genotype import GenotypeError
from iac.nas.implant import IACSkip
from iac.nas.supernet import SearchNetwork
from iac.nnunet.checkpoint import NNUNetCheckpointError, load_baseline, read_checkpoint
from iac.nnunet.network import IACPlainConvUNet, IACResidualEncoderUNet
from nnunetkit import GENOTYPE, IMAGE, PLAIN_KWARGS, RESENC_KWARGS, SPACE, trained_like

pytestmark = pytest.mark.usefixtures("single_thread")

VARIANTS = [
    pytest.param(PlainConvUNet, IACPlainConvUNet, PLAIN_KWARGS, id="plain"),
    pytest.param(ResidualEncoderUNet, IACResidualEncoderUNet, RESENC_KWARGS, id="resenc"),
]


def _image(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 1, IMAGE, IMAGE, generator=torch.Generator().manual_seed(seed))


def _as_list(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _nnunet_checkpoint(path, net: nn.Module) -> None:
    """A checkpoint shaped as nnU-Net's ``save_checkpoint`` writes it (numpy scalars in the logger)."""
    torch.save({
        "network_weights": net.state_dict(), "optimizer_state": {}, "grad_scaler_state": None,
        "logging": {"mean_fg_dice": [np.float64(0.5)], "ema_fg_dice": [np.float32(0.4)]},
        "_best_ema": np.float64(0.4), "current_epoch": 3, "init_args": {"fold": 0, "configuration": "2d"},
        "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1),
    }, path)


@pytest.mark.parametrize("base_cls, iac_cls, kwargs", VARIANTS)
@pytest.mark.parametrize("deep_supervision", [True, False])
def test_supernet_equals_the_baseline_at_step_0(base_cls, iac_cls, kwargs, deep_supervision):
    base = trained_like(base_cls(**kwargs, deep_supervision=deep_supervision)).eval()
    with torch.no_grad():
        expected = _as_list(base(_image()))
    net = iac_cls(**kwargs, deep_supervision=deep_supervision)
    net.load_state_dict(base.state_dict())  # strict: the plain skips add no parameter
    supernet = SearchNetwork(net, SPACE)
    for mode in (False, True):  # the frozen backbone stays in eval mode under .train()
        supernet.train(mode)
        with torch.no_grad():
            got = _as_list(supernet(_image()))
        assert len(got) == len(expected) == (len(kwargs["features_per_stage"]) - 1 if deep_supervision else 1)
        for g, e in zip(got, expected):
            assert torch.equal(g, e)


@pytest.mark.parametrize("base_cls, iac_cls, kwargs", VARIANTS)
def test_gradients_reach_only_the_cells(base_cls, iac_cls, kwargs):
    net = iac_cls(**kwargs, deep_supervision=True)
    net.load_state_dict(trained_like(base_cls(**kwargs, deep_supervision=True)).state_dict())
    supernet = SearchNetwork(net, SPACE).train()
    opt = torch.optim.SGD(supernet.weight_parameters(), lr=0.1)
    for _ in range(2):  # the first step moves the zero-initialised projections off zero
        opt.zero_grad()
        sum(o.square().mean() for o in supernet(_image())).backward()
        opt.step()
    cell_ids = {id(p) for skip in supernet.iac_skips() for p in (*skip.cell.parameters(), *skip.proj.parameters())}
    arch_ids = {id(p) for p in supernet.arch_parameters()}
    for name, p in supernet.named_parameters():
        if id(p) in cell_ids or id(p) in arch_ids:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert any(torch.count_nonzero(p.grad) for p in supernet.arch_parameters())
    assert any(torch.count_nonzero(skip.cell.cell.output[0].weight.grad) for skip in supernet.iac_skips())


@pytest.mark.parametrize("base_cls, iac_cls, kwargs", VARIANTS)
def test_every_baseline_key_of_a_checkpoint_loads_into_the_discrete_network(tmp_path, base_cls, iac_cls, kwargs):
    base = trained_like(base_cls(**kwargs, deep_supervision=True)).eval()
    _nnunet_checkpoint(tmp_path / "checkpoint_final.pth", base)
    net = iac_cls(**kwargs, deep_supervision=True, genotype=GENOTYPE.to_json())
    missing = load_baseline(net, tmp_path / "checkpoint_final.pth")
    assert missing and all(k.startswith("decoder.skip_modules.") for k in missing)
    own = net.state_dict()
    for key, value in base.state_dict().items():
        assert key in own and torch.equal(own[key], value), key
    assert len(net.iac_skips()) == len(kwargs["features_per_stage"]) - 1
    net.eval()
    with torch.no_grad():  # zero-initialised projections: the baseline's outputs, every head
        for g, e in zip(net(_image()), base(_image())):
            assert torch.equal(g, e)


def test_nnunet_initialisation_leaves_the_cells_as_built():
    net = IACPlainConvUNet(**PLAIN_KWARGS, deep_supervision=False, genotype=GENOTYPE.to_dict())
    net.apply(net.initialize)  # what get_network_from_plans does
    for skip in net.iac_skips():
        assert isinstance(skip, IACSkip)
        assert torch.count_nonzero(skip.proj.weight) == 0 and torch.count_nonzero(skip.proj.bias) == 0


def test_deep_supervision_trains_the_discrete_network():
    net = IACPlainConvUNet(**PLAIN_KWARGS, deep_supervision=True, genotype=GENOTYPE)
    out = net(_image())
    assert [o.shape[-1] for o in out] == [IMAGE, IMAGE // 2]
    sum(o.square().mean() for o in out).backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    net.decoder.deep_supervision = False  # what nnU-Net's trainer and predictor switch
    assert net(_image()).shape == (2, 3, IMAGE, IMAGE)


def test_a_checkpoint_of_another_network_is_one_clear_error(tmp_path):
    other = dict(PLAIN_KWARGS, features_per_stage=[4, 8, 32])
    _nnunet_checkpoint(tmp_path / "ck.pth", PlainConvUNet(**other))
    with pytest.raises(NNUNetCheckpointError, match="differ in shape"):
        load_baseline(IACPlainConvUNet(**PLAIN_KWARGS), tmp_path / "ck.pth")
    with pytest.raises(NNUNetCheckpointError, match="no nnU-Net checkpoint"):
        read_checkpoint(tmp_path / "missing.pth")


def test_a_genotype_of_another_search_space_is_refused():
    bad = GENOTYPE.to_dict()
    bad["space"] = dict(bad["space"], ops=["none", "conv_7x7_magic"])
    with pytest.raises(GenotypeError):
        IACPlainConvUNet(**PLAIN_KWARGS, genotype=bad)
    with pytest.raises(GenotypeError):
        IACPlainConvUNet(**PLAIN_KWARGS, genotype="not json")
