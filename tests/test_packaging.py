"""The packaging files agree with each other (pyproject is the source of truth).

The MLproject entry points are checked against the click commands in ``test_cli.py``.
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


def test_conda_pip_list_equals_pyproject_dependencies(pyproject):
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip_lists = [d["pip"] for d in conda["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_lists) == 1, "conda.yaml must have exactly one pip list"
    conda_reqs = [r for r in pip_lists[0] if not r.startswith("-e")]
    assert sorted(conda_reqs) == sorted(pyproject["project"]["dependencies"]), (
        "conda.yaml's pip list drifted from pyproject.toml's dependencies"
    )
    assert "-e ." in pip_lists[0], "conda.yaml must install the project itself"
    pythons = [d for d in conda["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert pythons, "conda.yaml must pin a Python version"


def test_full_mlflow_not_skinny(pyproject):
    names = {_name(r) for r in pyproject["project"]["dependencies"]}
    assert "mlflow" in names and "mlflow-skinny" not in names


def test_mlproject_uses_the_conda_env():
    # The entry points themselves (scripts, parameters, defaults) are checked in test_cli.py.
    spec = yaml.safe_load((ROOT / "MLproject").read_text())
    assert spec["conda_env"] == "conda.yaml"


def test_dockerfile_installs_project_and_cuda_torch(pyproject):
    text = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+pytorch/pytorch:(\d+)\.(\d+)\.(\d+)-cuda", text, re.M)
    assert base, "the image must start from a CUDA PyTorch runtime"
    torch_req = next(r for r in pyproject["project"]["dependencies"] if _name(r) == "torch")
    minimum = tuple(int(x) for x in re.search(r">=\s*([\d.]+)", torch_req).group(1).split("."))
    have = tuple(int(x) for x in base.groups())
    assert have[: len(minimum)] >= minimum, f"base image torch {have} is older than the requirement {torch_req}"
    assert "pip install -e ." in text, "the image must install the project from pyproject.toml"
    assert "--env-manager" in text and "local" in text


def test_ci_installs_cpu_torch_before_project():
    text = (ROOT / ".ci" / "run").read_text()
    torch_at = text.index("torch==2.13.0")
    project_at = text.index("-e '.[test]'")
    assert torch_at < project_at
    readme = (ROOT / "README.md").read_text()
    test_cmd = re.search(r"python -m pytest[^\n`]*", text).group(0)
    assert test_cmd in readme, "the CI test command must be the README's"


def test_test_files_have_unique_basenames():
    """pytest imports test files by basename (no packages under tests/): two equal names break collection."""
    from collections import Counter

    names = Counter(p.name for p in (ROOT / "tests").rglob("test_*.py"))
    assert not [n for n, c in names.items() if c > 1], f"test files sharing a name: {[n for n, c in names.items() if c > 1]}"
