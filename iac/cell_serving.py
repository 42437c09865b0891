"""A registered cell (genotype) as a small MLflow pyfunc model.

Each version of ``iac-cell-<dataset>-<backbone>`` holds the genotype as
``genotype.json`` and its diagram as ``cell.png``; ``iac/cell_serving_model.py``
is the model-from-code file MLflow executes on load. Loading parses the JSON
(no code is unpickled):

    model = mlflow.pyfunc.load_model("models:/iac-cell-phantom-unet@champion")
    genotype = model.unwrap_python_model().genotype   # an iac.nas.genotype.Genotype
    text = model.predict(None)                        # its canonical JSON
"""

from __future__ import annotations


GENOTYPE_ARTIFACT = "genotype"
DIAGRAM_ARTIFACT = "diagram"

try:  # the pyfunc base class only where MLflow is installed
    import warnings

    import mlflow.pyfunc

    warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")

    class CellPyfunc(mlflow.pyfunc.PythonModel):
        """The genotype of one registered cell; ``predict`` returns its JSON whatever the input."""

        def load_context(self, context) -> None:
            from iac.nas.genotype import load_genotype

            self.genotype = load_genotype(context.artifacts[GENOTYPE_ARTIFACT])

        def predict(self, context, model_input, params=None):
            return self.genotype.to_json()

except ImportError:  # pragma: no cover - mlflow is a hard dependency
    CellPyfunc = None  # type: ignore[assignment]
