"""Atomic file writes: a reader sees the old file or the complete new one, never half.

Every file the project writes for others to read (checkpoints, manifests,
trajectories, genotypes, per-case tables) goes through :func:`atomic_write`:
the content goes to a temporary file in the target's folder, is flushed to
disk, and then replaces the target with ``os.replace``; on any error the
temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` atomically with ``write(binary file)``; its folder is created if needed.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (no newline translation)."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda fh: fh.write(data))
