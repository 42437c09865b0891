"""Dataset layout readers, registered by name in :data:`LAYOUTS`.

``acdc`` is always imported; the other readers (``brats``, ``kits``, ``amos``,
``nnunet``) are imported by :func:`load_layouts` when their module exists.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Callable

from iac.data.layouts import acdc  # noqa: F401  (registers "acdc")
from iac.data.layouts.base import LAYOUTS, CaseSource, DataError, Discovery, LayoutInfo, register_layout

# Readers living in their own modules, imported when present.
OPTIONAL_LAYOUTS = ("brats", "kits", "amos", "nnunet")

__all__ = [
    "LAYOUTS",
    "CaseSource",
    "DataError",
    "Discovery",
    "LayoutInfo",
    "get_layout",
    "load_layouts",
    "register_layout",
]


def load_layouts() -> dict[str, Callable[[Path, dict], Discovery]]:
    """Import every optional layout module that exists and return the registry.

    A module that exists but fails to import raises its own error (it is not hidden).
    """
    for name in OPTIONAL_LAYOUTS:
        module = f"{__name__}.{name}"
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    return LAYOUTS


def get_layout(name: str) -> Callable[[Path, dict], Discovery]:
    """The ``discover`` function of layout ``name``.

    Raises:
        DataError: for an unknown layout, listing the known ones.
    """
    layouts = load_layouts()
    if name not in layouts:
        raise DataError(f"unknown dataset layout {name!r}; known layouts: {', '.join(sorted(layouts))}")
    return layouts[name]
