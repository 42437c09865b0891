"""MLflow entry point `search_lth` (run from the project root by `mlflow run`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iac.commands.search import search_lth  # noqa: E402

if __name__ == "__main__":
    search_lth()
