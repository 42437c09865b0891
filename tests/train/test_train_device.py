"""Device resolution, seeding and the CPU no-op paths of AMP / channels-last."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import pytest
import torch
from torch import nn

from iac.train.device import (
    autocast,
    make_grad_scaler,
    resolve_device,
    seed_everything,
    to_channels_last,
)


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.parametrize("bad", ["gpu", "", "cuda:", "cuda:x", "cuda:-1", "mps0", "tpu"])
def test_unknown_spec_is_value_error(bad):
    with pytest.raises(ValueError, match="device"):
        resolve_device(bad)


def test_non_string_is_value_error():
    with pytest.raises(ValueError, match="auto"):
        resolve_device(0)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0"])
def test_cuda_unavailable_is_runtime_error(spec):
    with pytest.raises(RuntimeError, match="CPU-only build|no NVIDIA GPU|CUDA is not usable|built for CUDA"):
        resolve_device(spec)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_out_of_range():
    with pytest.raises(RuntimeError, match="visible"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_seed_everything_repeats_all_generators():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_everything(7)
    a = draw()
    seed_everything(7)
    assert draw() == a
    seed_everything(8)
    assert draw() != a


def test_amp_and_channels_last_are_noops_on_cpu():
    cpu = torch.device("cpu")
    assert isinstance(autocast(cpu, True), contextlib.nullcontext)
    assert not make_grad_scaler(cpu, True).is_enabled()
    x = torch.randn(2, 3, 8, 8)
    assert to_channels_last(x, cpu, True) is x
    m = nn.Conv2d(3, 3, 3)
    assert to_channels_last(m, cpu, True) is m
