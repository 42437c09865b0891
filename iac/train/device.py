"""Devices, seeding, mixed precision and memory format.

Everything that differs between CPU and CUDA lives here, so training code
never hard-codes a device: it asks :func:`resolve_device` once, then uses
:func:`autocast`, :func:`make_grad_scaler` and :func:`to_channels_last`,
which are no-ops on CPU.
"""

from __future__ import annotations

import contextlib
import os
import random
from typing import ContextManager

import numpy as np
import torch
from torch import nn

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
# Mixed-precision dtype on CUDA. float16 with a GradScaler works on every
# CUDA GPU; bfloat16 would not need the scaler but is not universal.
AMP_DTYPE = torch.float16


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn a device setting into a usable :class:`torch.device`.

    Args:
        spec: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``
            (the current CUDA device) or ``"cuda:N"``.

    Returns:
        The device.

    Raises:
        ValueError: ``spec`` is not one of the forms above.
        RuntimeError: CUDA is requested but unavailable, or ``N`` is out of range.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ValueError(f"device must be a string, one of {DEVICE_CHOICES}; got {spec!r}")
    text = spec.strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        index: int | None = None
        if text != "cuda":
            suffix = text[len("cuda:") :]
            if not suffix.isdigit():
                raise ValueError(
                    f"device {spec!r}: the CUDA index must be a non-negative integer, e.g. 'cuda:0'"
                )
            index = int(suffix)
        if not torch.cuda.is_available():
            raise RuntimeError(cuda_unavailable_reason(spec))
        count = torch.cuda.device_count()
        if index is not None and index >= count:
            raise RuntimeError(
                f"device {spec!r} requested but only {count} CUDA device(s) are visible "
                f"(valid: {', '.join(f'cuda:{i}' for i in range(count))})"
            )
        return torch.device("cuda", index) if index is not None else torch.device("cuda")
    raise ValueError(f"unknown device {spec!r}; valid: {', '.join(DEVICE_CHOICES)}")


# Oldest Linux NVIDIA driver of each CUDA major release (NVIDIA's CUDA compatibility table).
MIN_DRIVER = {"11": "450.80.02", "12": "525.60.13", "13": "580.65.06"}


def cuda_unavailable_reason(spec: str) -> str:
    """One line saying why CUDA cannot be used here and what to do: a CPU-only PyTorch, no GPU, or a driver too old."""
    build = torch.version.cuda
    init_error = ""
    if build is not None:
        try:
            torch.cuda.init()  # raises with PyTorch's own reason where is_available() only warns
        except (RuntimeError, AssertionError) as err:
            init_error = str(err)
    return describe_cuda_failure(spec, torch.__version__, build, init_error, driver_versions())


def driver_versions() -> tuple[str, str] | None:
    """``(driver version, newest CUDA it supports)`` from NVML (``nvidia-ml-py``); None without a driver or NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            driver = pynvml.nvmlSystemGetDriverVersion()
            cuda = pynvml.nvmlSystemGetCudaDriverVersion()  # e.g. 12040 for CUDA 12.4
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no module, no library, no driver: NVML raises its own error classes
        return None
    driver = driver.decode() if isinstance(driver, bytes) else str(driver)
    return driver, f"{cuda // 1000}.{cuda % 1000 // 10}"


def _major_minor(version: str) -> tuple[int, int]:
    parts = [int(p) for p in version.split(".")[:2] if p.isdigit()]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def describe_cuda_failure(
    spec: str, torch_version: str, build_cuda: str | None, init_error: str, driver: tuple[str, str] | None
) -> str:
    """The one-line error for ``device=spec`` when CUDA is unavailable (a pure function of what was found).

    Args:
        spec: The requested device (``"cuda"``, ``"cuda:1"``).
        torch_version: ``torch.__version__``.
        build_cuda: ``torch.version.cuda`` (None for a CPU-only build).
        init_error: The message of ``torch.cuda.init()`` ("" if it did not raise).
        driver: ``(driver version, newest CUDA it supports)`` from NVML, or None.
    """
    if build_cuda is None:
        return (
            f"device {spec!r}: this PyTorch ({torch_version}) is a CPU-only build; "
            "use device=cpu or auto, or run the CUDA build (the Docker image, or torch from requirements.lock on a GPU host)"
        )
    need = MIN_DRIVER.get(build_cuda.split(".")[0])
    text = init_error.lower()
    too_old = "too old" in text or "insufficient" in text
    if driver is not None and _major_minor(driver[1]) < _major_minor(build_cuda):
        too_old = True
    if too_old:
        found = f"driver {driver[0]} supports CUDA up to {driver[1]}" if driver else "the NVIDIA driver is older"
        return (
            f"device {spec!r}: this PyTorch ({torch_version}) is built for CUDA {build_cuda} but {found}; "
            f"update the NVIDIA driver{f' to {need} or newer' if need else ''}, or use device=cpu"
        )
    if driver is None or "no nvidia driver" in text or "no cuda gpus" in text:
        return (
            f"device {spec!r}: no NVIDIA GPU is visible to this process (no driver, or a container started without "
            "`--gpus all` and the NVIDIA Container Toolkit); use device=cpu or auto"
        )
    reason = init_error.strip().splitlines()[0] if init_error.strip() else "torch.cuda.is_available() is False"
    return f"device {spec!r}: CUDA is not usable here ({reason}); use device=cpu or auto"


def use_deterministic(device: torch.device, deterministic: bool) -> bool:
    """Whether a run uses deterministic algorithms: always on CPU (it costs nothing there), on CUDA when asked."""
    return bool(deterministic) or device.type == "cpu"


def set_deterministic(on: bool) -> None:
    """Ask PyTorch for deterministic algorithms (``on``) or for the fastest ones.

    On: ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (deterministic cuBLAS; must be set before
    the first cuBLAS call of the process, so it is kept when already set),
    ``torch.use_deterministic_algorithms(True, warn_only=True)``, cuDNN deterministic
    and its autotuner off. An operation with no deterministic CUDA kernel (PyTorch
    lists them under ``torch.use_deterministic_algorithms``; here the cross-entropy's
    NLLLoss and the backward of bilinear resizing) warns once and stays
    nondeterministic instead of failing the run; see README, "Reproducibility".
    Off: cuDNN's autotuner picks the fastest kernels (not bitwise reproducible).
    """
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python ``random``, NumPy and PyTorch (all devices).

    Args:
        seed: The seed (any integer; reduced modulo 2**32 for NumPy).
        deterministic: Also ask PyTorch for deterministic algorithms and turn
            off the cuDNN autotuner (:func:`set_deterministic`). Training and
            search pass :func:`use_deterministic`: always on CPU, where it costs
            nothing and makes resumed runs bit-identical; on CUDA only with the
            ``deterministic`` switch, since the autotuner is faster.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    set_deterministic(deterministic)


def amp_enabled(device: torch.device, amp: bool) -> bool:
    """Whether mixed precision is actually used: requested and on CUDA."""
    return bool(amp) and device.type == "cuda"


def autocast(device: torch.device, amp: bool) -> ContextManager:
    """``torch.autocast`` on CUDA when ``amp``; a null context otherwise."""
    if amp_enabled(device, amp):
        return torch.autocast(device_type="cuda", dtype=AMP_DTYPE)
    return contextlib.nullcontext()


def make_grad_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only with mixed precision on CUDA.

    A disabled scaler passes ``backward``/``step`` through unchanged, so the
    training step is written once for both devices.
    """
    enabled = amp_enabled(device, amp)
    return torch.amp.GradScaler("cuda" if enabled else "cpu", enabled=enabled)


def channels_last_enabled(device: torch.device, channels_last: bool) -> bool:
    """Whether the channels-last memory format is used: requested and on CUDA."""
    return bool(channels_last) and device.type == "cuda"


def to_channels_last(x: nn.Module | torch.Tensor, device: torch.device, channels_last: bool):
    """Convert a module or a 4-D tensor to channels-last when enabled on CUDA.

    Other tensors (not 4-D) and every CPU case are returned unchanged.
    """
    if not channels_last_enabled(device, channels_last):
        return x
    if isinstance(x, nn.Module):
        return x.to(memory_format=torch.channels_last)
    if x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
