"""MLflow "model from code" for the GAN: weights travel as safetensors + spec.json (no pickle).

Logged with `mlflow.pyfunc.log_model(python_model=<this file>, artifacts={"model_dir": ...})`.
`predict` takes latent vectors (an N×z_dim float array, standard normal) and returns the
generated images (N×1×28×28 float32 in [0, 1]). The discriminator and the reference classifier
are in the same artifact; load them with `unlearn_ops.models.gan.load_gan(model_dir)`.
"""

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel

from unlearn_ops.models.gan import load_gan


class GanModel(PythonModel):
    def load_context(self, context):
        self.gan = load_gan(context.artifacts["model_dir"])

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        z = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.gan.generator(z).numpy()


mlflow.models.set_model(GanModel())
