"""Model-from-code file that MLflow executes when it loads a registered U-Net."""

import mlflow

from iac.serving import UNetPyfunc

mlflow.models.set_model(UNetPyfunc())
