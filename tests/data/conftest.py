"""Fixtures of the data tests: a tiny prepared phantom shared by the session."""

from __future__ import annotations

from pathlib import Path

import pytest
from prepare_helpers import tiny_cfg


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """Out folder of a tiny prepared phantom, shared by the session: do not modify it."""
    from iac.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("tiny") / "prepared"
    prepare_dataset(tiny_cfg(out), progress=False)
    return out
