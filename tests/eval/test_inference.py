"""Slice-wise prediction of a preprocessed volume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iac.eval.inference import predict_volume

pytestmark = pytest.mark.usefixtures("single_thread")

C, Z, H, W, K = 2, 5, 8, 8, 3


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(C, Z, H, W)).astype(np.float32)


@pytest.fixture
def net() -> torch.nn.Module:
    """Conv, batch norm (behaves differently in training mode), 1x1 head to K classes."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(C, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, K, 1))
    net.train()
    with torch.no_grad():  # running statistics unlike any batch's, so the two modes disagree
        net[1].running_mean.fill_(0.5)
        net[1].running_var.fill_(4.0)
    return net


def _eval_logits(net: torch.nn.Module, volume: np.ndarray) -> torch.Tensor:
    """Reference: the whole volume as one batch in eval mode, (Z, K, H, W)."""
    net.eval()
    with torch.no_grad():
        out = net(torch.from_numpy(np.moveaxis(volume, 1, 0).copy()))
    net.train()
    return out


def test_labels_are_the_argmax_of_each_slice_in_eval_mode(net, volume):
    labels = predict_volume(net, volume, batch_size=2)
    assert labels.shape == (Z, H, W) and labels.dtype == np.uint8
    assert np.array_equal(labels, _eval_logits(net, volume).argmax(dim=1).numpy())


def test_the_training_mode_is_restored(net, volume):
    predict_volume(net, volume)
    assert net.training
    net.eval()
    predict_volume(net, volume)
    assert not net.training


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_the_batch_size_does_not_change_the_labels(net, volume, batch_size):
    assert np.array_equal(predict_volume(net, volume, batch_size=batch_size), predict_volume(net, volume, batch_size=Z))


def test_probabilities_per_class_sum_to_one_and_agree_with_the_labels(net, volume):
    probs = predict_volume(net, volume, batch_size=2, return_probs=True)
    assert probs.shape == (K, Z, H, W) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-5)
    assert np.array_equal(probs.argmax(axis=0), predict_volume(net, volume))


def test_a_read_only_memory_mapped_volume_is_accepted(net, volume, tmp_path):
    np.save(tmp_path / "image.npy", volume)
    mapped = np.load(tmp_path / "image.npy", mmap_mode="r")
    assert np.array_equal(predict_volume(net, mapped), predict_volume(net, volume))


def test_a_volume_without_channels_is_refused(net, volume):
    with pytest.raises(ValueError, match=r"\(C, Z, H, W\).*\(5, 8, 8\)"):
        predict_volume(net, volume[0])
