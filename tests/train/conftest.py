"""Fixtures of the training tests."""

from __future__ import annotations

import pytest
from trainkit import make_slices


@pytest.fixture
def slices() -> list[dict]:
    return make_slices()


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Every training test uses the root conftest's ``single_thread`` (bit-stable on shared cores)."""
