"""Gates: privacy gates decide for an exact method, utility gates inform; approximate methods need all."""

from __future__ import annotations

import yaml

from tasks.env import project_root
from unlearn_ops.verify.gates import POWER_GATES, UTILITY_GATES, check

GATES = {"forget_accuracy": {"max": 0.02}, "retained_test_accuracy_drop": {"max": 0.02}}


def test_an_exact_method_passes_a_failed_utility_gate_as_a_regression():
    metrics = {"forget_accuracy": 0.0, "retained_test_accuracy_drop": 0.093}
    exact = check(metrics, GATES, exact=True)
    assert exact.passed and exact.failed == ["retained_test_accuracy_drop"]
    assert exact.regressions == ["retained_test_accuracy_drop 0.093 > 0.02"]
    assert exact.to_dict()["regressions"] == exact.regressions
    approximate = check(metrics, GATES)                   # the same numbers fail an approximate method
    assert not approximate.passed and approximate.regressions == []


def test_an_exact_method_still_fails_a_privacy_gate():
    failed = check({"forget_accuracy": 0.5, "retained_test_accuracy_drop": 0.5}, GATES, exact=True)
    assert not failed.passed and failed.failed == ["forget_accuracy", "retained_test_accuracy_drop"]
    assert failed.regressions == []                      # nothing was promoted
    missing = check({"retained_test_accuracy_drop": 0.0}, GATES, exact=True)
    assert not missing.passed                            # a missing privacy metric never passes


ITEM_GATES = {"forget_set_size": {"min": 100}, "mia_loss_auc": {"max": 0.61}, "test_accuracy_drop": {"max": 0.02}}


def test_an_exact_methods_privacy_gates_decide_only_where_the_batch_has_power():
    """On 18 samples a retrained model's MIA AUC is noise: an exact method's privacy gates are
    reported there, not decisive; from the power gate's size on, the same value fails it."""
    over = {"mia_loss_auc": 0.75, "test_accuracy_drop": 0.0}
    small = check({**over, "forget_set_size": 18}, ITEM_GATES, exact=True)
    assert small.passed and small.no_power == ["forget_set_size 18 < 100"]
    assert {g.metric: g.decisive for g in small.gates} == {"forget_set_size": False, "mia_loss_auc": False,
                                                           "test_accuracy_drop": False}
    assert small.to_dict()["no_power"] == small.no_power
    large = check({**over, "forget_set_size": 400}, ITEM_GATES, exact=True)
    assert not large.passed and large.failed == ["mia_loss_auc"] and large.no_power == []
    approximate = check({**over, "mia_loss_auc": 0.5, "forget_set_size": 18}, ITEM_GATES)
    assert not approximate.passed and approximate.failed == ["forget_set_size"]  # never passes below the size


def test_a_missing_utility_metric_is_flagged_not_silently_passed():
    verdict = check({"forget_accuracy": 0.0}, GATES, exact=True)
    assert verdict.passed and verdict.regressions == ["retained_test_accuracy_drop missing"]


def test_every_utility_metric_of_params_yaml_is_classified():
    """Each family's gate section: the metrics against the previous champion (`*_drop`,
    `*_change`) are utility gates, every other gate a privacy or power gate."""
    params = yaml.safe_load((project_root() / "params.yaml").read_text())
    metrics = {m for section in ("gates", "text_gates", "gan_gates", "lm_gates")
               for gates in params[section].values() for m in gates}
    utility = {m for m in metrics if m.endswith(("_drop", "_change"))}
    assert utility == UTILITY_GATES
    assert not POWER_GATES & UTILITY_GATES


def test_the_lm_perplexity_gate_admits_retrainings_spread_and_rejects_more_damage():
    """params.yaml `lm_gates`: perplexity is calibrated against retraining (docs/verification.md,
    "Language models"). Retraining moved it at most +9.2 % with the decaying schedule (+14.7 % in
    the demo's constant-rate draw, +9.6 % with the general corpus) and must not be a regression;
    grad_ascent on 4 people on the facts-only build (+21.5 %, 514.98 against 423.72) is the input
    that still fails it."""
    params = yaml.safe_load((project_root() / "params.yaml").read_text())
    gates = {k: v for k, v in params["lm_gates"]["subject"].items() if k == "perplexity_change"}
    assert check({"perplexity_change": 0.147}, gates).passed
    damaged = check({"perplexity_change": 514.98 / 423.72 - 1}, gates)
    assert not damaged.passed and damaged.failed == ["perplexity_change"]
    assert check({"perplexity_change": 514.98 / 423.72 - 1}, gates, exact=True).regressions == [
        "perplexity_change 0.215 > 0.2"]


def test_one_persons_lm_answers_leave_the_exact_retrain_to_its_construction():
    """params.yaml `lm_gates`: one person's 8 answers against 32 never-seen ones give the loss MIA
    a chance spread of ±0.115 — an exact retrain at 0.70 there is reported, not failed; from 4
    people (32 answers) the same value fails it, and an approximate method never passes below."""
    params = yaml.safe_load((project_root() / "params.yaml").read_text())
    gates = params["lm_gates"]["subject"]
    over = {"forget_fact_recall_excess": 0.0, "retain_rougeL_drop": 0.0, "perplexity_change": 0.0,
            "mia_loss_auc": 0.70, "relearn_recall_10": 0.0}
    one = check({**over, "forget_set_size": 8}, gates, exact=True)
    assert one.passed and one.no_power == ["forget_set_size 8 < 32"]
    four = check({**over, "forget_set_size": 32}, gates, exact=True)
    assert not four.passed and four.failed == ["mia_loss_auc"]
    assert check({**over, "mia_loss_auc": 0.5, "forget_set_size": 8}, gates).failed == ["forget_set_size"]


def test_the_lm_relearning_gate_passes_retraining_and_fails_what_comes_back():
    """params.yaml `lm_gates`: after 10 relearning steps on half of the person's facts, the retrained
    models recalled none of the other half in all 6 benchmark runs; lm_token_poisoning on 4 people
    gave back 0.19 and 0.25 on two seeds (docs/benchmarks/lm_token_poisoning.md), the original 0.46."""
    params = yaml.safe_load((project_root() / "params.yaml").read_text())
    gates = {k: v for k, v in params["lm_gates"]["subject"].items() if k == "relearn_recall_10"}
    assert check({"relearn_recall_10": 0.0}, gates).passed
    for came_back in (0.1875, 0.25, 0.46):
        verdict = check({"relearn_recall_10": came_back}, gates)
        assert not verdict.passed and verdict.failed == ["relearn_recall_10"]
