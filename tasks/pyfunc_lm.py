"""MLflow "model from code" for causal LMs (`smollm2-facts`): the `save_pretrained` folder
(safetensors + tokenizer + unlearn_lm.json) travels as the artifact `model_dir`; no pickle.

Logged with `mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"model_dir": ...})`.
`predict` takes questions (a list / array of str, or a DataFrame whose first column holds them)
and returns the greedy answers. Load the model itself with `unlearn_ops.models.lm.load_lm(model_dir)`.
"""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

from unlearn_ops.data.facts import prompt_text
from unlearn_ops.models.lm import generate, load_lm


class LanguageModel(PythonModel):
    def load_context(self, context):
        self.model = load_lm(context.artifacts["model_dir"])

    def predict(self, context, model_input: list[str], params=None) -> list[str]:
        if hasattr(model_input, "iloc"):
            model_input = model_input.iloc[:, 0]
        questions = [str(q) for q in np.asarray(model_input).ravel().tolist()]
        max_new = int((params or {}).get("max_new_tokens", 32))
        return generate(self.model, [prompt_text(q) for q in questions], max_new)


mlflow.models.set_model(LanguageModel())
