"""Optional ``torch.compile`` of the search cells, with a clean fall-back to eager.

:func:`compile_cells` makes every search cell of a :class:`SearchNetwork` run
through ``torch.compile``. The first call compiles; pruning changes the
cell's modules, which the compiled code is guarded on, so the next call
compiles again (once per pruning event). Where no compiler works (no C++
compiler for the CPU backend, an unsupported platform, or compilation
fails), one warning is issued and the cells run eagerly, computing the same.

The compiled code computes what the eager code computes up to float
rounding (``tests/nas/test_compiled.py``); whether it is faster depends on
the device and on how often the search prunes (``benchmarks/compile_bench.py``
reports the compile time per pruning event and the break-even number of
epochs). Off by default (``SearchConfig.compile_cells``).
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

__all__ = ["compile_cells", "compiler_available"]


def compiler_available(device: torch.device | str = "cpu") -> tuple[bool, str]:
    """Whether ``torch.compile`` can run here, and why not.

    Returns:
        ``(ok, reason)``; ``reason`` is empty when ``ok``.
    """
    try:
        import torch._dynamo as dynamo
    except ImportError as exc:  # a build without the compiler stack
        return False, f"torch._dynamo cannot be imported ({exc})"
    if not dynamo.is_dynamo_supported():
        return False, "torch.compile is not supported on this platform or Python version"
    if torch.device(device).type == "cpu":
        from torch._inductor import config as inductor_config

        cxx = inductor_config.cpp.cxx
        names = [c for c in (cxx if isinstance(cxx, (list, tuple)) else (cxx,)) if c] or ["g++", "c++", "clang++"]
        if not any(shutil.which(str(name)) for name in names):
            return False, f"no C++ compiler ({', '.join(map(str, names))}) for the CPU backend"
    return True, ""


class _CompiledForward:
    """``module.forward`` through ``torch.compile``, falling back to eager on the first failure."""

    def __init__(self, eager: Callable[..., Any], state: dict, backend: str):
        self.eager = eager
        self.state = state  # shared by the cells of one network: one warning, one switch to eager
        self.compiled = torch.compile(eager, backend=backend)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.state["failed"]:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - any compiler error means: run eagerly
                self.state["failed"] = True
                warnings.warn(f"torch.compile of the search cells failed ({type(exc).__name__}: {exc}); "
                              "running them eagerly", RuntimeWarning, stacklevel=2)
        return self.eager(*args, **kwargs)


def compile_cells(net: nn.Module, backend: str = "inductor") -> bool:
    """Run every search cell of ``net`` (a :class:`~iac.nas.supernet.SearchNetwork`) compiled.

    Args:
        net: the search network; its cells are changed in place.
        backend: the ``torch.compile`` backend ("inductor" generates code;
            "aot_eager" only captures the forward and backward graphs,
            which the tests use because it is quick).

    Idempotent. Returns whether the cells are compiled; False (with one
    warning) where :func:`compiler_available` says no.
    """
    device = next(net.parameters()).device
    ok, reason = compiler_available(device) if backend == "inductor" else (True, "")
    if not ok:
        warnings.warn(f"compile_cells: {reason}; the search cells run eagerly", RuntimeWarning, stacklevel=2)
        return False
    state = {"failed": False}
    for cell in net.cells():
        if not isinstance(cell.__dict__.get("forward"), _CompiledForward):
            cell.forward = _CompiledForward(cell.forward, state, backend)
    return True
