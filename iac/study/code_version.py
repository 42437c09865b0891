"""The version of the code that computes a step, part of every step's cache key."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

# What a step's result depends on: the package and its pinned requirements. Docs, tests and
# benchmarks can change without invalidating finished steps.
CODE_PATHS = ("iac", "pyproject.toml")
# The checkout this package lives in (iac/study/code_version.py -> the project root).
_CHECKOUT = Path(__file__).resolve().parents[2]
# The commit an installation without git metadata was built from (the Docker image sets it
# from its GIT_COMMIT build argument).
COMMIT_ENV = "IAC_GIT_COMMIT"


def code_version(root: Path | None = None) -> str:
    """Version of the code that computes a step: git objects of :data:`CODE_PATHS` plus their uncommitted changes.

    ``root`` is the checkout (default: the one this package lives in). Outside a git
    checkout (the Docker image, an installed package) it is a hash of the files of
    :data:`CODE_PATHS` (``files-<hash>``), prefixed with the commit named by
    ``$IAC_GIT_COMMIT`` when set (``commit-<sha>+files-<hash>``): never a constant, so two
    images built from different code never share finished steps in one store.
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
        files = "files-" + files_digest(root)[:12]
        commit = os.environ.get(COMMIT_ENV, "").strip()
        return f"commit-{commit[:12]}+{files}" if commit else files
    version = "code-" + hashlib.sha256(tree).hexdigest()[:12]
    return version + ("+" + hashlib.sha256(diff).hexdigest()[:12] if diff else "")


def files_digest(root: Path) -> str:
    """SHA-256 over the paths and contents of every file of :data:`CODE_PATHS` under ``root`` (bytecode caches left out)."""
    digest = hashlib.sha256()
    for name in CODE_PATHS:
        top = root / name
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else []
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
