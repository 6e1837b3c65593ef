"""Linear probe on penultimate features: is the forgotten class still linearly separable?

Train a logistic regression on `model.embed(x)` to tell the forgotten class(es) from the other
classes, on one half of the probe data, and report balanced accuracy on the other half. A model
whose features still encode the class scores near 1.0 even when its output never predicts that
class; the retrained model's score is the reference (features learned without the class still
separate it partly, so the reference is not 0.5).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import nn

from unlearn_ops.data.splits import Part
from unlearn_ops.training import inference_batch_size


@torch.no_grad()
def embeddings(model: nn.Module, x: torch.Tensor, batch_size: int | None = None) -> np.ndarray:
    device = next(model.parameters()).device
    batch_size = batch_size or inference_batch_size(device)
    was = model.training
    model.eval()
    out = [model.embed(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    model.train(was)
    return torch.cat(out).numpy()


def feature_probe(model: nn.Module, data: Part, forget_classes: list[int], seed: int = 0) -> float:
    """Balanced accuracy of a linear probe separating forget-class samples from the rest."""
    feats = embeddings(model, data.x)
    target = np.isin(data.y.numpy(), forget_classes).astype(int)
    if target.min() == target.max():
        return float("nan")
    xtr, xte, ytr, yte = train_test_split(feats, target, test_size=0.5, random_state=seed, stratify=target)
    scaler = StandardScaler().fit(xtr)
    clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(scaler.transform(xtr), ytr)
    return float(balanced_accuracy_score(yte, clf.predict(scaler.transform(xte))))
