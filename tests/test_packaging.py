"""The packaging files agree with each other (pyproject is the source of truth).

The MLproject entry points are checked against the click commands in ``test_cli.py``,
the lock in ``test_lock.py``, the Dockerfile in ``test_dockerfile.py``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower()


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_full_mlflow_not_skinny(pyproject):
    names = {_name(r) for r in pyproject["project"]["dependencies"]}
    assert "mlflow" in names and "mlflow-skinny" not in names


def test_mlproject_uses_the_conda_env():
    # The entry points themselves (scripts, parameters, defaults) are checked in test_cli.py.
    spec = yaml.safe_load((ROOT / "MLproject").read_text())
    assert spec["conda_env"] == "conda.yaml"


def test_ci_runs_the_readme_test_command():
    # How CI installs (CPU torch first, then the lock) is checked in test_lock.py.
    text = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    test_cmd = re.search(r"python -m pytest[^\n`]*", text).group(0)
    assert test_cmd in readme, "the CI test command must be the README's"


def test_test_files_have_unique_basenames():
    """pytest imports test files by basename (no packages under tests/): two equal names break collection."""
    from collections import Counter

    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert not [n for n, c in names.items() if c > 1], f"test files sharing a name: {[n for n, c in names.items() if c > 1]}"
