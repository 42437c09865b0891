"""Reading nnU-Net checkpoints without unpickling arbitrary objects.

nnU-Net saves ``checkpoint_final.pth`` as a pickled dict: ``network_weights``
(the state dict), the optimizer state, its logger's lists (numpy scalars),
``init_args`` (plans, dataset.json, a ``torch.device``) and the trainer name.
:func:`read_checkpoint` opens it with ``torch.load(weights_only=True)``,
allowing only the numpy scalar types such a file holds, and
:func:`load_baseline` puts its weights into a network with the skip seam.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["NNUNetCheckpointError", "read_checkpoint", "load_baseline"]


class NNUNetCheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or does not fit the network."""


def _numpy_scalar_globals() -> list[Any]:
    """The numpy globals a pickled numpy scalar (nnU-Net's logged values) refers to."""
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import scalar
    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)]
    return [scalar, np.dtype, *dtypes]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict of an nnU-Net ``.pth`` file, read with ``weights_only=True``.

    Raises:
        NNUNetCheckpointError: no such file, or not an nnU-Net checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise NNUNetCheckpointError(f"no nnU-Net checkpoint at {path}")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NNUNetCheckpointError(f"{path} cannot be read as an nnU-Net checkpoint: {first}") from exc
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise NNUNetCheckpointError(f"{path} is not an nnU-Net checkpoint (no 'network_weights')")
    return ckpt


def load_baseline(network: nn.Module, path: str | Path) -> list[str]:
    """Load a trained baseline's weights into ``network`` (an nnU-Net network with the skip seam).

    Every key of the checkpoint must load; the only keys of ``network`` left
    unloaded may be those of implanted cells (``decoder.skip_modules.*``).

    Returns:
        The network's keys the checkpoint did not hold (the cells').

    Raises:
        NNUNetCheckpointError: the checkpoint does not fit the network.
    """
    state = read_checkpoint(path)["network_weights"]
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}  # DDP-saved
    own = network.state_dict()
    mismatched = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if mismatched:
        raise NNUNetCheckpointError(
            f"{path} does not fit the network: {len(mismatched)} tensors differ in shape (first: {mismatched[0]}); "
            "was it trained with the same plans and configuration?"
        )
    result = network.load_state_dict(state, strict=False)
    foreign = [k for k in result.missing_keys if not k.startswith("decoder.skip_modules.")]
    if result.unexpected_keys or foreign:
        bad = (result.unexpected_keys or foreign)[0]
        raise NNUNetCheckpointError(
            f"{path} does not fit the network ({len(result.unexpected_keys)} unexpected, {len(foreign)} missing "
            f"keys, first: {bad}); was it trained with the same plans and configuration?"
        )
    return list(result.missing_keys)
