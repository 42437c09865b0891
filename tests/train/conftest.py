"""Fixtures of the training tests."""

from __future__ import annotations

import pytest
import torch
from trainkit import make_slices


@pytest.fixture
def slices() -> list[dict]:
    return make_slices()


@pytest.fixture(autouse=True)
def _cpu_threads():
    # Two shared cores: keep each test on one thread (and bit-stable).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
