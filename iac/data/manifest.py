"""The prepared dataset's manifest: one JSON file, written atomically and read back.

``manifest.json`` describes a prepared folder (dataset, labels, preprocessing
parameters, fingerprint, cases, splits; see :mod:`iac.data.store`). It is the
last file ``prepare`` writes, so its presence marks a complete folder.
:func:`write_manifest` and :func:`read_manifest` are the only code that writes
or parses it, so what ``prepare`` stores is exactly what later steps read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iac.atomic import atomic_write_text
from iac.data.layouts.base import DataError

MANIFEST = "manifest.json"


def write_manifest(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``folder/manifest.json`` atomically (a temporary file, then ``os.replace``).

    A reader never sees a half-written manifest: the file is either absent,
    the previous one, or the complete new one.

    Args:
        folder: the prepared (or temporary) folder.
        manifest: JSON-able manifest.

    Returns:
        The manifest's path.
    """
    return atomic_write_text(Path(folder) / MANIFEST, json.dumps(manifest, indent=2))


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a prepared folder, as :func:`write_manifest` wrote it.

    Raises:
        DataError: naming the folder when it has no manifest, or the file when
            it is not valid JSON.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(f"{folder} is not a prepared dataset: {MANIFEST} is missing")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from err


def manifest_or_none(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of ``folder``, or None when it has none or an unreadable one.

    For deciding whether a folder may be reused or replaced, where a missing
    manifest is an answer rather than an error.
    """
    try:
        return read_manifest(folder)
    except (DataError, OSError):
        return None
