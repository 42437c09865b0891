"""The trainer on a real backbone and a tiny prepared phantom."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("iac.data.prepare")
pytest.importorskip("iac.data.dataset")
pytest.importorskip("iac.models")

from iac.config import PrepareConfig  # noqa: E402
from iac.data.dataset import SliceDataset  # noqa: E402
from iac.data.prepare import prepare_dataset  # noqa: E402
from iac.data.store import PreparedDataset  # noqa: E402
from iac.models import create_backbone  # noqa: E402
from iac.tracking import MemoryTracker  # noqa: E402
from iac.train.augment import make_augment  # noqa: E402
from iac.eval.validate import make_validator, validate_patient_dice  # noqa: E402
from iac.train.trainer import Trainer  # noqa: E402


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> PreparedDataset:
    out = tmp_path_factory.mktemp("phantom") / "prepared"
    cfg = PrepareConfig(dataset="phantom", out=out, phantom_patients=4, phantom_size=24, val_fraction=0.25,
                        test_fraction=0.25, workers=1)
    prepare_dataset(cfg, progress=False)
    return PreparedDataset(out)


def _trainer(data: PreparedDataset, folder, backbone="unet", seed_model=0, **kw) -> Trainer:
    torch.manual_seed(seed_model)
    net = create_backbone(backbone, data.in_channels, data.num_classes)
    train = SliceDataset(data, "train", augment=make_augment(True, 0))
    settings = dict(epochs=2, batch_size=4, max_slices_per_epoch=8, lr=3e-3, device="cpu", progress=False,
                    validate=make_validator(data, "val", batch_size=8), checkpoint_dir=folder)
    settings.update(kw)
    return Trainer(net, train, **settings)


def test_resume_is_bit_identical_on_a_real_unet(phantom, tmp_path):
    tracker = MemoryTracker()
    full = _trainer(phantom, tmp_path / "full", tracker=tracker).fit()
    assert 0.0 <= full.best_val_dice <= 1.0
    assert len(tracker.metric_history("val_dice")) == 2
    assert tracker.params["n_parameters"] > 0

    def stop(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _trainer(phantom, tmp_path / "cut", on_epoch_end=stop).fit()
    resumed_trainer = _trainer(phantom, tmp_path / "cut", seed_model=7)
    resumed = resumed_trainer.fit(resume=tmp_path / "cut")
    final_full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)["model"]
    for k, v in final_full.items():
        assert torch.equal(resumed_trainer.model.state_dict()[k], v), k
    assert resumed.best_epoch == full.best_epoch and resumed.best_val_dice == full.best_val_dice


def test_basicunet_trains_and_validates(phantom, tmp_path):
    trainer = _trainer(phantom, tmp_path, backbone="basicunet", epochs=1)
    result = trainer.fit()
    assert result.best_epoch == 1 and len(result.history) == 1
    mean, per_patient = validate_patient_dice(trainer.model, phantom, "val", "cpu", batch_size=8)
    assert mean == pytest.approx(result.best_val_dice)
    assert set(per_patient) == set(phantom.patients("val"))
