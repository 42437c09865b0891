"""Bad GPU set-ups give one line that says what is wrong and what to do, before any work starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from iac.train.device import describe_cuda_failure, set_deterministic, use_deterministic

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_only_build_is_named():
    msg = describe_cuda_failure("cuda", "2.13.0+cpu", None, "", None)
    assert "CPU-only build" in msg and "2.13.0+cpu" in msg and "device=cpu" in msg and "\n" not in msg


def test_driver_older_than_the_build_names_both_versions_and_the_driver_to_install():
    # What NVML reports on a host whose driver 535 supports CUDA 12.2, with torch built for CUDA 13.0.
    msg = describe_cuda_failure("cuda:0", "2.13.0", "13.0", "", ("535.183.01", "12.2"))
    assert "built for CUDA 13.0" in msg and "535.183.01" in msg and "12.2" in msg and "580.65.06" in msg
    # Without NVML, PyTorch's own message decides.
    init_error = "The NVIDIA driver on your system is too old (found version 12020). Please update your GPU driver"
    assert "update the NVIDIA driver to 580.65.06" in describe_cuda_failure("cuda", "2.13.0", "13.0", init_error, None)


def test_no_gpu_in_a_container_points_at_gpus_all():
    msg = describe_cuda_failure("cuda", "2.13.0", "13.0", "Found no NVIDIA driver on your system.", None)
    assert "no NVIDIA GPU is visible" in msg and "--gpus all" in msg
    # A driver new enough for the build is not blamed.
    other = describe_cuda_failure("cuda", "2.13.0", "13.0", "CUDA error: out of memory", ("580.95.05", "13.0"))
    assert "driver" not in other.split("(")[0] and "out of memory" in other


@pytest.mark.skipif(torch.cuda.is_available(), reason="device=cuda is usable on this machine")
def test_cli_device_cuda_without_a_gpu_is_one_line_and_writes_nothing(tmp_path):
    store = tmp_path / "store"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "iac.cli", "search_lth", "--data", str(tmp_path / "prepared"), "--device", "cuda"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--device" in errors[0] and "CPU-only build" in errors[0]
    assert "Traceback" not in proc.stderr
    assert not store.exists() and not (tmp_path / "mlruns").exists()


def test_determinism_is_always_on_for_cpu_and_a_switch_on_cuda():
    from iac.commands.common import deterministic_tag

    assert deterministic_tag("cpu", False) == "true"
    assert use_deterministic(torch.device("cpu"), False)
    assert not use_deterministic(torch.device("cuda"), False)
    assert use_deterministic(torch.device("cuda"), True)
    before = torch.are_deterministic_algorithms_enabled()
    try:
        set_deterministic(True)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
        assert not torch.backends.cudnn.benchmark
        set_deterministic(False)
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    finally:
        set_deterministic(before)
