"""Model tests run single-threaded (the root conftest's ``single_thread`` says why)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread(single_thread):
    """Every test here uses :func:`single_thread`."""
