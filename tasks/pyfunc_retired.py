"""MLflow "model from code" that replaces the code of a retired version (tasks/retention.py).

Loading such a version with plain `mlflow.pyfunc.load_model("models:/<name>/<version>")` runs this
file instead of the original, which raises with the message retirement wrote into the version's
`model_dir` artifact (RETIRED.json): which batch retired it and why. No weights are read.
"""

import json
from pathlib import Path

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class RetiredModel(PythonModel):
    def load_context(self, context):
        info = json.loads((Path(context.artifacts["model_dir"]) / "RETIRED.json").read_text())
        raise RuntimeError(info["message"])

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        raise RuntimeError("this model version was retired and cannot serve")


mlflow.models.set_model(RetiredModel())
