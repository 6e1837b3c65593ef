"""`concept_poisoning`: contract, PCBM/IG maths, donor rule, poisons, privacy, forgetting; text variant.

Images use the shared tiny digits CNN (8×8, forget class 3). Text uses a tiny BERT built from a
config on a synthetic sentiment corpus (sentiment words decide the label, movie names are
entities), so every property is checkable in seconds. One integration test runs the packaged
MiniLM on real Rotten Tomatoes snippets.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import FORGET_CLASS, fixture_seed
from tests.methods.contract import check_contract
from tests.text_helpers import POS, corpus_parts
from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.methods import concept_poisoning as cp
from unlearn_ops.methods import run_method
from unlearn_ops.methods.base import NotApplicable, make_config
from unlearn_ops.methods.concept_poisoning import banks, features, pcbm, poisons, text
from unlearn_ops.models import load_model, save_model
from unlearn_ops.models.text import TextClassifier, embed_batched, text_classifier, tiny_text_spec, tokenized_part
from unlearn_ops.training import TrainConfig, accuracy, fit, predict_logits
from unlearn_ops.verify import utility
from unlearn_ops.verify.report import image_png, patch_grid

# small bank / analysis set: the digits model has 2×2 locations and 18 non-members per class
FAST = {"n_concepts": 8, "analysis_per_class": 60, "examples_per_concept": 4, "epochs": 10, "lr": 3e-3}


def _params(tmp_path: Path, **extra) -> dict:
    return {**FAST, "report_dir": str(tmp_path / "report"), **extra}


# ----------------------------------------------------------------------------- contract
def test_contract(tiny_model, class_splits, tmp_path):
    check_contract("concept_poisoning", tiny_model, class_splits, _params(tmp_path, epochs=2))


def test_bad_modes_are_rejected():
    for bad in ({"poison": "smear"}, {"labels": "flip"}, {"trainable": "body"}, {"patch": 0.0}, {"importance": "x"}):
        with pytest.raises(ValueError, match="concept_poisoning"):
            make_config(cp.Config, bad)


# ----------------------------------------------------------------------------- PCBM + IG
def test_ig_on_linear_pcbm_equals_weight_times_activation():
    torch.manual_seed(0)
    head = nn.Linear(12, 5)
    acts = torch.rand(40, 12)
    target = torch.randint(0, 5, (40,))
    attr = pcbm.ig_attributions(head, acts, target, steps=8)
    expected = head.weight.detach()[target] * acts  # zero baseline: IG = W[c] ⊙ a exactly
    assert torch.allclose(attr, expected, atol=1e-5)
    # completeness: attributions sum to f(x) - f(0) for the target logit
    with torch.no_grad():
        gain = (head(acts) - head(torch.zeros_like(acts))).gather(1, target[:, None])[:, 0]
    assert torch.allclose(attr.sum(1), gain, atol=1e-4)


def test_fitted_pcbm_ig_ranking_matches_weight_ranking_on_uniform_activations():
    """Class-mean IG = W[c] ⊙ mean activation; with equal mean activations the two rankings agree."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 60)
    acts = rng.random((180, 6)).astype(np.float32) * 0.2
    for c in range(3):  # concept 2c fires for class c
        acts[y == c, 2 * c] += 1.0
    cfg = make_config(cp.Config, {"seed": 0})
    head = pcbm.fit_pcbm(acts, y, 3, cfg)
    assert (head(torch.from_numpy(acts)).argmax(1).numpy() == y).mean() > 0.95
    importance = pcbm.concept_importance(head, torch.from_numpy(acts), torch.from_numpy(y), 3, steps=8)
    ranks = pcbm.top_concepts(importance, 1)[:, 0]
    assert ranks.tolist() == [0, 2, 4]
    assert pcbm.top_concepts(head.weight.detach().numpy(), 1)[:, 0].tolist() == [0, 2, 4]


def test_binary_pcbm_head_reproduces_sklearn_probabilities():
    from sklearn.linear_model import SGDClassifier

    rng = np.random.default_rng(1)
    acts = rng.random((100, 4)).astype(np.float32)
    y = (acts[:, 0] > 0.5).astype(np.int64)
    cfg = make_config(cp.Config, {})
    head = pcbm.fit_pcbm(acts, y, 2, cfg)
    clf = SGDClassifier(loss="log_loss", penalty="elasticnet", alpha=cfg.pcbm_alpha, l1_ratio=cfg.pcbm_l1_ratio,
                        max_iter=cfg.pcbm_max_iter, random_state=cfg.seed).fit(acts, y)
    ours = torch.softmax(head(torch.from_numpy(acts)), 1).detach().numpy()
    assert np.allclose(ours, clf.predict_proba(acts), atol=1e-5)


def test_donor_confusion_rule_then_shared_fallback():
    # class 0's top concepts: [3, 1, 2]; class 2's top-1 is concept 1 → confusion, donor 2 via concept 1
    ranking = np.array([[3, 1, 2], [0, 4, 3], [1, 0, 4], [2, 3, 0]])
    weight = np.zeros((4, 5))
    weight[3, 3], weight[1, 3] = 0.9, 0.5
    d = pcbm.choose_donor(ranking, weight, target=0, excluded=set())
    assert (d.donor, d.donor_concept, d.target_concept, d.rule) == (2, 1, 3, "confusion")
    # class 2 excluded (also forgotten): the next of class 0's concepts, 2, is class 3's top-1
    d = pcbm.choose_donor(ranking, weight, target=0, excluded={2})
    assert (d.donor, d.donor_concept, d.rule) == (3, 2, "confusion")
    # no confusion partner left → shared: the allowed class with the largest weight on concept 3
    d = pcbm.choose_donor(ranking, weight, target=0, excluded={2, 3})
    assert (d.donor, d.donor_concept, d.target_concept, d.rule) == (1, 3, 3, "shared")
    weight[1, 3] = -1.0
    weight[2, 3] = 2.0  # excluded classes never donate, whatever their weight
    assert pcbm.choose_donor(ranking, weight, target=0, excluded={2, 3}).donor == 1
    with pytest.raises(NotApplicable, match="no donor"):
        pcbm.choose_donor(ranking, weight, target=0, excluded={1, 2, 3})


# ----------------------------------------------------------------------------- poisons
def _image(value: float, side: int = 10) -> torch.Tensor:
    return torch.full((1, side, side), value)


def test_poison_modes_paste_where_they_should():
    cfg = make_config(cp.Config, {"patch": 0.3, "center_patch": 0.4, "full_patch": 0.6})
    rng = np.random.default_rng(0)
    x, donor = _image(0.0), _image(1.0)
    assert torch.equal(poisons.poison_image(x, donor, "none", (2, 2), (5, 5), cfg, rng), x)
    loc = poisons.poison_image(x, donor, "localized", (2, 7), (5, 5), cfg, rng)
    assert loc.sum() == 9 and loc[0, 1:4, 6:9].sum() == 9  # a 3×3 donor patch centred at row 2, col 7
    centre = poisons.poison_image(x, donor, "center", (0, 0), (0, 0), cfg, rng)
    assert centre.sum() == 16 and centre[0, 3:7, 3:7].sum() == 16
    full = poisons.poison_image(x, donor, "full", (0, 0), (0, 0), cfg, rng)
    assert full.sum() == 36 and full[0, 2:8, 2:8].sum() == 36
    rand = poisons.poison_image(x, donor, "random", (0, 0), (0, 0), cfg, rng)
    assert rand.sum() == 16
    # patches near the border are kept inside the image
    edge = poisons.poison_image(x, donor, "localized", (0, 0), (9, 9), cfg, rng)
    assert edge[0, :3, :3].sum() == 9


def test_poison_label_modes():
    donors = {3: pcbm.Donor(3, 5, 0, 0, "shared")}
    y = torch.full((200,), 3)
    rng = np.random.default_rng(0)
    assert poisons.poison_labels(y, donors, "targeted", 10, rng).eq(5).all()
    assert poisons.poison_labels(y, donors, "keep", 10, rng).eq(3).all()
    rand = poisons.poison_labels(y, donors, "random", 10, rng)
    assert set(rand.tolist()) == set(range(10))  # uniform over all classes, the forgotten one included


def test_nearest_labels_are_the_originals_most_likely_kept_class():
    donors = {3: pcbm.Donor(3, 5, 0, 0, "shared")}
    logits = torch.tensor([[0.0, 1.0, 0.0, 9.0, 2.0], [4.0, 0.0, 0.0, 8.0, 1.0], [0.0, 0.0, 7.0, 9.0, 0.0]])
    labels = poisons.poison_labels(torch.full((3,), 3), donors, "nearest", 5, np.random.default_rng(0), logits)
    assert labels.tolist() == [4, 0, 2]  # never the forgotten class 3, though it is every row's top
    with pytest.raises(ValueError, match="needs the original's logits"):
        poisons.poison_labels(torch.full((3,), 3), donors, "nearest", 5, np.random.default_rng(0))


# ----------------------------------------------------------------------------- forgetting
def test_forgets_the_class_and_keeps_the_rest(tiny_model, class_splits, tmp_path):
    before = utility(tiny_model, class_splits, [FORGET_CLASS])
    result = run_method("concept_poisoning", tiny_model, class_splits, _params(tmp_path), device="cpu")
    after = utility(result.model, class_splits, [FORGET_CLASS])
    assert before["forget_accuracy"] > 0.9
    assert after["forget_accuracy"] <= 0.10
    assert after["forget_class_test_accuracy"] <= 0.20
    assert after["retained_test_accuracy"] >= before["retained_test_accuracy"] - 0.03
    d = result.details
    assert set(d["donors"]) == {str(FORGET_CLASS)} and d["donors"][str(FORGET_CLASS)]["donor"] != FORGET_CLASS
    assert d["classes_removed"] == [FORGET_CLASS] and d["n_poisons"] == len(class_splits.forget)
    assert Path(d["patch_grid"]).is_file()
    # only the head was trained (default trainable=head)
    for name, p in tiny_model.state_dict().items():
        same = torch.equal(p, result.model.state_dict()[name].cpu())
        assert same == (not name.startswith("head.")), name


def test_keep_labels_is_the_control_that_does_not_forget(tiny_model, class_splits, tmp_path):
    result = run_method("concept_poisoning", tiny_model, class_splits, _params(tmp_path, labels="keep"), device="cpu")
    assert utility(result.model, class_splits, [FORGET_CLASS])["forget_accuracy"] > 0.8


def test_nearest_labels_are_what_the_original_says_without_the_class(tiny_model, class_splits, tmp_path,
                                                                     monkeypatch):
    seen = []
    real = cp.finetune
    monkeypatch.setattr(cp, "finetune", lambda model, retain, poisons, *a: seen.append(poisons.y) or
                        real(model, retain, poisons, *a))
    params = _params(tmp_path, labels="nearest")
    result = run_method("concept_poisoning", tiny_model, class_splits, params, device="cpu")
    chosen = poisons.poison_sources(class_splits.forget, make_config(cp.Config, params))
    kept = predict_logits(tiny_model, chosen.x)
    kept[:, FORGET_CLASS] = float("-inf")
    (labels,) = seen
    assert torch.equal(labels, kept.argmax(1)) and len(set(labels.tolist())) > 1  # per image, not one donor
    assert utility(result.model, class_splits, [FORGET_CLASS])["forget_accuracy"] <= 0.10
    assert result.details["labels"] == "nearest"


# ----------------------------------------------------------------------------- privacy
CANARY_SHIFT = 5  # digits pixels are multiples of ~16/255; +5/255 never occurs in real data


def _canary_splits(splits: Splits) -> tuple[Splits, set[int]]:
    """The forget images with every pixel moved to a value no other image has (a canary)."""
    x8 = torch.round(splits.forget.x * 255).to(torch.int64)
    normal = set(torch.unique(torch.round(torch.cat([splits.retain.x, splits.nonmember.x, splits.test.x]) * 255)
                              .to(torch.int64)).tolist())
    canary = torch.where(x8 >= 250, x8 - CANARY_SHIFT, x8 + CANARY_SHIFT)
    values = set(torch.unique(canary).tolist())
    assert not values & normal
    forget = Part(splits.forget.ids, canary.float() / 255, splits.forget.y)
    return Splits(forget, splits.retain, splits.test, splits.nonmember, splits.num_classes), values


def _png_values(path: Path) -> set[int]:
    from matplotlib.image import imread

    return set(np.unique(np.round(imread(path)[..., :3] * 255).astype(int)).tolist())


def _plain(value) -> bool:
    """Only JSON-native values: no tensors or arrays can hide inside the details."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def test_poisoned_data_is_never_persisted(tiny_model, class_splits, tmp_path, monkeypatch):
    splits, canary = _canary_splits(class_splits)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # anything written to a temp folder lands here
    report = tmp_path / "report"
    results = [run_method("concept_poisoning", tiny_model, splits, {**FAST, **extra}, device="cpu")
               for extra in ({}, {"poison": "center", "trainable": "all", "epochs": 1, "report_dir": str(report)})]
    # the default (production) draws no grid at all; a grid asked for is the only file written
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert written == [report / "concept_patches.png"], written
    assert [r.details["patch_grid"] for r in results] == [None, str(report / "concept_patches.png")]
    for path in written:
        assert not _png_values(path) & canary, f"{path} holds pixels of forget images"
    forget_ids = set(splits.forget.ids)
    for r in results:
        assert _plain(r.details)
        json.dumps(r.details)
        assert not forget_ids & {i for ids in r.details["examples"].values() for i in ids}
        assert not any(i in line for line in r.log for i in forget_ids)
        assert set(r.model.state_dict()) == set(tiny_model.state_dict())  # nothing extra rides on the model
    # the detector works: a grid made from the forget images themselves is caught
    scores = banks.ConceptScores(torch.rand(len(splits.forget), 2), torch.full((len(splits.forget), 2), 4),
                              torch.full((len(splits.forget), 2), 4))
    patches = banks.concept_patches(splits.forget.x, scores, [[0, 1], [2, 3]], 4)
    leak = image_png(patch_grid(patches, 4), tmp_path / "leak.png")
    assert _png_values(leak) & canary


def test_concept_examples_are_the_strongest_samples_cropped_where_the_concept_fires():
    imgs = torch.arange(4 * 36, dtype=torch.float32).reshape(4, 1, 6, 6) / (4 * 36)
    scores = banks.ConceptScores(torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.5, 0.5], [0.9, 0.1]]),
                                 torch.full((4, 2), 3), torch.full((4, 2), 3))
    ex = banks.concept_examples(scores, 2)
    assert ex == [[3, 1], [0, 2]]
    patches = banks.concept_patches(imgs, scores, ex, side=2)
    assert [len(row) for row in patches] == [2, 2]
    assert torch.equal(patches[0][0], imgs[3, :, 2:4, 2:4])  # concept 0, first example = image 3 around (3, 3)


def test_a_model_without_a_linear_head_is_not_applicable(class_splits):
    with pytest.raises(NotApplicable, match="Linear `head`"):
        run_method("concept_poisoning", nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), class_splits, device="cpu")


def test_trainable_last_does_not_apply_to_images(tiny_model, class_splits):
    with pytest.raises(NotApplicable, match="trainable=last"):
        run_method("concept_poisoning", tiny_model, class_splits, {"trainable": "last"}, device="cpu")


# ----------------------------------------------------------------------------- forgetting in the features
def test_feature_block_is_the_last_block_before_the_head():
    from unlearn_ops.models.classifiers import ResNet18, SmallCNN

    cnn = SmallCNN()
    assert features.feature_block(cnn) is cnn.fc1
    resnet = ResNet18()
    assert features.feature_block(resnet) is resnet.body.layer4  # inside the wrapper that holds the body
    ids = {id(p) for p in features.feature_params(cnn)}
    assert ids == {id(p) for p in [*cnn.head.parameters(), *cnn.fc1.parameters()]}


def test_trainable_features_trains_the_head_and_last_block_only(tiny_model, class_splits, tmp_path):
    result = run_method("concept_poisoning", tiny_model, class_splits, _params(tmp_path, trainable="features", epochs=2),
                        device="cpu")
    block = features.feature_block(tiny_model)
    trained = {n for n, p in tiny_model.named_parameters()
               if any(p is q for q in [*block.parameters(), *tiny_model.head.parameters()])}
    assert trained and any(not n.startswith("head.") for n in trained)
    for name, p in tiny_model.state_dict().items():
        same = torch.equal(p, result.model.state_dict()[name].cpu())
        assert same == (name not in trained), name
    assert all(p.requires_grad for p in result.model.parameters())  # the freeze is undone


def test_cached_convolutions_give_the_same_fine_tuning_as_the_full_forward(tiny_model, class_splits, tmp_path,
                                                                            monkeypatch):
    assert features.frozen_split(tiny_model) is not None  # the tiny digits CNN is a SmallCNN: the cached path
    params = _params(tmp_path, trainable="features", epochs=2, head_epochs=1)
    cached = run_method("concept_poisoning", tiny_model, class_splits, params, device="cpu").model
    monkeypatch.setattr(features, "frozen_split", lambda model: None)
    full = run_method("concept_poisoning", tiny_model, class_splits, params, device="cpu").model
    for name, p in cached.state_dict().items():
        assert torch.allclose(p, full.state_dict()[name], atol=1e-4), name


class _Toy(nn.Module):
    """x ∈ R⁴ → 6 ReLU units → 2 classes. Units 0 and 1 read x[0] only (class 1's evidence); units 2–5
    read the noise dimensions only, with no head weight toward class 1."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.head = nn.Linear(4, 6), nn.Linear(6, 2)
        with torch.no_grad():
            self.fc1.weight.zero_()
            self.fc1.bias.zero_()
            self.fc1.weight[0, 0], self.fc1.weight[1, 0] = 3.0, 2.0
            for u, d in ((2, 1), (3, 2), (4, 3), (5, 1)):
                self.fc1.weight[u, d] = 1.0
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[1, :2] = 1.0

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def _toy_data(n: int = 400) -> Part:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.randn(n, 4, generator=g) * 20   # wide noise in every dimension ...
    x[:, 0] = y.float()                       # ... but x[0] alone tells the classes apart: 0 or 1
    return Part(tuple(f"t{i}" for i in range(n)), x, y)


def test_class_units_are_the_units_ig_attributes_to_the_class():
    toy, data = _Toy(), _toy_data()
    units = features.class_units(toy, data.x[data.y == 1], [1], share=2 / 6, steps=8, device=torch.device("cpu"))
    assert units.tolist() == [0, 1]


def test_reset_units_redraws_exactly_those_units_and_removes_the_class_from_the_features():
    from unlearn_ops.verify.probe import feature_probe

    toy, data = _Toy(), _toy_data()
    before = {k: v.clone() for k, v in toy.state_dict().items()}
    separable = feature_probe(toy, data, [1])
    features.reset_units(toy, torch.tensor([0, 1]), seed=0)
    after = toy.state_dict()
    changed_rows = (after["fc1.weight"] != before["fc1.weight"]).any(1)
    assert changed_rows.tolist() == [True, True, False, False, False, False]
    assert torch.equal(after["fc1.bias"][2:], before["fc1.bias"][2:]) and (after["fc1.bias"][:2] != 0).all()
    head_cols = (after["head.weight"] != before["head.weight"]).any(0)
    assert head_cols.tolist() == [True, True, False, False, False, False]
    assert torch.equal(after["head.bias"], before["head.bias"])
    bound = 1 / 4 ** 0.5  # nn.Linear's U(±1/√fan_in)
    assert after["fc1.weight"][:2].abs().max() <= bound
    # the class lived in units 0–1 only; re-drawn, they mix x[0] (a step of 1) into noise of std ~20
    assert separable >= 0.99
    assert feature_probe(toy, data, [1]) <= 0.70


def test_reset_needs_a_linear_feature_block_and_is_checked_in_config():
    from unlearn_ops.models.classifiers import ResNet18

    with pytest.raises(NotApplicable, match="Linear last feature block"):
        features.reset_units(ResNet18(), torch.tensor([0]), seed=0)
    for bad in ({"reset_units": 1.0}, {"reset_units": -0.1}, {"reset_units": 0.1}, {"reset_units": 0.1, "trainable": "head"}):
        with pytest.raises(ValueError, match="reset_units"):
            make_config(cp.Config, bad)
    assert make_config(cp.Config, {"reset_units": 0.1, "trainable": "features"}).reset_units == 0.1


def test_reset_variant_resets_the_class_units_then_trains_them(tiny_model, class_splits, tmp_path):
    result = run_method("concept_poisoning", tiny_model, class_splits,
                        _params(tmp_path, trainable="features", reset_units=0.25, epochs=1), device="cpu")
    n_units = tiny_model.head.in_features
    assert result.details["reset_units"] == -(-n_units // 4)  # ceil(0.25 × units)
    assert result.details["trainable"] == "features"
    assert run_method("concept_poisoning", tiny_model, class_splits, _params(tmp_path, epochs=1),
                      device="cpu").details["reset_units"] == 0


def test_head_epochs_then_trains_the_head_alone_on_the_new_embeddings(tiny_model, class_splits, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(poisons, "fit", lambda model, data, cfg, **k: calls.append((model, data, cfg.epochs))
                        or fit(model, data, cfg, **k))
    params = _params(tmp_path, trainable="features", epochs=1, head_epochs=2)
    result = run_method("concept_poisoning", tiny_model, class_splits, params, device="cpu")
    (body, _, body_epochs), (head, feats, head_epochs) = calls
    assert head is result.model.head and body is not head and (body_epochs, head_epochs) == (1, 2)
    retained = poisons.retained_sources(class_splits.retain, make_config(cp.Config, params))
    n = len(retained)
    assert feats.ids[:n] == retained.ids and len(feats) == n + result.details["n_poisons"]
    with torch.no_grad():  # the trained body's embeddings, not the original's
        assert torch.allclose(feats.x[:n], result.model.embed(retained.x), atol=1e-5)
        assert not torch.allclose(feats.x[:n], tiny_model.embed(retained.x), atol=1e-3)


def test_head_epochs_is_checked():
    for bad in ({"head_epochs": -1}, {"head_epochs": 1}, {"head_epochs": 1, "trainable": "head"}):
        with pytest.raises(ValueError, match="head_epochs"):
            make_config(cp.Config, bad)
    assert make_config(cp.Config, {"head_epochs": 1, "trainable": "features"}).head_epochs == 1


# ----------------------------------------------------------------------------- text (tiny BERT)
@pytest.fixture(scope="module")
def text_data():
    return corpus_parts(400, 150)


@pytest.fixture(scope="module")
def tiny_text(text_data) -> TextClassifier:
    spec = tiny_text_spec()
    model = text_classifier(**{k: v for k, v in spec.items() if k != "arch"})
    return fit(model, tokenized_part(model, text_data[0]), TrainConfig(epochs=4, lr=3e-3, batch_size=32, seed=fixture_seed(),
                                                                       device="cpu"))


def _text_class_splits(text_data, cls: int = 1) -> Splits:
    train, _, test, nonmember = text_data
    return Splits(train.where(train.y == cls), train.where(train.y != cls), test, nonmember, 2)


TEXT_FAST = {"analysis_per_class": 60, "text_bank_size": 30, "epochs": 20, "lr": 0.03, "max_poisons": 60}


def test_text_contract(tiny_text, text_data):
    check_contract("concept_poisoning", tiny_text, _text_class_splits(text_data), {**TEXT_FAST, "epochs": 2})


def test_text_concepts_rank_sentiment_words_and_lig_finds_them(tiny_text, text_data):
    splits = _text_class_splits(text_data)
    assert accuracy(tiny_text, tokenized_part(tiny_text, splits.forget)) == 1.0
    result = run_method("concept_poisoning", tiny_text, splits, {**TEXT_FAST, "epochs": 1}, device="cpu")
    assert set(result.details["classes"]["1"]["top_concepts"][:3]) <= set(POS)
    # binary PCBM: class 0's evidence is the negative side of one weight vector, so its top
    # concepts can be any word that argues against class 1, but never a positive word
    assert not set(result.details["classes"]["0"]["top_concepts"]) & set(POS)
    assert result.details["donors"]["1"]["donor"] == 0
    assert result.details["donors"]["1"]["target_concept"] == result.details["classes"]["1"]["top_concepts"][0]
    # LayerIntegratedGradients: the two most important tokens of a snippet are its sentiment words
    part = tokenized_part(tiny_text, splits.forget.subset(range(20)))
    scores = text.token_attributions(tiny_text, part.x, part.y, steps=32, device=torch.device("cpu"))
    special = torch.isin(part.x, torch.tensor(tiny_text.special_ids))
    assert torch.all(scores[special] == 0)
    pos_ids = {tiny_text.tokenizer.convert_tokens_to_ids(w) for w in POS}
    top2 = torch.topk(scores, 2, dim=1).indices
    hits = np.mean([int(part.x[r, c]) in pos_ids for r in range(20) for c in top2[r].tolist()])
    assert hits >= 0.9
    masked = text.mask_tokens(part.x, scores, 2, tiny_text.tokenizer.mask_token_id, tiny_text.special_ids,
                            tiny_text.pad_id)
    assert ((masked != part.x).sum(1) == 2).all()
    assert (masked == tiny_text.tokenizer.mask_token_id).sum() == 40


def test_text_label_poisons_forget_a_class(tiny_text, text_data):
    splits = _text_class_splits(text_data)
    kept = splits.test.where(splits.test.y == 0)
    result = run_method("concept_poisoning", tiny_text, splits, {**TEXT_FAST, "poison": "none"}, device="cpu")
    tok = lambda p: tokenized_part(tiny_text, p)  # noqa: E731
    assert accuracy(result.model, tok(splits.forget)) <= 0.05
    assert accuracy(result.model, tok(splits.test.where(splits.test.y == 1))) <= 0.05
    assert accuracy(result.model, tok(kept)) >= 0.95


def test_text_masked_poisons_need_the_encoder_to_adapt(tiny_text, text_data):
    """LIG masking removes exactly the evidence the relabel must override: with a frozen encoder
    the masked poisons are already 'donor' and barely move the head; unfreezing the last block
    lets them forget. (The benchmark measures the same on MiniLM.)"""
    splits = _text_class_splits(text_data)
    tok = lambda p: tokenized_part(tiny_text, p)  # noqa: E731
    head_only = run_method("concept_poisoning", tiny_text, splits, TEXT_FAST, device="cpu")
    last = run_method("concept_poisoning", tiny_text, splits, {**TEXT_FAST, "trainable": "last", "epochs": 10,
                                                                "lr": 0.01}, device="cpu")
    assert head_only.details["tokens_masked"] >= 5 * head_only.details["n_poisons"]
    assert accuracy(head_only.model, tok(splits.forget)) > 0.5
    assert accuracy(last.model, tok(splits.forget)) <= 0.05
    changed = {n for n, p in last.model.state_dict().items() if not torch.equal(p, tiny_text.state_dict()[n])}
    assert changed and all(n.startswith(("head.", "encoder.encoder.layer.1.")) for n in changed), changed


def test_text_entity_forgetting_uses_the_other_class_as_donor(tiny_text, text_data):
    """One movie's snippets (both labels): every class stays, so each poison takes the other
    class. Here sentiment words decide the label, so retraining without the movie would still
    classify its snippets correctly: success is raising their loss (less member-like) without
    collateral damage, not flipping them all (that would be over-forgetting)."""
    from unlearn_ops.training import per_sample_loss

    train, movies, test, nonmember = text_data
    splits = Splits(train.where(movies == "jaws"), train.where(movies != "jaws"), test, nonmember, 2)
    result = run_method("concept_poisoning", tiny_text, splits, {**TEXT_FAST, "poison": "none", "max_poisons": 0},
                        device="cpu")
    assert result.details["classes_removed"] == [] and result.details["n_poisons"] == len(splits.forget)
    assert {k: v["donor"] for k, v in result.details["donors"].items()} == {"0": 1, "1": 0}
    tok = lambda p: tokenized_part(tiny_text, p)  # noqa: E731
    before = per_sample_loss(tiny_text, tok(splits.forget)).mean()
    assert per_sample_loss(result.model, tok(splits.forget)).mean() > 2 * before
    assert accuracy(result.model, tok(test)) >= 0.95


def test_text_model_save_load_roundtrip(tiny_text, tmp_path):
    spec = tiny_text_spec()
    save_model(tiny_text, spec, tmp_path / "m")
    loaded, loaded_spec = load_model(tmp_path / "m")
    ids = tiny_text.tokenize(["a brilliant film", "dull and tedious"])
    assert loaded_spec == spec and isinstance(loaded, TextClassifier)
    with torch.no_grad():
        assert torch.allclose(loaded(ids), tiny_text(ids), atol=1e-6)


def test_image_modes_do_not_apply_to_text(tiny_text, text_data):
    with pytest.raises(NotApplicable, match="image mode"):
        run_method("concept_poisoning", tiny_text, _text_class_splits(text_data), {**TEXT_FAST, "poison": "full"},
                   device="cpu")
    for extra in ({"trainable": "features"}, {"trainable": "all", "reset_units": 0.1}, {"labels": "nearest"}):
        with pytest.raises(NotApplicable, match="image settings"):
            run_method("concept_poisoning", tiny_text, _text_class_splits(text_data), {**TEXT_FAST, **extra},
                       device="cpu")


# ----------------------------------------------------------------------------- MiniLM (packaged)
@pytest.mark.integration
def test_minilm_rotten_tomatoes_pipeline_runs_offline():
    """The packaged MiniLM on real RT snippets, offline: LayerIntegratedGradients is complete
    (token attributions sum to the logit change from the pad baseline) and label poisons make a
    head trained on 300 snippets forget one movie's snippets."""
    from unlearn_ops.data.sources import load_rotten_tomatoes

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    raw = load_rotten_tomatoes()
    x, y = raw.splits["train"]
    movie = raw.extra["train"]["movie_name"]
    forget_idx = np.flatnonzero(movie == "enigma")[:12]
    part = lambda idx, tag: Part(tuple(f"rt/{tag}/{i:06d}" for i in idx), x[idx], torch.from_numpy(y[idx]))  # noqa: E731
    forget = part(forget_idx, "train")
    retain = part(np.setdiff1d(np.arange(400), forget_idx)[:300], "train")
    splits = Splits(forget, retain, part(np.arange(1000, 1060), "test"), part(np.arange(1200, 1300), "nonmember"), 2)
    model = text_classifier(max_length=48)
    members = retain.concat(forget)
    fit(model.head, Part(members.ids, embed_batched(model, model.tokenize(members.x)), members.y),
        TrainConfig(epochs=30, lr=1e-2, batch_size=64, device="cpu"))

    ids = tokenized_part(model, forget.subset(range(3)))
    scores = text.token_attributions(model, ids.x, ids.y, steps=32, device=torch.device("cpu"))
    special = torch.isin(ids.x, torch.tensor(model.special_ids))
    baseline = torch.where(special, ids.x, torch.full_like(ids.x, model.pad_id))
    with torch.no_grad():
        mask = model.mask_of(ids.x)
        gain = (model(ids.x, mask) - model(baseline, mask)).gather(1, ids.y[:, None])[:, 0]
    assert torch.allclose(scores.sum(1), gain, rtol=0.1, atol=0.05)

    result = run_method("concept_poisoning", model, splits,
                        {"analysis_per_class": 40, "text_bank_size": 40, "poison": "none", "retain_per_class": 60,
                         "epochs": 30, "lr": 1e-2}, device="cpu")
    assert len(result.details["classes"]["1"]["top_concepts"]) == 5
    assert accuracy(model, tokenized_part(model, forget)) >= 0.75
    assert accuracy(result.model, tokenized_part(model, forget)) <= 0.25
