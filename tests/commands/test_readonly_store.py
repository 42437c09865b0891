"""A tracking store mounted read-only stops a step with one line, before anything is written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _read_only_mount_works(folder: Path) -> bool:
    """Whether a private mount namespace with a read-only bind mount can be made here (root with unshare)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind '{folder}' '{folder}' && mount -o remount,ro,bind '{folder}' '{folder}'"],
        capture_output=True,
    )
    return probe.returncode == 0


def test_prepare_into_a_read_only_store_is_one_line_and_leaves_nothing(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    if not _read_only_mount_works(store):
        pytest.skip("a read-only bind mount needs root and unshare (as on CI's machine)")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db", "PYTHONPATH": str(ROOT)}
    step = (
        f"'{sys.executable}' -m iac.cli prepare --out '{store}/prepared' "
        "--phantom-patients 4 --phantom-size 32 --workers 1"
    )
    # The store is read-only inside this process tree only, as with `docker run -v host:/store:ro`.
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind '{store}' '{store}' && mount -o remount,ro,bind '{store}' '{store}' && exec {step}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "not writable" in errors[0] and "Read-only file system" in errors[0]
    assert "Traceback" not in proc.stderr
    assert list(store.iterdir()) == []


def test_local_store_paths():
    from iac.commands.common import local_store_path

    assert local_store_path("sqlite:////store/mlflow.db") == Path("/store/mlflow.db")
    assert local_store_path("sqlite:///mlflow.db") == Path("mlflow.db")
    assert local_store_path("file:///srv/mlruns") == Path("/srv/mlruns")
    assert local_store_path("./mlruns") == Path("mlruns")
    assert local_store_path("http://tracking:5000") is None
    assert local_store_path("postgresql://u:p@db/mlflow") is None
