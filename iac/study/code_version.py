"""The version of the code that computes a step, part of every step's cache key."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

# What a step's result depends on: the package and its pinned requirements. Docs, tests and
# benchmarks can change without invalidating finished steps.
CODE_PATHS = ("iac", "pyproject.toml")
# The checkout this package lives in (iac/study/code_version.py -> the project root).
_CHECKOUT = Path(__file__).resolve().parents[2]


def code_version(root: Path | None = None) -> str:
    """Version of the code that computes a step: git objects of :data:`CODE_PATHS` plus their uncommitted changes.

    ``root`` is the checkout (default: the one this package lives in). Outside a
    git checkout (an installed release) it is the package version.
    """
    root = root or _CHECKOUT
    try:
        tree = subprocess.run(
            ["git", "ls-tree", "HEAD", "--", *CODE_PATHS], cwd=root, capture_output=True, check=True
        ).stdout
        diff = subprocess.run(["git", "diff", "HEAD", "--", *CODE_PATHS], cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        tree = b""
    if not tree:
        from iac import __version__

        return f"release-{__version__}"
    version = "code-" + hashlib.sha256(tree).hexdigest()[:12]
    return version + ("+" + hashlib.sha256(diff).hexdigest()[:12] if diff else "")
