"""The ``iac`` command: every pipeline step plus utilities, as one click group.

The MLflow entry-point scripts in ``entrypoints/`` call the very same click
commands, so a step behaves identically under ``mlflow run`` and ``iac``.
"""

from __future__ import annotations

import importlib

import click

# (sub-command name, module under iac.commands, attribute)
_COMMANDS = [
    ("prepare", "prepare", "prepare"),
    ("retrain", "retrain", "retrain"),
    ("evaluate", "evaluate", "evaluate"),
    ("predict", "predict", "predict"),
    ("search_full", "search", "search_full"),
    ("search_lth", "search", "search_lth"),
    ("stats", "stats", "stats"),
    ("main", "main", "main"),
    ("analyze", "analyze", "analyze"),
    ("registry", "registry", "registry"),
    ("nnunet", "nnunet", "nnunet"),
    ("server", "server", "server"),
]


class _LazyGroup(click.Group):
    """Imports a sub-command only when it is used (torch/mlflow imports are slow)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name, _, _ in _COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        for cmd_name, module, attr in _COMMANDS:
            if cmd_name == name:
                return getattr(importlib.import_module(f"iac.commands.{module}"), attr)
        return None


@click.group(cls=_LazyGroup)
@click.version_option(package_name="iac-lth")
def main() -> None:
    """IAC-LTH: search, retrain, evaluate and compare Implantable Adaptive Cells."""


if __name__ == "__main__":
    main()
