"""nnU-Net is an optional extra: only iac/nnunet imports it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NNUNET_MODULES = ("nnunetv2", "dynamic_network_architectures", "batchgenerators", "batchgeneratorsv2")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_iac_nnunet_imports_nnunet():
    files = [f for f in sorted((ROOT / "iac").rglob("*.py")) if "nnunet" not in f.relative_to(ROOT / "iac").parts[:1]]
    assert files
    bad = sorted(
        f"{f.relative_to(ROOT)}: {m}" for f in files for m in _imports(f)
        if any(m == p or m.startswith(p + ".") for p in NNUNET_MODULES)
    )
    assert not bad, f"modules outside iac/nnunet import nnU-Net: {bad}"


def test_iac_nnunet_does_use_nnunet():
    used = set().union(*(_imports(f) for f in (ROOT / "iac" / "nnunet").rglob("*.py")))
    assert any(m.startswith("dynamic_network_architectures") for m in used)
