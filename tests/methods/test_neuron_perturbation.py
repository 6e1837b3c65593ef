"""neuron_perturbation (LRA-NPP): contract, forgetting on the tiny digits CNN, zero-shot
disjointness, class-only requests, relevance backends, the path edit, noise modes, the variant."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.conftest import FORGET_CLASS
from tests.methods.contract import check_contract
from unlearn_ops.methods import neuron_perturbation as npp
from unlearn_ops.methods import run_method
from unlearn_ops.methods.base import NotApplicable
from unlearn_ops.training import predict_logits
from unlearn_ops.verify import utility

# The tiny CNN has 32 hidden units (the paper's has 512): analysis and k scaled down.
PAPER_TINY = {**npp.PAPER, "n_a": 20, "k_a": 8, "k_p": 8}
# Our variant: stopping rule (k_p ≤ 16), pruned neurons, head-only repair on non-members.
VARIANT_TINY = {"n_a": 20, "k_a": 8, "k_p": 16, "k_p_step": 2, "stop_accuracy": 0.0, "prune": True,
                "n_check": 100, "repair_steps": 50, "repair_n": 20, "repair_lr": 0.01}


def test_contract(tiny_model, class_splits):
    check_contract("neuron_perturbation", tiny_model, class_splits, VARIANT_TINY)


def test_variant_forgets_the_class_and_keeps_the_others(tiny_model, class_splits):
    before = utility(tiny_model, class_splits, [FORGET_CLASS])
    result = run_method("neuron_perturbation", tiny_model, class_splits, VARIANT_TINY, device="cpu")
    after = utility(result.model, class_splits, [FORGET_CLASS])
    assert before["forget_accuracy"] > 0.9
    assert after["forget_accuracy"] <= 0.05
    assert after["forget_class_test_accuracy"] <= 0.05
    assert after["retained_test_accuracy"] >= before["retained_test_accuracy"] - 0.05
    assert after["retain_accuracy"] >= before["retain_accuracy"] - 0.05
    assert 1 <= result.details["k_p"][FORGET_CLASS] <= VARIANT_TINY["k_p"]


def test_analysis_images_must_not_be_training_data(tiny_model, class_splits):
    cfg = npp.Config(**PAPER_TINY)
    first = npp.unlearn(tiny_model, class_splits, cfg, device="cpu")
    analysis = first.details["analysis_ids"][FORGET_CLASS]
    assert analysis and all(i in set(class_splits.nonmember.ids) for i in analysis)
    with pytest.raises(npp.ZeroShotViolation, match="zero-shot"):
        npp.unlearn(tiny_model, class_splits, cfg, device="cpu", training_ids={"digits/train/000000", analysis[0]})


def test_item_deletions_are_refused(tiny_model, item_splits, digits_store):
    with pytest.raises(npp.NotAClassDeletion, match="whole classes"):
        run_method("neuron_perturbation", tiny_model, item_splits, PAPER_TINY, device="cpu")
    half = digits_store.class_ids(FORGET_CLASS)[::2]           # half of a class is not the class
    with pytest.raises(npp.NotAClassDeletion, match="whole classes"):
        run_method("neuron_perturbation", tiny_model, digits_store.splits(half), PAPER_TINY, device="cpu")


def test_backends_rank_neurons_identically_and_leave_the_model_alone(tiny_model, class_splits):
    x = class_splits.nonmember.x[:40]
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    closed = npp.relevance(tiny_model, x, backend="closed_form")
    lrp = npp.relevance(tiny_model, x, backend="captum")
    assert torch.allclose(closed, lrp, atol=1e-5, rtol=1e-4)
    assert np.array_equal(npp.occurrence_ranking(closed, 8)[0], npp.occurrence_ranking(lrp, 8)[0])
    # captum ran on a copy: no `rule` attributes left behind, same weights
    assert not any(hasattr(m, "rule") for m in tiny_model.modules())
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())


def test_closed_form_is_the_lrp_epsilon_rule_on_a_hand_computable_layer():
    head = torch.nn.Linear(3, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 1.0]]))
        head.bias.copy_(torch.tensor([0.5, 0.0]))
    a = torch.tensor([[2.0, 0.5, 1.0]])                     # z = [2.0, 1.5] → predicted class 0
    rel = npp.relevance_from_acts(head, a, "closed_form", epsilon=0.1)
    expected = torch.tensor([[2.0, -1.0, 0.5]]) * 2.0 / 2.1  # a_j·w_0j · z / (z + ε)
    assert torch.allclose(rel, expected)
    assert torch.allclose(npp.relevance_from_acts(head, a, "captum", epsilon=0.1), expected, atol=1e-6)


def test_paper_edit_touches_exactly_the_neuronal_path(tiny_model, class_splits):
    result = run_method("neuron_perturbation", tiny_model, class_splits, PAPER_TINY, device="cpu")
    neurons = result.details["neurons"][FORGET_CLASS]
    assert len(neurons) == PAPER_TINY["k_p"]
    old, new = tiny_model.state_dict(), result.model.state_dict()
    rows = torch.zeros(old["fc1.weight"].shape[0], dtype=torch.bool)
    rows[neurons] = True
    assert torch.all(new["fc1.weight"][rows] == 0) and torch.equal(new["fc1.weight"][~rows], old["fc1.weight"][~rows])
    assert torch.equal(new["fc1.bias"], old["fc1.bias"])       # the paper leaves biases alone
    out = torch.zeros_like(old["head.weight"], dtype=torch.bool)
    out[FORGET_CLASS, neurons] = True
    assert torch.all(new["head.weight"][out] == 0) and torch.equal(new["head.weight"][~out], old["head.weight"][~out])
    for name in ("features.0.weight", "features.2.weight", "head.bias"):
        assert torch.equal(new[name], old[name])


def test_prune_folds_the_dead_neurons_constant_so_other_logits_do_not_move(tiny_model, class_splits):
    kept = run_method("neuron_perturbation", tiny_model, class_splits, PAPER_TINY, device="cpu").model
    pruned = run_method("neuron_perturbation", tiny_model, class_splits, {**PAPER_TINY, "prune": True},
                        device="cpu")
    neurons = pruned.details["neurons"][FORGET_CLASS]
    assert torch.all(pruned.model.fc1.bias[neurons] == 0)
    x = class_splits.test.x
    others = [k for k in range(10) if k != FORGET_CLASS]
    assert torch.allclose(predict_logits(kept, x)[:, others], predict_logits(pruned.model, x)[:, others], atol=1e-5)


def test_pooled_feature_heads_zero_the_columns_of_every_class(tiny_model, class_splits):
    result = run_method("neuron_perturbation", tiny_model, class_splits, {**PAPER_TINY, "penultimate": ""},
                        device="cpu")
    neurons = result.details["neurons"][FORGET_CLASS]
    assert torch.all(result.model.head.weight[:, neurons] == 0)
    assert torch.equal(result.model.fc1.weight, tiny_model.fc1.weight)


@pytest.mark.parametrize("mode", ["gauss", "laplace"])
def test_noise_baselines_run_and_are_seeded(tiny_model, class_splits, mode):
    params = {**PAPER_TINY, "mode": mode}
    a = run_method("neuron_perturbation", tiny_model, class_splits, params, device="cpu").model
    b = run_method("neuron_perturbation", tiny_model, class_splits, params, device="cpu").model
    c = run_method("neuron_perturbation", tiny_model, class_splits, {**params, "seed": 1}, device="cpu").model
    assert torch.equal(a.fc1.weight, b.fc1.weight) and torch.isfinite(a.fc1.weight).all()
    assert not torch.equal(a.fc1.weight, tiny_model.fc1.weight)
    assert not torch.equal(a.head.weight, c.head.weight)


def test_stopping_rule_picks_the_smallest_k_that_forgets_the_check_images(tiny_model, class_splits):
    params = {k: v for k, v in VARIANT_TINY.items() if not k.startswith("repair")}
    result = run_method("neuron_perturbation", tiny_model, class_splits, params, device="cpu")
    k = result.details["k_p"][FORGET_CLASS]
    assert k % params["k_p_step"] == 0 and k <= params["k_p"]
    # the simulation on cached activations agrees with the real edited model: the analysis and
    # check images of the class are no longer recognised at the chosen k
    pool = class_splits.nonmember.where(class_splits.nonmember.y == FORGET_CLASS)
    assert (predict_logits(result.model, pool.x).argmax(1) == FORGET_CLASS).float().mean() <= params["stop_accuracy"]
    smaller = run_method("neuron_perturbation", tiny_model, class_splits,
                         {**PAPER_TINY, "prune": True, "k_p": k - params["k_p_step"]}, device="cpu") if k > 2 else None
    if smaller is not None:
        assert (predict_logits(smaller.model, pool.x).argmax(1) == FORGET_CLASS).float().mean() > 0


def test_several_classes_in_one_request(tiny_model, digits_store):
    splits = digits_store.splits(digits_store.class_ids(3) + digits_store.class_ids(5))
    before = utility(tiny_model, splits, [3, 5])
    for mode in ("per_class", "union"):
        result = run_method("neuron_perturbation", tiny_model, splits, {**VARIANT_TINY, "multi_class": mode},
                            device="cpu")
        after = utility(result.model, splits, [3, 5])
        assert set(result.details["k_p"]) == {3, 5}
        assert after["forget_accuracy"] <= 0.05
        assert after["retained_test_accuracy"] >= before["retained_test_accuracy"] - 0.05


def test_bad_settings_are_clear_errors(tiny_model, class_splits):
    with pytest.raises(ValueError, match="scope"):
        run_method("neuron_perturbation", tiny_model, class_splits, {"scope": "everything"}, device="cpu")
    with pytest.raises(ValueError, match="mode=zero only"):
        run_method("neuron_perturbation", tiny_model, class_splits, {"mode": "gauss", "prune": True}, device="cpu")
    with pytest.raises(NotApplicable, match="no module"):  # a model without the head it cuts
        run_method("neuron_perturbation", tiny_model, class_splits, {"layer": "classifier"}, device="cpu")
    with pytest.raises(NotApplicable, match="no image of class"):  # zero-shot needs non-members of the class
        run_method("neuron_perturbation", tiny_model, replace(class_splits, nonmember=class_splits.nonmember.where(
            class_splits.nonmember.y != FORGET_CLASS)), device="cpu")
