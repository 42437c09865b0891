"""Implantation: exact baseline output at step 0, exact zero gradients upstream
of the projection, and the discrete IAC skip used for retraining."""

from __future__ import annotations

import pytest
import torch

from iac.nas.genotype import CellGenotype, Genotype, SearchSpace
from iac.nas.implant import IACSkip, implant, make_iac_skip
from iac.nas.supernet import SearchNetwork

pytestmark = pytest.mark.usefixtures("single_thread")

GENOTYPE = Genotype(
    SearchSpace(nodes=2, cell_channels=8),
    (CellGenotype(((("sep_conv_3x3", 0), ("skip_connect", 1)), (("dil_conv_3x3", 2), ("max_pool_3x3", 0)))),),
)


def test_implanted_network_computes_the_baseline_exactly(make_unet, space, image):
    baseline = make_unet()
    with torch.no_grad():
        expected = baseline(image)
    net = SearchNetwork(make_unet(), space)
    for mode in (False, True):  # eval, and train (frozen backbone stays in eval)
        net.train(mode)
        with torch.no_grad():
            assert torch.equal(net(image), expected)


def test_gradients_upstream_of_the_projection_are_exactly_zero_at_step_0(make_unet, space, image):
    net = SearchNetwork(make_unet(), space).train()
    net(image).square().mean().backward()
    for skip in net.iac_skips():
        assert torch.count_nonzero(skip.proj.weight.grad) > 0
        for name, p in skip.cell.named_parameters():
            assert p.grad is not None and torch.count_nonzero(p.grad) == 0, name
    for p in net.arch_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0


@pytest.mark.parametrize("genotype", [GENOTYPE, GENOTYPE.to_dict(), GENOTYPE.to_json()])
def test_make_iac_skip_from_any_genotype_form(genotype):
    skip = make_iac_skip(0, [6, 12], [6], 2, genotype)
    assert isinstance(skip, IACSkip)
    skips = [torch.randn(2, 6, 8, 8), torch.randn(2, 12, 4, 4)]
    up = torch.randn(2, 6, 8, 8)
    assert torch.equal(skip(skips, up), skips[0])  # zero-initialised projection
    assert sorted(skip.cell.ops) == ["0->2", "0->3", "1->2", "2->3"]


def test_retrain_with_a_found_cell(make_unet, image):
    unet = make_unet()
    with torch.no_grad():
        expected = unet(image)
    implant(unet, lambda level, skip_ch, up_ch: make_iac_skip(level, skip_ch, up_ch, 2, GENOTYPE).cell)
    unet.eval()
    with torch.no_grad():
        assert torch.equal(unet(image), expected)
    unet.train()
    opt = torch.optim.SGD(unet.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        unet(image).square().mean().backward()
        opt.step()
    cell_params = [p for m in unet.skip_modules for p in m.cell.parameters()]
    assert all(torch.count_nonzero(p.grad) > 0 for p in cell_params)


def test_per_level_genotype_needs_its_level():
    space = SearchSpace(nodes=1, per_level=True, cell_channels=4)
    g = Genotype(space, (CellGenotype(((("skip_connect", 0),),)),))
    with pytest.raises(ValueError, match="level 1 has no cell"):
        make_iac_skip(1, [4, 8, 16], [4, 8], 2, g)


def test_create_skip_iac_uses_the_genotype():
    models = pytest.importorskip("iac.models")
    net = models.create_backbone("unet", 1, 2, features=(8, 16, 32), skip="iac",
                                 skip_kwargs={"genotype": GENOTYPE.to_dict()})
    assert all(isinstance(m, IACSkip) for m in net.skip_modules)
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 2, 16, 16)


def _implanted(make_unet):
    unet = make_unet()
    implant(unet, lambda level, skip_ch, up_ch: make_iac_skip(level, skip_ch, up_ch, 2, GENOTYPE).cell)
    return unet


def test_implant_lr_scale_gives_the_cells_and_projections_their_own_group(make_unet):
    from iac.train.steps import implanted_parameters, make_optimizer

    unet = _implanted(make_unet)
    assert len(make_optimizer(unet, 1e-3, 1e-4).param_groups) == 1  # scale 1: one rate as before
    opt = make_optimizer(unet, 1e-3, 1e-4, implant_lr_scale=10.0)
    backbone, cells = opt.param_groups
    assert backbone["lr"] == 1e-3 and cells["lr"] == pytest.approx(1e-2)
    expected = set()
    for skip in unet.modules():
        if isinstance(skip, IACSkip):
            expected |= {id(p) for p in skip.cell.parameters()} | {id(p) for p in skip.proj.parameters()}
    assert {id(p) for p in cells["params"]} == expected == {id(p) for p in implanted_parameters(unet)}
    assert not expected & {id(p) for p in backbone["params"]}
    assert len(backbone["params"]) + len(cells["params"]) == len(list(unet.parameters()))


def test_a_larger_implant_lr_scale_moves_the_projection_further(make_unet, image):
    from iac.train.steps import make_optimizer

    moved = {}
    for scale in (1.0, 10.0):
        torch.manual_seed(0)
        unet = _implanted(make_unet).train()
        with torch.no_grad():
            classes = unet(image).shape[1]
        target = torch.randint(0, classes, (image.shape[0], *image.shape[2:]))
        opt = make_optimizer(unet, 1e-3, 0.0, implant_lr_scale=scale)
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(unet(image), target).backward()
            opt.step()
        moved[scale] = sum(float(m.proj.weight.detach().abs().sum()) for m in unet.modules() if isinstance(m, IACSkip))
    assert moved[10.0] > 5 * moved[1.0] > 0


def test_no_implanted_cell_refuses_a_scale(make_unet):
    from iac.train.steps import make_optimizer

    with pytest.raises(ValueError, match="implant_lr_scale=10.0 but the model has no trainable implanted cell"):
        make_optimizer(make_unet(), 1e-3, 1e-4, implant_lr_scale=10.0)
