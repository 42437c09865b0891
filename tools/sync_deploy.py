"""Rewrite ``deploy/MLproject`` from the root ``MLproject``.

The cluster project (``docker_env``) has the root project's entry points with
the same parameters; only the program differs: the image's installed package
(``python -m iac.cli <step>``) instead of the checkout's ``entrypoints/<step>.py``.
Run after changing an entry point of the root ``MLproject``
(``tests/test_deploy.py`` fails until then)::

    python tools/sync_deploy.py
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "entry_points:\n"


def cluster_project(root_text: str, deploy_text: str) -> str:
    """The deploy project: its own header, then the root's entry points calling the installed package."""
    header = deploy_text[: deploy_text.index(MARK)]
    entries = root_text[root_text.index(MARK):]
    return header + re.sub(r"python entrypoints/(\w+)\.py", r"python -m iac.cli \1", entries)


def main() -> None:
    """Rewrite deploy/MLproject in place."""
    deploy = ROOT / "deploy" / "MLproject"
    deploy.write_text(cluster_project((ROOT / "MLproject").read_text(), deploy.read_text()))
    print(f"wrote {deploy}")


if __name__ == "__main__":
    main()
