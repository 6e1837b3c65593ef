"""The LM fine-tune's learning-rate schedule (`LMTrainConfig.lr_decay`), read by the build and `lm_retrain`."""

import copy

import pytest

from tests.lm_fixtures import tiny_lm_bundle
from unlearn_ops import lm_training
from unlearn_ops.data.facts import texts
from unlearn_ops.lm_training import LMTrainConfig, fit_lm


@pytest.mark.parametrize("decay", ["none", "linear"])
def test_each_step_runs_at_the_scheduled_rate(decay, monkeypatch):
    tiny = tiny_lm_bundle()
    rates = []
    real_step = lm_training.step

    def recording_step(model, opt, loss, grad_clip):
        rates.append(opt.param_groups[0]["lr"])
        return real_step(model, opt, loss, grad_clip)

    monkeypatch.setattr(lm_training, "step", recording_step)
    data = texts(tiny.store.part(tiny.store.active_ids()[:12]).x)
    cfg = LMTrainConfig(epochs=2, lr=0.01, batch_size=4, seed=0, device="cpu", lr_decay=decay)
    fit_lm(copy.deepcopy(tiny.base), data, cfg)
    total = 2 * 3
    expected = [0.01 * (1 - t / total) if decay == "linear" else 0.01 for t in range(total)]
    assert rates == pytest.approx(expected)


def test_an_unknown_decay_is_refused():
    with pytest.raises(ValueError, match="lr_decay must be one of"):
        LMTrainConfig(lr_decay="cosine")
