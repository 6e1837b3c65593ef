"""`cascaded_gan` on a tiny MNIST GAN (digits 0 and 1, 300 images): contract and behaviour."""

import copy

import pytest
import torch

from tests import gan_helpers as H
from tests.methods.contract import assert_same_state, check_contract
from unlearn_ops.methods import METHODS, run_method
from unlearn_ops.methods.base import NotApplicable
from unlearn_ops.methods.cascaded_gan import Anchor, Config, _g_batch, _stop_subset, resolve_mode
from unlearn_ops.models import state_fingerprint
from unlearn_ops.models.gan import GAN, latent
from unlearn_ops.verify.gan import class_share

NAME = "cascaded_gan"
# the tiny GAN was trained with lr_g 2e-3 / lr_d 5e-4: item deletions use the same (as the build's in params.yaml)
TINY_LR = {"lr_g": 2e-3, "lr_d": 5e-4}
FAST = {"epochs": 2, "class_epochs": 1, "class_min_epochs": 1, "batch_size": 32}


def test_registered_under_its_file_name():
    assert METHODS[NAME].__name__ == "unlearn_ops.methods.cascaded_gan"


def test_contract_item_mode():
    check_contract(NAME, H.tiny_gan(), H.item_splits(), {**FAST, "mode": "item"})


def test_contract_class_mode_with_filtered_substitutes():
    check_contract(NAME, H.tiny_gan(), H.class_splits(),
                   {**FAST, "mode": "class", "substitution": "generated_filtered"})


def test_returns_a_new_container_and_keeps_the_reference():
    gan = H.tiny_gan()
    result = run_method(NAME, gan, H.item_splits(), {**FAST, "mode": "item"}, device="cpu")
    new = result.model
    assert isinstance(new, GAN) and new is not gan
    assert new.generator is not gan.generator and new.discriminator is not gan.discriminator
    assert_same_state(state_fingerprint(gan.reference), state_fingerprint(new.reference))
    assert not any(p.requires_grad for p in new.reference.parameters())
    assert not torch.equal(new.discriminator.out.weight, gan.discriminator.out.weight), "D was not updated"


def test_auto_mode_detects_class_and_item_deletions():
    assert resolve_mode(Config(), H.class_splits()) == "class"
    assert resolve_mode(Config(), H.item_splits()) == "item"
    with pytest.raises(ValueError, match="mode"):
        resolve_mode(Config(mode="everything"), H.item_splits())


def test_class_unlearning_reduces_the_forgotten_class_share():
    gan = H.tiny_gan()
    before = class_share(gan, [H.FORGET_CLASS], n=1000, seed=7)
    result = run_method(NAME, gan, H.class_splits(),
                        {"mode": "class", "substitution": "generated_filtered", "class_epochs": 4,
                         "class_min_epochs": 4, "batch_size": 32}, device="cpu")
    after = class_share(result.model, [H.FORGET_CLASS], n=1000, seed=7)
    assert before > 0.2, f"the tiny GAN should make the class before unlearning ({before:.2f})"
    assert after < before - 0.1, f"forgotten-class share {before:.2f} -> {after:.2f}"
    details = result.details
    assert details["mode"] == "class" and details["forget_classes"] == [H.FORGET_CLASS]
    assert details["accepted"] <= details["candidates"] and details["iterations"] == 20  # 4 passes of 5 batches


def test_item_unlearning_pulls_d_of_forgotten_items_down_to_generated_level():
    result = run_method(NAME, H.tiny_gan(), H.item_splits(), {"mode": "item", "epochs": 50, **TINY_LR}, device="cpu")
    d = result.details
    assert d["d_forget_before"] > d["d_generated_before"], "the trained D scores its training items above G(z)"
    assert d["stop_reason"] == "reached", result.log[-3:]
    assert d["d_forget_after"] < d["d_forget_before"]
    assert d["d_forget_after"] <= d["d_generated_after"]  # the stop rule: D now scores x_u like G(z)
    assert d["iterations"] <= d["max_iterations"] and d["seconds_cascade"] > 0


def test_generated_filtered_class_mode_needs_a_reference():
    bare = copy.deepcopy(H.tiny_gan())
    bare.reference, bare.reference_spec = None, None
    with pytest.raises(NotApplicable, match="reference classifier"):
        run_method(NAME, bare, H.class_splits(), {"mode": "class", "substitution": "generated_filtered"},
                   device="cpu")
    # an explicit reference= argument is enough
    from unlearn_ops.methods.cascaded_gan import unlearn

    out = unlearn(bare, H.class_splits(), Config(mode="class", substitution="generated_filtered", epochs=1),
                  device="cpu", reference=H.reference_classifier())
    assert out.details["substitution"] == "generated_filtered"


def test_rejects_classifiers_and_bad_settings(tiny_model, class_splits):
    with pytest.raises(NotApplicable, match="GAN"):
        run_method(NAME, tiny_model, class_splits, device="cpu")
    with pytest.raises(ValueError, match="substitution"):
        run_method(NAME, H.tiny_gan(), H.item_splits(), {"substitution": "copy"}, device="cpu")


def _kept_drift(model: GAN, original: GAN, z: torch.Tensor) -> float:
    """Mean squared change of G(z) on latents the original drew as a kept class."""
    from unlearn_ops.training import predict_logits

    with torch.no_grad():
        before, after = original.generator.eval()(z), model.generator.eval()(z)
    kept = predict_logits(H.reference_classifier(), before).argmax(1) != H.FORGET_CLASS
    assert kept.sum() >= 10, "the tiny GAN should draw the kept digit"
    return float(((after - before)[kept] ** 2).mean())


def test_preserve_weight_keeps_the_kept_classes_where_they_were():
    gan = H.tiny_gan()
    z = latent(200, gan.z_dim, 11)
    settings = {"mode": "class", "class_epochs": 4, "class_min_epochs": 4, "batch_size": 32}
    free = run_method(NAME, gan, H.class_splits(), settings, device="cpu").model
    anchored = run_method(NAME, gan, H.class_splits(), {**settings, "preserve_weight": 100.0}, device="cpu").model
    assert _kept_drift(anchored, gan, z) < 0.5 * _kept_drift(free, gan, z)


def test_preserve_weight_leaves_the_forgotten_class_free_to_go():
    # the anchor holds only latents drawn as a kept class, so the forgotten class still leaves (0.66 -> 0.41 here)
    gan = H.tiny_gan()
    settings = {"mode": "class", "class_epochs": 4, "class_min_epochs": 4, "batch_size": 32, "preserve_weight": 10.0}
    before = class_share(gan, [H.FORGET_CLASS], n=1000, seed=7)
    after = class_share(run_method(NAME, gan, H.class_splits(), settings, device="cpu").model, [H.FORGET_CLASS],
                        n=1000, seed=7)
    assert after < before - 0.1, f"forgotten-class share {before:.2f} -> {after:.2f}"


def test_preserve_weight_needs_a_reference():
    bare = copy.deepcopy(H.tiny_gan())
    bare.reference, bare.reference_spec = None, None
    with pytest.raises(NotApplicable, match="reference classifier"):
        run_method(NAME, bare, H.class_splits(), {"mode": "class", "preserve_weight": 1.0}, device="cpu")


def test_the_stop_rule_scores_a_fixed_subset_of_a_large_forget_set():
    x = torch.arange(50, dtype=torch.float32).reshape(50, 1, 1, 1)
    assert torch.equal(_stop_subset(x, Config(stop_forget=50)), x)  # small forget sets: every image
    part = _stop_subset(x, Config(stop_forget=20))
    assert len(part) == 20 and len(set(part.flatten().tolist())) == 20  # distinct forget images
    assert torch.equal(part, _stop_subset(x, Config(stop_forget=20)))  # the same ones every time
    assert not torch.equal(part, _stop_subset(x, Config(stop_forget=20, seed=1)))


def _norm_buffers(gan: GAN) -> dict[str, torch.Tensor]:
    return {k: v for k, v in gan.generator.state_dict().items() if "running" in k or "num_batches" in k}


def test_g_norm_running_keeps_the_originals_batch_norm_statistics():
    # the class steps' small batches would re-estimate them (g_norm batch: the default); running keeps them,
    # while the weights still move and the forgotten class still leaves
    gan = H.tiny_gan()
    settings = {"mode": "class", "class_epochs": 4, "class_min_epochs": 4, "batch_size": 32, "preserve_weight": 10.0}
    kept_stats = run_method(NAME, gan, H.class_splits(), {**settings, "g_norm": "running"}, device="cpu").model
    moved_stats = run_method(NAME, gan, H.class_splits(), settings, device="cpu").model
    before = _norm_buffers(gan)
    assert before, "the tiny G has batch-norm layers"
    assert all(torch.equal(v, before[k]) for k, v in _norm_buffers(kept_stats).items())
    assert not all(torch.equal(v, before[k]) for k, v in _norm_buffers(moved_stats).items())
    weights = [(a, b) for a, b in zip(kept_stats.generator.parameters(), gan.generator.parameters(), strict=True)]
    assert not all(torch.equal(a, b) for a, b in weights)
    share = class_share(kept_stats, [H.FORGET_CLASS], n=1000, seed=7)
    assert share < class_share(gan, [H.FORGET_CLASS], n=1000, seed=7) - 0.1
    assert not any(m.training for m in kept_stats.generator.modules())  # handed back in eval mode throughout


def test_g_norm_is_checked():
    with pytest.raises(ValueError, match="g_norm"):
        Config(g_norm="instance")


def _pool(kept: list[bool]) -> Anchor:
    n, kept_t = len(kept), torch.tensor(kept)
    return Anchor(torch.zeros(n, 2), torch.zeros(n, 1, 2, 2), kept_t, torch.nonzero(~kept_t).flatten())


def test_focus_draws_its_share_of_each_g_batch_from_the_forgotten_class_cells():
    pool = _pool([True] * 90 + [False] * 10)  # 10 % of the pool drawn as the forgotten class
    pick = _g_batch(pool, 32, 0.5, torch.Generator().manual_seed(0))
    assert len(pick) == 32
    assert (~pool.kept[pick]).sum() >= 16  # half the batch from the free cells (the uniform half may add a few)
    assert (~pool.kept[pick[16:]]).all()


def test_focus_zero_is_the_uniform_draw_and_a_pool_without_the_class_falls_back_to_it():
    uniform = torch.randint(0, 100, (32,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(_g_batch(_pool([True] * 90 + [False] * 10), 32, 0.0, torch.Generator().manual_seed(3)), uniform)
    assert torch.equal(_g_batch(_pool([True] * 100), 32, 0.5, torch.Generator().manual_seed(3)), uniform)


def test_focus_runs_through_the_method_and_the_class_still_leaves():
    gan = H.tiny_gan()
    settings = {"mode": "class", "class_epochs": 4, "class_min_epochs": 4, "batch_size": 32, "preserve_weight": 10.0,
                "focus": 0.25}
    result = run_method(NAME, gan, H.class_splits(), settings, device="cpu")
    assert result.details["config"]["focus"] == 0.25
    before = class_share(gan, [H.FORGET_CLASS], n=1000, seed=7)
    assert class_share(result.model, [H.FORGET_CLASS], n=1000, seed=7) < before - 0.1


def test_focus_is_checked():
    with pytest.raises(ValueError, match="focus"):
        Config(focus=1.0)
