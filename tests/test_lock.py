"""requirements.lock agrees with pyproject.toml, and CI, conda.yaml and the Dockerfile install with it."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _load_lock_tool():
    spec = importlib.util.spec_from_file_location("iac_lock_tool", ROOT / "tools" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock_tool = _load_lock_tool()


@pytest.fixture(scope="module")
def lock() -> tuple[str | None, dict[str, str]]:
    return lock_tool.read_lock(ROOT / "requirements.lock")


def test_lock_was_compiled_from_this_pyproject(lock):
    """Any change to the dependencies or extras (a new extra merged in) needs `python tools/lock.py` again."""
    digest, _ = lock
    expected = lock_tool.inputs_digest(lock_tool.project_requirements(ROOT / "pyproject.toml"))
    assert digest == expected, "pyproject.toml's requirements changed since requirements.lock was compiled: run `python tools/lock.py`"
    assert lock_tool.COMMAND in (ROOT / "requirements.lock").read_text(), "the lock's header must give the command that made it"


def test_every_requirement_and_extra_is_locked_within_its_specifier(lock):
    _, pins = lock
    env = default_environment() | {"python_version": lock_tool.PYTHON, "sys_platform": "linux", "platform_system": "Linux"}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    checked = 0
    for text in reqs:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if name == canonicalize_name(project["name"]) or (req.marker and not req.marker.evaluate(env | {"extra": ""})):
            continue
        assert name in pins, f"{text!r} (pyproject.toml) is not in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"requirements.lock pins {name}=={pins[name]}, outside {text!r}"
        checked += 1
    assert checked >= len(project["dependencies"])


def test_lock_is_plain_pins_with_the_tested_torch(lock):
    _, pins = lock
    assert pins["torch"] == lock_tool.TORCH
    for name, version in pins.items():
        assert Version(version).local is None, f"{name}=={version}: a local build label would reject the other build"
    body = [line for line in (ROOT / "requirements.lock").read_text().splitlines() if line and not line.startswith("#")]
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9.\-]*==[^\s;#]+", line) for line in body), "only name==version lines (no hashes, markers or URLs)"
    assert len(body) == len(pins), "a package is pinned twice"
    # PyPI's torch is a CUDA build: its runtime wheels are locked too (the image installs them).
    assert any(name.startswith("nvidia-") for name in pins) and "triton" in pins


def test_ci_installs_cpu_torch_first_then_everything_from_the_lock():
    text = (ROOT / ".ci" / "run").read_text()
    torch_at = text.index(f"pip install -q torch=={lock_tool.TORCH}")
    project = re.search(r"pip install -q -c requirements\.lock -e '\.\[[^']*\]'", text)
    assert project and torch_at < project.start(), "CI must install the CPU torch first, then the project with the lock"
    assert text.index("tools/lock.py --check-env") > project.end(), "CI must check the installed versions against the lock"


def test_conda_env_installs_with_the_lock():
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip_lists = [d["pip"] for d in conda["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert pip_lists == [["-c requirements.lock", "-e ."]]
    pythons = [d for d in conda["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert pythons == [f"python={lock_tool.PYTHON}"]


def test_check_env_flags_a_version_that_is_not_the_locked_one(tmp_path):
    """The check CI and the image build run: a package at another version than the lock's is named."""
    from importlib.metadata import version

    pinned = tmp_path / "requirements.lock"
    pinned.write_text(f"# inputs: x\nclick=={version('click')}\npyyaml==0.0.1\n")
    problems = lock_tool.check_env(lock=pinned)
    assert len(problems) == 1 and problems[0].startswith("pyyaml ") and "the lock says 0.0.1" in problems[0]
