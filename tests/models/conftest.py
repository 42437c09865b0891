"""Model tests run single-threaded: the nets are tiny, and on a shared CPU
intra-op threads contend with other processes (one thread is several times faster)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
