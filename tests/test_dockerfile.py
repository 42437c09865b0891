"""The CUDA image, checked statically (no Docker engine here) plus its entry point run for real.

Each property the image promises is one test: PyTorch exactly the locked CUDA build, no
data in the build context, a non-root user that works with git, the commit as the code
version, GPU metrics, and an entry point that runs one step.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"


def _lock_tool():
    spec = importlib.util.spec_from_file_location("iac_lock_tool_docker", ROOT / "tools" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", "\n".join(line for line in DOCKERFILE.splitlines() if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.M)]


def test_pytorch_is_exactly_the_locked_cuda_build():
    tool = _lock_tool()
    steps = _instructions()
    base = [args for op, args in steps if op == "FROM"]
    assert base == [f"python:{tool.PYTHON}-slim-bookworm"], "one stage, on the lock's Python"
    runs = [args for op, args in steps if op == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs and all("tools/lock.py --check-env --cuda" in r for r in installs), (
        "every pip install must be followed by the check that the versions (and torch's CUDA build) are the locked ones"
    )
    assert any("pip install -c requirements.lock" in r for r in installs)
    env = " ".join(args for op, args in steps if op == "ENV")
    assert "PIP_CONSTRAINT=/opt/iac-lth/requirements.lock" in env, "later pip calls must not be able to replace torch"
    for other_source in ("--index-url", "--extra-index-url", "torch==", "download.pytorch.org", "conda install"):
        assert other_source not in " ".join(runs), f"torch must come from the lock alone, not {other_source!r}"
    copies = [args for op, args in steps if op == "COPY"]
    assert copies[0].startswith("requirements.lock "), "the lock is copied before the dependency layer"
    # PyPI's torch of the lock is the CUDA build: its CUDA runtime wheels are locked with it.
    _, pins = tool.read_lock(ROOT / "requirements.lock")
    assert pins["torch"] == tool.TORCH and "nvidia-cudnn-cu13" in pins


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context (the last matching pattern wins)."""
    out = False
    for raw in patterns:
        neg = raw.startswith("!")
        pat = raw[1:] if neg else raw
        pat = pat.strip("/")
        candidates = [pat] + ([pat[3:]] if pat.startswith("**/") else [])
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(
            fnmatch.fnmatchcase(prefix, c) or (c == pat[3:] and any(fnmatch.fnmatchcase(p, c) for p in parts[: i + 1]))
            for c in candidates
            for i, prefix in enumerate(prefixes)
        )
        if hit:
            out = not neg
    return out


def test_dockerignore_keeps_data_stores_and_history_out_and_mirrors_gitignore():
    patterns = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    have = {p.strip("/").removeprefix("**/") for p in patterns}
    for line in (ROOT / ".gitignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            assert line.strip("/").removeprefix("**/") in have, f".gitignore's {line!r} is missing from .dockerignore"
    for path in [
        "data/prepared/acdc/cases/patient001/image.npy", "data/raw/BraTS/case.nii.gz", ".venv/bin/python", "mlruns/0/meta.yaml",
        "mlflow.db", "outputs/report.md", "iac-store/mlflow.db", "store/mlruns/1/x", ".git/HEAD",
        "somewhere/patient1.nii.gz", "checkpoints/last.pt", "iac/__pycache__/x.cpython-311.pyc",
    ]:  # fmt: skip
        assert _ignored(path, patterns), f"{path} would be copied into the image"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    needed = [p for p in tracked if p.split("/")[0] in ("iac", "entrypoints", "deploy", "tools") or p in ("MLproject", "pyproject.toml", "requirements.lock", "README.md")]
    assert needed and not [p for p in needed if _ignored(p, patterns)]


def test_runs_as_a_non_root_user_that_git_accepts_on_any_folder():
    steps = _instructions()
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert "useradd" in runs and "git config --system --add safe.directory '*'" in runs
    assert "chown iac:iac /store" in runs


def test_the_commit_is_a_build_argument_and_the_code_version():
    from iac.study.code_version import COMMIT_ENV

    steps = _instructions()
    assert ("ARG", 'GIT_COMMIT=""') in steps
    env = " ".join(args for op, args in steps if op == "ENV")
    assert f"{COMMIT_ENV}=${{GIT_COMMIT}}" in env
    assert '--build-arg GIT_COMMIT="$(git rev-parse HEAD)"' in DOCKERFILE
    readme = (ROOT / "README.md").read_text()
    assert '--build-arg GIT_COMMIT="$(git rev-parse HEAD)"' in readme


def test_gpu_metrics_library_is_installed():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("nvidia-ml-py") for r in extras["gpu"])
    assert "-e '.[gpu]'" in DOCKERFILE


def test_entrypoint_runs_one_mlflow_step_and_docs_mount_absolute_paths():
    steps = _instructions()
    assert ("ENTRYPOINT", '["/opt/iac-lth/deploy/docker-entrypoint.sh"]') in steps
    assert ("CMD", '["-e", "main"]') in steps
    mode = subprocess.run(["git", "ls-files", "-s", "deploy/docker-entrypoint.sh"], cwd=ROOT, capture_output=True, text=True).stdout
    assert mode.startswith("100755"), "the entry point must be executable in git"
    readme = (ROOT / "README.md").read_text()
    docker_section = readme[readme.index("## On a GPU host (Docker)") :].split("\n## ", 1)[0]
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    for text in (DOCKERFILE, docker_section, runbook):
        for host, _ in re.findall(r"-v\s+\"?([^\s:\"]+)\"?:(/[^\s]+)", text):
            assert host.startswith("/"), f"mount {host!r}: host folders are given as absolute paths"
        for value in re.findall(r"-P\s+(?:data|source|out|report_dir)=([^\s`]+)", text):
            assert value.startswith("/"), f"-P ...={value}: folders in the container are absolute"


@pytest.mark.mlflow_cli
def test_entrypoint_runs_a_step_into_the_store(tmp_path):
    """`iac-lth -e prepare -P ...` as the image runs it: mlflow run on the project, results in the store."""
    store = tmp_path / "store"
    env = {**os.environ, "IAC_STORE": str(store), "IAC_PROJECT": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db"}
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        env.pop(var, None)
    out = store / "prepared" / "tiny"
    args = ["-e", "prepare", "-P", f"out={out}", "-P", "phantom_patients=4", "-P", "phantom_size=32", "-P", "workers=1"]
    proc = subprocess.run([str(ENTRYPOINT), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "manifest.json").read_text())["name"] == "phantom"
    assert {"data", "outputs", "mlruns", "mlflow.db"} <= {p.name for p in store.iterdir()}


def test_entrypoint_refuses_a_read_only_store_in_one_line(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root and unshare (as on CI's machine)")
    mount = f"mount --bind '{store}' '{store}' && mount -o remount,ro,bind '{store}' '{store}'"
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"{mount} && exec '{ENTRYPOINT}' -e main"],
        env={**os.environ, "IAC_STORE": str(store)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if "mount" in proc.stderr and proc.returncode != 2:
        pytest.skip(f"no read-only bind mount here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "not writable" in proc.stderr and "-v /abs/path/store" in proc.stderr
    assert list(store.iterdir()) == []
