"""Fixtures of the data tests: tiny phantom cohorts and configs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from iac.config import PrepareConfig  # noqa: E402

TINY = 24  # phantom matrix side for tests (pixels)


def tiny_cfg(out: Path, **kw) -> PrepareConfig:
    """A phantom config small enough for a unit test (4 patients, 24x24, one process)."""
    base = dict(
        dataset="phantom",
        out=out,
        phantom_patients=4,
        phantom_size=TINY,
        val_fraction=0.25,
        test_fraction=0.25,
        workers=1,
    )
    base.update(kw)
    return PrepareConfig(**base)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Path:
    """Out folder of a tiny prepared phantom, shared by the session: do not modify it."""
    from iac.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("tiny") / "prepared"
    prepare_dataset(tiny_cfg(out), progress=False)
    return out
