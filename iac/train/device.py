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
            raise RuntimeError(
                f"device {spec!r} requested but CUDA is not available in this PyTorch "
                f"(torch {torch.__version__}); use device='cpu' or 'auto'"
            )
        count = torch.cuda.device_count()
        if index is not None and index >= count:
            raise RuntimeError(
                f"device {spec!r} requested but only {count} CUDA device(s) are visible "
                f"(valid: {', '.join(f'cuda:{i}' for i in range(count))})"
            )
        return torch.device("cuda", index) if index is not None else torch.device("cuda")
    raise ValueError(f"unknown device {spec!r}; valid: {', '.join(DEVICE_CHOICES)}")


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python ``random``, NumPy and PyTorch (all devices).

    Args:
        seed: The seed (any integer; reduced modulo 2**32 for NumPy).
        deterministic: Also ask PyTorch for deterministic algorithms and turn
            off the cuDNN autotuner. Training passes ``True`` on CPU, where it
            costs nothing and makes resumed runs bit-identical; on CUDA the
            autotuner is worth more than bitwise reproducibility.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        # Required by deterministic cuBLAS should the same process use CUDA.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
        torch.backends.cudnn.benchmark = True


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
