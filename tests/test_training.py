"""unlearn_ops.training: inference helpers."""

import torch

from unlearn_ops.models.classifiers import SmallCNN
from unlearn_ops.training import CPU_PREDICT_BATCH, predict_logits


def test_predict_logits_same_for_any_batch_size_and_keeps_mode() -> None:
    torch.manual_seed(0)
    model = SmallCNN().train()
    x = torch.randn(CPU_PREDICT_BATCH * 2 + 7, 1, 28, 28)  # a ragged last batch
    default = predict_logits(model, x)
    assert default.shape == (len(x), 10)
    assert torch.allclose(default, predict_logits(model, x, batch_size=1024), atol=1e-5)
    assert model.training  # eval mode for prediction only, the caller's mode restored
