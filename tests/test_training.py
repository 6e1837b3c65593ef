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


def test_cached_predictions_compute_each_row_once_and_give_the_same_logits() -> None:
    from unlearn_ops.training import cached_predictions

    torch.manual_seed(0)
    model = SmallCNN().eval()
    x = torch.randn(300, 1, 28, 28)
    plain_all, plain_part = predict_logits(model, x), predict_logits(model, x[50:120])
    with cached_predictions() as cache:
        cached_all = predict_logits(model, x)
        cached_part = predict_logits(model, x[50:120])          # a part of a part: no new forward pass
        assert (cache.computed, cache.reused) == (300, 70)
        with torch.no_grad():
            model.fc1.bias.add_(1.0)                            # an in-place update: computed afresh
        changed = predict_logits(model, x[:10])
        assert cache.computed == 310
    assert torch.equal(cached_all, plain_all) and torch.equal(cached_part, plain_part)
    assert torch.equal(changed, predict_logits(model, x[:10]))
    assert not torch.equal(changed, plain_all[:10])
