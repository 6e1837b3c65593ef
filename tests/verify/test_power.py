"""What the batch alone decides (`precheck`) and whether the gates can judge this forget set at all
(`power`: the champion measured as its own candidate must be rejected by the gates' margin)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import FORGET_CLASS
from unlearn_ops.families import family
from unlearn_ops.methods import run_method
from unlearn_ops.utils import project_root
from unlearn_ops.verify.gates import check, power, precheck
from unlearn_ops.verify.production import (
    Evaluation,
    Settings,
    batch_metrics,
    judge,
    kind_splits,
    power_check,
    power_gates,
)

ITEMS = {"forget_set_size": {"min": 100}, "forget_accuracy_z": {"max": 3.0, "power_margin": 2.0},
         "mia_loss_auc": {"max": 0.61}, "test_accuracy_drop": {"max": 0.02}}
GATES = {"class": {"forget_accuracy": {"max": 0.02}}, "subject": ITEMS, "samples": ITEMS}
PARAMS = yaml.safe_load((project_root() / "params.yaml").read_text())


# ------------------------------------------------------------------------------ precheck
@pytest.mark.parametrize("size,reason", [(18, "forget_set_size 18 < 100"), (99, "forget_set_size 99 < 100"),
                                         (100, None), (5000, None)])
def test_precheck_rules_an_approximate_method_out_below_the_size_gate_and_not_at_it(size, reason):
    batch = {"subject": {"forget_set_size": float(size)}}
    assert precheck(GATES, exact=False, serves=("subject", "samples"), kinds=["subject"], batch=batch) == reason
    assert precheck(GATES, exact=True, serves=("subject",), kinds=["subject"], batch=batch) is None  # exact: exempt


def test_precheck_rules_out_a_method_that_does_not_serve_every_kind_of_the_batch():
    batch = {"class": {"forget_set_size": 500.0}, "subject": {"forget_set_size": 500.0}}
    assert precheck(GATES, exact=False, serves=("class",), kinds=["class", "subject"],
                    batch=batch) == "serves class requests, not subject"
    assert precheck(GATES, exact=False, serves=("class", "subject"), kinds=["class", "subject"], batch=batch) is None
    # a batch-only gate whose value is unknown rules it out too (never silently passes)
    assert precheck(GATES, exact=False, serves=("subject",), kinds=["subject"], batch={}) == "forget_set_size missing"


def test_batch_metrics_count_what_verification_then_measures(digits_store, tiny_model):
    """The size the precheck reads is the size the gates later read, part by part (mixed batch)."""
    subjects = sorted(s for s in digits_store.index.subject_id.unique() if s)
    items = [i for s in subjects[:12] for i in digits_store.subject_ids(s)]
    ids = digits_store.class_ids(FORGET_CLASS) + [i for i in items if i not in set(digits_store.class_ids(FORGET_CLASS))]
    splits = digits_store.splits(ids)
    batch = batch_metrics(digits_store.labels(ids), ids, [FORGET_CLASS], set(items), ["class", "subject"])
    parts = kind_splits(splits, [FORGET_CLASS], set(items))
    assert batch["class"]["forget_set_size"] == len(parts["class"].forget)
    assert batch["subject"]["forget_set_size"] == len(parts["items"].forget) == sum(
        1 for i in items if digits_store.labels([i])[0] != FORGET_CLASS)


# --------------------------------------------------------------------------------- power
def test_the_gates_have_power_only_where_they_reject_the_champion_by_the_margin():
    cfg = ITEMS
    at = power({"forget_accuracy_z": 5.0, "mia_loss_auc": 0.5}, cfg)
    assert at.has_power and at.evidence == ("forget_accuracy_z 5.00 ≥ 5 (= 3 + margin 2)",)
    below = power({"forget_accuracy_z": 4.99, "mia_loss_auc": 0.9}, cfg)  # the AUC gate carries no margin
    assert not below.has_power and below.evidence == ("forget_accuracy_z 4.99 < 5 (= 3 + margin 2)",)
    # a champion that fails the gate, but not by the margin, does not give power: noise could flip it
    assert not power({"forget_accuracy_z": 3.5}, cfg).has_power
    for unknown in ({}, {"forget_accuracy_z": math.nan}):
        assert not power(unknown, cfg).has_power
    assert power({"forget_accuracy_z": 9.0}, {"forget_accuracy_z": {"max": 3.0}}) is None  # no margin: not checked
    lower = power({"retain_score": 0.1}, {"retain_score": {"min": 0.5, "power_margin": 0.2}})
    assert lower.has_power and lower.evidence == ("retain_score 0.10 ≤ 0.3 (= 0.5 − margin 0.2)",)


def test_power_check_reads_each_kind_from_its_group_and_skips_kinds_without_margins():
    metrics = {"class": {"forget_accuracy": 0.9}, "items": {"forget_accuracy_z": 1.88}}
    checks = power_check(metrics, GATES, ["class", "subject"])
    assert set(checks) == {"subject"} and not checks["subject"].has_power
    assert power_gates(GATES, ["subject"]) and not power_gates(GATES, ["class"])


def test_a_power_margin_must_be_a_non_negative_number_beside_a_bound():
    assert check({"z": 1.0}, {"z": {"max": 3.0, "power_margin": 2.0}}).passed  # the margin never moves the gate
    with pytest.raises(ValueError, match="power_margin must be a number >= 0"):
        check({"z": 1.0}, {"z": {"max": 3.0, "power_margin": -1}})
    with pytest.raises(ValueError, match="give min and/or max"):
        check({"z": 1.0}, {"z": {"power_margin": 2.0}})


@pytest.mark.parametrize("section", ["gates", "text_gates", "gan_gates"])
def test_params_yaml_item_gates_carry_a_power_margin_and_a_size_gate(section):
    for kind, gates in PARAMS[section].items():
        if kind != "class":
            assert any("power_margin" in b for b in gates.values()), f"{section}.{kind}"
            assert gates["forget_set_size"]["min"] >= 100, f"{section}.{kind}"
        check({}, gates)  # every bound is well formed


# ------------------------------------------------------- the no-op on the tiny digits model
SIZES = (20, 99, 100, 150, 300, 600, 1000, 1400)


@pytest.fixture(scope="module")
def measured(tiny_model, digits_store) -> dict[int, tuple[dict, dict]]:
    """Per forget-set size: the champion measured as its own candidate (the power check) and the
    no-op's output measured as a candidate (what the gates would judge)."""
    ids = digits_store.active_ids()
    order = np.random.default_rng(1).permutation(len(ids))
    fam, out = family("classifier"), {}
    for n in SIZES:
        forget = [ids[i] for i in order[:n]]
        splits = digits_store.splits(forget)
        noop = run_method("noop", tiny_model, splits, device="cpu").model
        e = Evaluation(tiny_model, tiny_model, splits, digits_store, [], set(forget), Settings(verify_retain=300))
        out[n] = fam.measure(e), fam.measure(Evaluation(tiny_model, noop, splits, digits_store, [], set(forget),
                                                        Settings(verify_retain=300)))
    return out


@pytest.mark.parametrize("size", SIZES)
def test_a_noop_is_never_certified_where_the_power_check_lets_an_approximate_method_be_judged(measured, size):
    """On a model that barely memorizes, the no-op passes the item gates' metric thresholds from
    100 samples on (the hazard), the power check finds no power there (so it is never judged), and
    wherever it would find power the no-op fails: it is the champion, measured the same way."""
    champion, noop = measured[size]
    assert noop["items"] == champion["items"]  # the no-op is the champion: the same numbers, bit for bit
    checks = power_check(champion, GATES, ["samples"])
    verdict = judge(noop, GATES, ["samples"], exact=False)["samples"]
    assert not (checks["samples"].has_power and verdict["passed"])
    # this model: its own z stays far below 3 + 2 at every size (≤ 2.2 measured), so no power anywhere
    assert champion["items"]["forget_accuracy_z"] < 3.5 and not checks["samples"].has_power
    if size >= 100:  # without the power check these thresholds would certify the no-op
        assert verdict["passed"], verdict


def test_a_memorizing_model_gives_the_gates_power_and_the_noop_then_fails(digits_store, tiny_spec):
    """A digits model trained on labels it can only memorise (the forget set's labels shuffled
    among themselves), so forget accuracy ≈ 1 and same-class non-members ≈ chance: z far above 5."""
    from unlearn_ops.data.splits import Part
    from unlearn_ops.models import build_model
    from unlearn_ops.training import TrainConfig, fit

    ids = digits_store.active_ids()
    forget = [ids[i] for i in np.random.default_rng(2).permutation(len(ids))[:200]]
    splits = digits_store.splits(forget)
    shuffled = splits.forget.y[torch.randperm(len(forget), generator=torch.Generator().manual_seed(0))]
    train = Part(splits.forget.ids, splits.forget.x, shuffled)
    torch.manual_seed(0)
    model = fit(build_model(tiny_spec), train, TrainConfig(epochs=150, lr=3e-3, batch_size=50, seed=0, device="cpu"))
    memorized = type(splits)(train, splits.retain, splits.test, splits.nonmember, splits.num_classes)
    e = Evaluation(model, model, memorized, digits_store, [], set(forget), Settings(verify_retain=300))
    metrics = family("classifier").measure(e)
    checks = power_check(metrics, GATES, ["samples"])
    assert metrics["items"]["forget_accuracy_z"] >= 8.0 and checks["samples"].has_power, metrics["items"]
    assert "forget_accuracy_z" in judge(metrics, GATES, ["samples"], exact=False)["samples"]["failed"]
