"""Loading the benchmark scripts (``benchmarks/*.py``, not a package) as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(script: str, name: str) -> ModuleType:
    """``benchmarks/<script>`` imported under ``name`` (its own module object; dataclasses need it registered)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark(script, name)`` -> the script as a fresh module."""
    return _load
