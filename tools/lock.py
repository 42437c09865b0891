"""Compile, and check against, ``requirements.lock``: every package of IAC-LTH with all its extras, pinned.

Regenerate the lock after any change to the dependencies or extras in ``pyproject.toml``
(one command, PyPI only, a few minutes)::

    python tools/lock.py

The lock is a pip *constraints* file: CI, the Docker image and ``conda.yaml`` install
``pip install -c requirements.lock <what they need>``, so every installed package gets its
locked version and nothing outside the selected extras is installed. It is resolved with
pip's own resolver against PyPI alone (``--isolated``: no local wheel folder or mirror of
this machine takes part), for CPython 3.11 on Linux x86_64 (CI's interpreter and the
image's). PyTorch is pinned to :data:`TORCH`: on PyPI that is a CUDA build, so the CUDA
runtime wheels it requires (``cuda-*``, ``nvidia-*``, ``triton``) are locked as well; they
only constrain, so a CPU build of the same release (``2.13.0+cpu``, which satisfies
``torch==2.13.0``) installs none of them. The lock carries no hashes, for the same reason:
a hash of PyPI's CUDA wheel would reject the CPU wheel CI installs first.

``python tools/lock.py --check-env [--cuda]`` checks the running environment instead:
every installed package that the lock names has its locked version (and, with ``--cuda``,
PyTorch is a CUDA build). CI and the image build run it after installing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
# The PyTorch release CI tests (its CPU build) and the image runs (PyPI's CUDA build).
TORCH = "2.13.0"
# The interpreter the lock is resolved for: CI's python3 and the image's base.
PYTHON = "3.11"
INDEX = "https://pypi.org/simple"
COMMAND = "python tools/lock.py"
# Distribution names whose CUDA build brings them in; a CPU torch needs none of them.
CUDA_RUNTIME_PREFIXES = ("cuda-", "nvidia-", "triton")


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name (``SimpleITK`` -> ``simpleitk``, ``typing_extensions`` -> ``typing-extensions``)."""
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def project_requirements(pyproject: Path = PYPROJECT) -> list[str]:
    """Every requirement of the project: its dependencies, all optional extras, and ``torch==TORCH``.

    Extras that name the project itself (``iac-lth[test]``) are left out: their contents are
    already in the list.
    """
    project = tomllib.loads(pyproject.read_text())["project"]
    name = canonical(project["name"])
    reqs = list(project.get("dependencies", []))
    for extra in sorted(project.get("optional-dependencies", {})):
        reqs += project["optional-dependencies"][extra]
    reqs = [r.strip() for r in reqs if canonical(_req_name(r)) != name]
    return sorted(set(reqs)) + [f"torch=={TORCH}"]


def _req_name(req: str) -> str:
    from packaging.requirements import Requirement

    return Requirement(req).name


def inputs_digest(requirements: list[str]) -> str:
    """A digest of the resolver's inputs, written into the lock's header (the lock test recomputes it)."""
    text = "\n".join([f"python {PYTHON}", *requirements])
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def resolve(requirements: list[str]) -> list[tuple[str, str]]:
    """Resolve ``requirements`` with pip against PyPI alone; returns sorted ``(name, version)`` pins."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            sys.executable, "-m", "pip", "install", "--isolated", "--dry-run", "--ignore-installed",
            "--quiet", "--disable-pip-version-check", "--index-url", INDEX, "--report", str(report), *requirements,
        ]  # fmt: skip
        subprocess.run(cmd, check=True)
        installed = json.loads(report.read_text())["install"]
    pins = {canonical(item["metadata"]["name"]): item["metadata"]["version"] for item in installed}
    return sorted(pins.items())


def render(requirements: list[str], pins: list[tuple[str, str]]) -> str:
    """The lock file's text: a header saying how it was made and how to use it, then ``name==version`` lines."""
    header = [
        "# Every package of IAC-LTH with all its extras, pinned for CPython 3.11 on Linux x86_64.",
        "# Regenerate after changing pyproject.toml's dependencies or extras (PyPI only):",
        f"#     {COMMAND}",
        "# Install with it as a constraints file, e.g.  pip install -c requirements.lock -e '.[test]'",
        f"# torch=={TORCH} is PyPI's CUDA build, whose CUDA runtime wheels are pinned below too; the",
        f"# CPU build {TORCH}+cpu satisfies the same pin and needs none of them. No hashes: they would",
        "# reject that CPU wheel.",
        f"# inputs: {inputs_digest(requirements)}",
        *(f"#   {r}" for r in requirements),
        "",
    ]
    return "\n".join(header + [f"{name}=={version}" for name, version in pins]) + "\n"


def read_lock(path: Path = LOCK) -> tuple[str | None, dict[str, str]]:
    """``(inputs digest from the header, {canonical name: version})`` of a lock file."""
    digest, pins = None, {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("# inputs:"):
            digest = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonical(name)] = version.strip()
    return digest, pins


def check_env(cuda: bool = False, lock: Path = LOCK) -> list[str]:
    """Problems of the running environment against the lock (empty when it matches).

    Every installed distribution that the lock names must have the locked version
    (a local label such as ``+cpu`` is ignored); with ``cuda``, PyTorch must be a CUDA build.
    """
    from importlib.metadata import distributions

    from packaging.version import Version

    _, pins = read_lock(lock)
    problems = []
    for dist in distributions():
        name = canonical(dist.metadata["Name"] or "")
        if name in pins and Version(dist.version).public != Version(pins[name]).public:
            problems.append(f"{name} {dist.version} is installed, the lock says {pins[name]}")
    if cuda:
        import torch

        if torch.version.cuda is None:
            problems.append(f"torch {torch.__version__} is a CPU build; the image needs PyPI's CUDA build")
    return sorted(problems)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check-env", action="store_true", help="check the installed packages against the lock instead")
    parser.add_argument("--cuda", action="store_true", help="with --check-env: PyTorch must be a CUDA build")
    args = parser.parse_args(argv)
    if args.check_env:
        problems = check_env(cuda=args.cuda)
        for p in problems:
            print(f"lock: {p}", file=sys.stderr)
        if not problems:
            print(f"lock: the environment matches {LOCK.name}")
        return 1 if problems else 0
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    if here != PYTHON or platform.system() != "Linux" or platform.machine() != "x86_64":
        print(f"lock: run this with CPython {PYTHON} on Linux x86_64 (this is {here} on {platform.system()} {platform.machine()})", file=sys.stderr)
        return 2
    requirements = project_requirements()
    pins = resolve(requirements)
    tmp = LOCK.with_name(LOCK.name + ".tmp")  # a failed write leaves the old lock whole
    tmp.write_text(render(requirements, pins))
    tmp.replace(LOCK)
    direct = {canonical(_req_name(r)) for r in requirements}
    cuda_only = sum(name.startswith(CUDA_RUNTIME_PREFIXES) and name not in direct for name, _ in pins)
    print(f"lock: wrote {LOCK.name}: {len(pins)} packages ({cuda_only} of them CUDA runtime wheels of torch {TORCH})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
