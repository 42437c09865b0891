"""MLflow entry point `predict` (run from the project root by `mlflow run`)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iac.commands.predict import predict  # noqa: E402

if __name__ == "__main__":
    predict()
