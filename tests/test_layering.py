"""The import direction of the package: the core never reaches up to the edge.

The core packages receive a tracker and never import MLflow, a click command
or the study driver; those sit on top and call the core.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ("data", "models", "nas", "train", "eval", "stats")
# Module prefixes the core must not import.
FORBIDDEN = ("mlflow", "click", "iac.commands", "iac.study", "iac.cli")


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (top level or inside a function)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _reaches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("package", CORE)
def test_core_imports_no_edge_module(package):
    files = sorted((ROOT / "iac" / package).rglob("*.py"))
    assert files, f"iac/{package} has no modules"
    bad = {
        f"{f.relative_to(ROOT)}: {m}" for f in files for m in _imports(f) if _reaches(m, FORBIDDEN)
    }
    assert not bad, f"core modules import the edge: {sorted(bad)}"


def test_the_check_sees_a_forbidden_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from iac.study.driver import run_study\n    import mlflow.pyfunc\n")
    assert {m for m in _imports(module) if _reaches(m, FORBIDDEN)} == {"iac.study.driver", "mlflow.pyfunc"}
