"""Model-from-code file that MLflow executes when it loads a registered cell."""

import mlflow

from iac.cell_serving import CellPyfunc

mlflow.models.set_model(CellPyfunc())
