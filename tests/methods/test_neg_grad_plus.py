"""`neg_grad_plus`: contract, class and item deletion on the tiny digits CNN, and the over-forgetting canary."""

from tests.conftest import FORGET_CLASS
from tests.methods.behaviour import check_class_deletion, check_item_deletion
from tests.methods.contract import check_contract
from unlearn_ops.methods import run_method
from unlearn_ops.methods.base import NotApplicable
from unlearn_ops.verify import utility

FAST = {"lr": 1e-3}  # the tiny CNN was trained at lr 3e-3; the production lr 1e-4 is for the Fashion-MNIST CNN


def test_contract_class(tiny_model, class_splits):
    check_contract("neg_grad_plus", tiny_model, class_splits, FAST)


def test_contract_item(tiny_model, item_splits):
    check_contract("neg_grad_plus", tiny_model, item_splits, FAST)


def test_forgets_a_class_and_keeps_the_rest(tiny_model, class_splits):
    # forget accuracy measured 0.00-0.04 over four base models (the committed one, seeds 1-3)
    check_class_deletion("neg_grad_plus", tiny_model, class_splits, FAST, max_forget_accuracy=0.10)


def test_item_deletion_keeps_utility(tiny_model, item_splits):
    # The tiny CNN does not memorize, so its forget samples behave like test samples and the
    # retain term (weight 0.99) keeps lowering every loss: no "forget loss rises" claim here.
    check_item_deletion("neg_grad_plus", tiny_model, item_splits, FAST, loss_must_rise=False)


def test_the_ascent_term_raises_the_forget_loss(tiny_model, item_splits):
    """Against its twin without the ascent term (alpha 1: the same steps on the retain batches
    only), the forget loss ends clearly higher (measured 1.5-2.4x over four base models; against
    the original model it rose by only 7 % on one of them: that comparison was a coin flip)."""
    from unlearn_ops.training import per_sample_loss

    ascent = run_method("neg_grad_plus", tiny_model, item_splits, {**FAST, "alpha": 0.9}, device="cpu").model
    twin = run_method("neg_grad_plus", tiny_model, item_splits, {**FAST, "alpha": 1.0}, device="cpu").model
    assert per_sample_loss(ascent, item_splits.forget).mean() > 1.2 * per_sample_loss(twin, item_splits.forget).mean()
    assert utility(ascent, item_splits)["test_accuracy"] >= utility(tiny_model, item_splits)["test_accuracy"] - 0.05


def test_without_the_retain_term_it_over_forgets(tiny_model, class_splits):
    """The over-forgetting canary: plain gradient ascent, far too long, destroys the model."""
    canary = {"alpha": 0.0, "epochs": 30, "lr": 1e-2, "max_grad_norm": 0.0}
    after = utility(run_method("neg_grad_plus", tiny_model, class_splits, canary, device="cpu").model,
                    class_splits, [FORGET_CLASS])
    assert after["retained_test_accuracy"] < 0.5, after


def test_rejects_an_alpha_outside_0_1(tiny_model, class_splits):
    import pytest

    with pytest.raises(ValueError, match="alpha"):
        run_method("neg_grad_plus", tiny_model, class_splits, {"alpha": 1.5}, device="cpu")


def test_stops_once_the_forget_set_looks_like_non_members(tiny_model, item_splits):
    """With the stopping rule, the step budget is an upper bound: the ascent ends at the first
    check where the forget set is predicted no better than its classes' non-members."""
    params = {**FAST, "alpha": 0.5, "epochs": 40, "stop_at_nonmember_accuracy": True, "check_every": 3}
    result = run_method("neg_grad_plus", tiny_model, item_splits, params, device="cpu")
    d = result.details
    assert d["stopped_early"] and d["steps_run"] < d["steps"] and d["steps_run"] % 3 == 0
    assert d["forget_accuracy"] <= d["nonmember_accuracy"]
    assert utility(result.model, item_splits)["forget_accuracy"] == d["forget_accuracy"]  # 40 < check_samples
    assert any("stopping" in line for line in result.log)


def test_the_stopping_rule_needs_non_members(tiny_model, item_splits):
    import pytest

    from unlearn_ops.data.splits import Splits

    no_nm = Splits(item_splits.forget, item_splits.retain, item_splits.test, item_splits.nonmember.subset([]),
                   item_splits.num_classes)
    with pytest.raises(NotApplicable, match="non-members"):
        run_method("neg_grad_plus", tiny_model, no_nm, {"stop_at_nonmember_accuracy": True}, device="cpu")
