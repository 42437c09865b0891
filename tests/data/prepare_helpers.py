"""Small configs shared by the data tests."""

from __future__ import annotations

from pathlib import Path

from iac.config import PrepareConfig

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
