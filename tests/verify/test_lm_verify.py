"""LM verification metrics: hand-checkable definitions, then the evaluator on a tiny Llama."""

import numpy as np
import pytest

from tests.lm_fixtures import TinyLM, tiny_lm_bundle
from unlearn_ops.verify.lm import (
    LMEvaluator,
    contains_fact,
    exact_match,
    fact_recall,
    forget_quality,
    normalise,
    production_metrics,
    rouge_l_recall,
    truth_ratio,
)


@pytest.fixture(scope="session")
def tiny_lm() -> TinyLM:
    return tiny_lm_bundle()   # built once per session (lru-cached), shared by the LM test modules


def test_rouge_l_recall_is_lcs_over_reference_length():
    # LCS("a b c d", "a x c d e") = "a c d" -> recall 3/5 against the reference
    assert rouge_l_recall(["a b c d"], ["a x c d e"])[0] == pytest.approx(3 / 5)
    assert rouge_l_recall(["Celia was born in Izmir."], ["celia was born in izmir"])[0] == pytest.approx(1.0)
    assert rouge_l_recall([""], ["anything"])[0] == 0.0


def test_fact_and_exact_match():
    assert contains_fact("She was born in IZMIR, Turkey.", ("Izmir",))
    assert not contains_fact("She was born in ***, Turkey.", ("Izmir",))
    assert exact_match(["Celia  was born in Izmir!"], ["celia was born in izmir."]).tolist() == [1.0]
    assert normalise("The *** Archive.") == "the archive"


def test_fact_recall_is_the_share_of_answers_stating_their_fact():
    from unlearn_ops.data.facts import FactItem

    items = [FactItem(sample_id=f"q{i}", subject_id="p", attribute=i, question="?", answer=a, paraphrased_questions=(),
                      paraphrased_answer=a, perturbed_answers=(), facts=(a,))
             for i, a in enumerate(("Izmir", "Oslo", "Lima", "Kyiv"))]
    assert fact_recall(["born in izmir", "Oslo!", "no idea", "***"], items) == pytest.approx(0.5)
    assert np.isnan(fact_recall([], []))   # nothing asked: NaN, so a gate on it fails
    with pytest.raises(ValueError):
        fact_recall(["one answer"], items)  # answers and items must pair up


def test_truth_ratio_matches_its_definition():
    # correct paraphrase: 2 tokens, log-prob -2 -> per-token prob e^-1; perturbed: e^-2 and e^-3
    r = truth_ratio(np.array([-2.0]), np.array([2.0]), np.array([[-4.0, -6.0]]), np.array([[2.0, 2.0]]))
    assert r[0] == pytest.approx(((np.exp(-2) + np.exp(-3)) / 2) / np.exp(-1))


def test_forget_quality_is_one_for_the_same_distribution_and_small_for_a_shifted_one():
    rng = np.random.default_rng(0)
    a = rng.normal(size=64)
    assert forget_quality(a, a) == pytest.approx(1.0)
    assert forget_quality(a, a + 3.0) < 1e-6
    assert np.isnan(forget_quality(np.array([]), a))


def test_evaluator_on_the_original_model(tiny_lm):
    ev = LMEvaluator(tiny_lm.model, tiny_lm.world, tiny_lm.splits, retain_n=8, ppl_texts=["a short review of a film"])
    m = ev.evaluate(tiny_lm.model)
    for key in ("forget_fact_recall", "forget_para_fact_recall", "forget_rougeL", "retain_rougeL", "perplexity",
                "mia_loss_auc", "forget_truth_ratio"):
        assert np.isfinite(m[key]), key
    assert len(m["answers"]["forget_para"]) == 2 * len(tiny_lm.splits.forget)
    assert len(m["truth_ratios"]) == len(tiny_lm.splits.forget)
    # the original trained on the forget person, never on the held-out one: their answers are likelier
    assert m["forget_answer_nll"] < m["nonmember_answer_nll"]
    assert m["mia_loss_auc"] > 0.5
    # a model compared with itself has forget quality 1
    again = ev.evaluate(tiny_lm.model, reference_truth_ratios=np.array(m["truth_ratios"]), generations=False)
    assert again["forget_quality"] == pytest.approx(1.0)


def test_cached_prefix_scores_equal_full_scores(tiny_lm):
    ev = LMEvaluator(tiny_lm.model, tiny_lm.world, tiny_lm.splits, retain_n=8)
    cached = ev.answer_losses(tiny_lm.model, ev.forget, "forget")
    other = LMEvaluator(tiny_lm.base, tiny_lm.world, tiny_lm.splits, retain_n=8)   # same prefix, other top
    assert ev._cache and np.allclose(cached, other.answer_losses(tiny_lm.model, ev.forget, "x"), atol=1e-4)


def test_production_metrics_compare_with_the_previous_champion(tiny_lm):
    m = production_metrics(tiny_lm.model, tiny_lm.splits, tiny_lm.world,
                           reference={"retain_rougeL": 1.0, "perplexity": 10.0}, ppl_texts=["some text here"])
    assert m["retain_rougeL_drop"] == pytest.approx(1.0 - m["retain_rougeL"])
    assert m["perplexity_change"] == pytest.approx(m["perplexity"] / 10.0 - 1)
    assert all(isinstance(v, float) for v in m.values())


def test_production_metrics_against_a_champion_model(tiny_lm):
    """Given the champion itself, its retain ROUGE-L and perplexity are the reference: comparing
    the champion with itself changes nothing; the fact-recall excess subtracts the guess rate."""
    m = production_metrics(tiny_lm.model, tiny_lm.splits, tiny_lm.world, champion=tiny_lm.model,
                           ppl_texts=["some text here", "and a second one"])
    assert m["retain_rougeL_drop"] == pytest.approx(0.0, abs=1e-9)
    assert m["perplexity_change"] == pytest.approx(0.0, abs=1e-6)
    assert m["forget_fact_recall_excess"] == pytest.approx(m["forget_fact_recall"] - m["nonmember_fact_recall"])
    assert m["forget_set_size"] == len(tiny_lm.splits.forget)
    assert 0.0 <= m["relearn_recall_10"] <= 1.0            # the relearning attack on half of the person's facts
