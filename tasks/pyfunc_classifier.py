"""MLflow "model from code" for our classifiers: weights travel as safetensors + spec.json.

Logged with `mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"model_dir": ...})`, so
the registry never holds a pickle and loading never unpickles. `predict` takes a float array of
images (N×C×H×W, values in [0, 1]) and returns class probabilities.
"""

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel

from unlearn_ops.models import load_model


class ClassifierModel(PythonModel):
    def load_context(self, context):
        self.model, self.spec = load_model(context.artifacts["model_dir"])

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return torch.softmax(self.model(x), dim=1).numpy()


mlflow.models.set_model(ClassifierModel())
