"""Every method on a sharded model (`methods/_members.py`): class and concept methods change every
member, item methods only the members that held the forget set; the shared contract holds."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import FORGET_CLASS
from tests.methods.contract import check_contract
from tests.methods.test_baselines_core import FAST as CORE
from tests.methods.test_concept_poisoning import FAST as CONCEPT
from tests.methods.test_logit_suppression import SUPPRESS
from tests.methods.test_neg_grad_plus import FAST as NGP
from tests.methods.test_neuron_perturbation import VARIANT_TINY
from tests.sharded_helpers import SCHEDULE, SHARDS, SLICES, build_sharded, one_thread, subject_in_slice
from unlearn_ops.methods import run_method
from unlearn_ops.methods.base import NotApplicable
from unlearn_ops.training import predict_logits

# each method's own test settings on the tiny digits CNN (the members are that CNN)
SETTINGS = {"retrain": CORE["retrain"], "finetune": CORE["finetune"], "noop": {}, "neg_grad_plus": NGP,
            "random_label": {}, "salun": {}, "scrub": {}, "ssd": {}, "logit_suppression": SUPPRESS,
            "neuron_perturbation": VARIANT_TINY, "sharded_retrain": SCHEDULE}
CLASS_ONLY = ("logit_suppression", "neuron_perturbation")


@pytest.fixture(scope="module")
def sharded(digits_store):
    return build_sharded(digits_store)


def changed(a, b) -> list[int]:
    """The members whose weights differ between two ensembles."""
    return [i for i in range(len(a.members))
            if any(not torch.equal(x, y) for x, y in zip(a.members[i].state_dict().values(),
                                                          b.members[i].state_dict().values(), strict=True))]


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_contract_on_a_sharded_model(name, sharded, class_splits, item_splits):
    check_contract(name, sharded, class_splits, SETTINGS[name])
    if name not in CLASS_ONLY:
        check_contract(name, sharded, item_splits, SETTINGS[name])


# the paper's head-only setting and the feature setting of the image chain (its reset units are
# each member's own: every member has its own penultimate layer)
@pytest.mark.parametrize("extra", [{}, {"trainable": "features", "reset_units": 0.25}], ids=["head", "features"])
def test_concept_poisoning_contract_on_a_sharded_model(extra, sharded, class_splits, tmp_path):
    params = {**CONCEPT, "epochs": 2, "report_dir": str(tmp_path / "report"), **extra}
    check_contract("concept_poisoning", sharded, class_splits, params)
    details = run_method("concept_poisoning", sharded, class_splits, params, device="cpu").details
    assert details["members"] == list(range(SHARDS))
    assert all((d["reset_units"] > 0) == bool(extra) for d in details["per_member"].values())


@pytest.mark.parametrize("name", CLASS_ONLY)
def test_a_class_method_changes_every_member_and_the_ensemble_forgets(name, sharded, class_splits):
    result = run_method(name, sharded, class_splits, SETTINGS[name], device="cpu")
    assert changed(result.model, sharded) == list(range(SHARDS))
    assert result.details["applied_to"] == "every member" and "every member" in result.details["summary"]
    before = (predict_logits(sharded, class_splits.forget.x).argmax(1) == FORGET_CLASS).float().mean()
    after = (predict_logits(result.model, class_splits.forget.x).argmax(1) == FORGET_CLASS).float().mean()
    assert before > 0.5 and after < 0.05
    # every member was trained on the class from its first slice: every checkpoint is dropped
    assert all(result.model.state().valid_slices(i) == 0 for i in range(SHARDS))


def test_an_item_method_changes_only_the_member_that_held_the_subject(digits_store, sharded):
    subject = subject_in_slice(digits_store, sharded, 1)
    splits = digits_store.splits(digits_store.subject_ids(subject))
    with one_thread():
        result = run_method("finetune", sharded, splits, SETTINGS["finetune"], device="cpu")
    [member] = result.details["members"]
    assert changed(result.model, sharded) == [member]
    assert result.details["untouched"] == [i for i in range(SHARDS) if i != member]
    state = result.model.state()
    assert state.valid_slices(member) == 1  # the checkpoint after slice 0 holds none of the subject's data
    assert all(state.valid_slices(i) == SLICES - 1 for i in result.details["untouched"])
    assert not set(splits.forget.ids) & set(state.map.ids)
    assert all(line.startswith(f"member {member}: ") for line in result.log)


def test_an_item_method_on_a_class_deletion_changes_every_member(sharded, class_splits):
    result = run_method("finetune", sharded, class_splits, SETTINGS["finetune"], device="cpu")
    assert changed(result.model, sharded) == list(range(SHARDS))


def test_a_method_that_does_not_apply_to_a_member_does_not_apply(sharded, item_splits):
    with pytest.raises(NotApplicable):
        run_method("logit_suppression", sharded, item_splits, SUPPRESS, device="cpu")
    with pytest.raises(NotApplicable):
        run_method("gan_retrain", sharded, item_splits, {}, device="cpu")
