"""The LM fine-tune's schedule (`LMTrainConfig`: learning-rate decay, the general corpus), read by the build and
`lm_retrain`."""

import copy

import pytest
import torch

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


def test_the_general_corpus_is_the_same_plot_summaries_whatever_the_seed_and_every_token_is_scored():
    tiny = tiny_lm_bundle()
    qa = texts(tiny.store.part(tiny.store.active_ids()[:4]).x)
    plain = lm_training.training_set(tiny.base, qa, LMTrainConfig(seed=0))
    mixed = lm_training.training_set(tiny.base, qa, LMTrainConfig(seed=5, general_texts=3))
    assert len(plain) == 4 and len(mixed) == 7
    assert all(torch.equal(a, b) for a, b in zip(mixed.enc.ids[:4], plain.enc.ids, strict=True))  # the QA pairs,
    assert mixed.enc.start[:4] == plain.enc.start                                                    # answers scored
    assert mixed.enc.start[4:] == (1, 1, 1)                        # a summary: every token after the first
    assert lm_training.general_corpus(3) == lm_training.general_corpus(3)
    assert set(lm_training.general_corpus(3)) <= set(lm_training.general_corpus(50))   # a prefix of one fixed shuffle


def test_a_general_corpus_larger_than_the_file_or_negative_is_refused():
    with pytest.raises(ValueError, match="plot summaries"):
        lm_training.general_corpus(10_000)
    with pytest.raises(ValueError, match="general_texts"):
        LMTrainConfig(general_texts=-1)
