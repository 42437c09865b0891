"""The GPU suite runs end to end in its CPU smoke mode, without MLflow or SimpleITK.

``benchmarks/gpu_suite.py --cpu-smoke`` runs in a subprocess whose import
system refuses ``mlflow`` and ``SimpleITK`` (a meta-path finder installed
before the script starts), so the suite cannot grow a dependency a GPU host
may lack; the JSON and Markdown it writes are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "benchmarks" / "gpu_suite.py"
SECTIONS = ["device", "steps", "arch_grad", "determinism", "search"]

# Runs `target` (a script path, or "-c" and code) with mlflow and SimpleITK unimportable.
BLOCKED_RUNNER = textwrap.dedent(
    """
    import runpy, sys

    class BlockHeavyImports:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("mlflow", "SimpleITK"):
                raise ImportError(f"{name} is blocked: the GPU suite must run without it")
            return None

    sys.meta_path.insert(0, BlockHeavyImports())
    for mod in [m for m in sys.modules if m.split(".")[0] in ("mlflow", "SimpleITK")]:
        del sys.modules[mod]
    if sys.argv[1] == "-c":
        exec(sys.argv[2])
    else:
        sys.argv = sys.argv[1:]
        runpy.run_path(sys.argv[0], run_name="__main__")
    """
)


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.run([sys.executable, "-c", BLOCKED_RUNNER, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_the_runner_really_blocks_mlflow_and_simpleitk():
    for mod in ("mlflow", "SimpleITK"):
        res = _run("-c", f"import {mod}")
        assert res.returncode != 0 and "is blocked" in res.stderr, (mod, res.stderr[-500:])
    # ... and the project's SimpleITK-backed modules with them
    res = _run("-c", "import iac.data.store")
    assert res.returncode != 0 and "SimpleITK is blocked" in res.stderr


def test_cpu_smoke_writes_every_section(tmp_path):
    out = tmp_path / "suite"
    res = _run(str(SUITE), "--cpu-smoke", "--out", str(out), "--budget", "500")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    report = json.loads((out / "gpu_suite.json").read_text())
    assert report["mode"] == "cpu-smoke"
    assert list(report["sections"]) == SECTIONS
    status = {name: entry["status"] for name, entry in report["sections"].items()}
    assert status == {name: "ok" for name in SECTIONS}, report["sections"]
    sec = {name: entry["result"] for name, entry in report["sections"].items()}

    assert sec["device"]["device"] == "cpu" and sec["device"]["supernet_step_ok"] is True
    rows = sec["steps"]["rows"]
    assert {(r["precision"], r["model"]) for r in rows} == {
        (p, m) for p in ("fp32", "amp") for m in ("plain", "supernet-all", "supernet-1op")
    }
    assert all(r["ms"] > 0 and r["x_plain_time"] > 0 for r in rows)
    assert all(r["dtype"] == "torch.bfloat16" for r in rows if r["precision"] == "amp")  # CPU autocast ran

    grads = {r["variant"]: r for r in sec["arch_grad"]["rows"]}
    assert grads["fp32"]["n"] > 0 and grads["fp32"]["zeros"] < grads["fp32"]["n"]
    for name, row in grads.items():
        assert "error" not in row, (name, row)
        assert row["finite"] if name != "fp32" else True
        assert 0 <= row["rel_error"] < 0.5 and row["cosine"] > 0.9, (name, row)

    det = sec["determinism"]
    assert det["cublas_workspace_config"] == ":4096:8"
    assert det["strict"] is True and det["equal_genotypes"] is True and det["equal_arch_weights"] is True

    runs = sec["search"]["runs"]
    assert set(runs) == {"full", "lth"}
    assert len(runs["full"]["epochs"]) == report["settings"]["search_epochs"]
    assert runs["full"]["events"] == 0 and not runs["full"]["epoch_seconds_pruned"]
    assert runs["lth"]["events"] > 0 and runs["lth"]["epoch_seconds_pruned"]  # LTH pruned within the run

    md = (out / "gpu_suite.md").read_text()
    for name in SECTIONS:
        assert f"## {name}: ok" in md
    assert "| px | precision | model | ms/step |" in md and "| fp16, unscaled |" in md


def test_gpu_mode_without_cuda_is_one_clear_error(tmp_path):
    res = _run(str(SUITE), "--out", str(tmp_path / "x"), "--device", "cuda")
    assert res.returncode == 2 and "no CUDA device is available" in res.stderr and "Traceback" not in res.stderr
