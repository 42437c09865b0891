"""Checkpoints that load without unpickling code, and RNG state capture.

A checkpoint is a plain nested structure of tensors, dicts, lists, tuples and
scalars, written atomically (temporary file + ``os.replace``) so an
interruption never leaves a truncated file, and read back with
``torch.load(..., weights_only=True)``. Random-number generator states are
converted to that vocabulary by :func:`capture_rng_state`.
"""

from __future__ import annotations

import hashlib
import io
import random
import zipfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from iac.atomic import atomic_write
from iac.faults import fault_point


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or holds unsupported objects."""


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically.

    Args:
        path: Target file; its folder is created if needed.
        state: Nested dicts/lists/tuples of tensors, str, int, float, bool and
            None (what ``torch.load(weights_only=True)`` accepts).

    Returns:
        The path written.

    Raises:
        CheckpointError: ``state`` holds an object of another type (checked
            before anything is written).
    """
    _check_plain(state, "state")
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getbuffer()

    def write(fh) -> None:
        # Two halves with the fault point between them: a kill here leaves a
        # half-written temporary file and the previous checkpoint in place.
        half = len(data) // 2
        fh.write(data[:half])
        fh.flush()
        fault_point("checkpoint_write")
        fh.write(data[half:])

    return atomic_write(path, write)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_checkpoint(
    path: str | Path, map_location: str | torch.device | None = "cpu", expected_keys: Iterable[str] = ()
) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: The checkpoint file.
        map_location: Where tensors are loaded (default CPU, so a checkpoint
            written on GPU loads anywhere).
        expected_keys: Top-level keys the checkpoint must hold.

    Returns:
        The stored dict.

    Raises:
        CheckpointError: The file is missing, truncated (its zip archive does
            not verify), not a weights-only checkpoint, or lacks an expected key.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    problem = zip_problem(path)
    if problem:
        raise CheckpointError(f"checkpoint {str(path)!r} is truncated or corrupt ({problem})")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in several types
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be loaded with weights_only=True: {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, expected a dict")
    missing = [k for k in expected_keys if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r} lacks {', '.join(missing)}; it was not written by this step")
    return state


def zip_problem(path: str | Path) -> str | None:
    """Why a checkpoint file's zip archive does not verify (None when every member's CRC checks).

    ``torch.save`` writes a zip archive; a file cut short loses its central
    directory, and a corrupted member fails its CRC.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return str(exc) or type(exc).__name__
    return f"member {bad} fails its CRC" if bad else None


_PLAIN_SCALARS = (str, int, float, bool, type(None))


def _check_plain(obj: Any, where: str) -> None:
    if isinstance(obj, _PLAIN_SCALARS) or isinstance(obj, torch.Tensor):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise CheckpointError(f"{where}: key {k!r} is a {type(k).__name__}; use str or int keys")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise CheckpointError(
        f"{where} is a {type(obj).__name__}; checkpoints hold only tensors, dicts, lists, tuples, "
        "str, int, float, bool and None"
    )


def capture_rng_state() -> dict[str, Any]:
    """The states of Python ``random``, NumPy's global generator and PyTorch.

    Returns:
        A dict of tensors, lists and scalars (checkpoint-safe):
        ``torch`` (ByteTensor), ``cuda`` (list of ByteTensors, empty without
        CUDA), ``numpy`` (dict), ``python`` (list).
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),  # uint32 values fit
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": [int(version), [int(x) for x in internal], gauss_next],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`capture_rng_state`.

    CUDA states are restored only when CUDA is available (a CPU resume of a
    GPU run keeps going with CPU generators restored).
    """
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        n = min(len(cuda_states), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in cuda_states[:n]])
    npst = state["numpy"]
    keys = npst["keys"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state(
        (npst["kind"], keys.astype(np.uint32), int(npst["pos"]), int(npst["has_gauss"]), float(npst["cached_gaussian"]))
    )
    version, internal, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss_next))


def check_checkpoint_header(state, what: str, kind: str, version: int, keys, afresh: str) -> None:
    """Raise a one-line :class:`CheckpointError` unless ``state`` has ``kind``, format ``version`` and ``keys``.

    Args:
        state: the loaded checkpoint.
        what: how the messages name it (``"search"``, ``"training"``).
        kind, version, keys: what this code writes and reads.
        afresh: the advice when the version differs (e.g. ``"start afresh (resume='')"``).
    """
    if state.get("kind") != kind:
        raise CheckpointError(f"not a {what} checkpoint (kind {state.get('kind')!r}, expected {kind!r})")
    if state.get("version") != version:
        raise CheckpointError(
            f"the {what} checkpoint has format version {state.get('version')!r}, written by another code version "
            f"(iac {state.get('code', 'unknown')}); this code reads version {version}: {afresh}"
        )
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"the {what} checkpoint lacks {', '.join(missing)}")
