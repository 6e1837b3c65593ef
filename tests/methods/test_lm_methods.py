"""LM unlearning methods on a tiny Llama: the method contract, and that the forget answers fade."""

import re

import numpy as np
import pytest
import torch

from tests.lm_fixtures import TINY_RETRAIN, TinyLM, tiny_lm_bundle
from tests.methods.contract import check_contract
from unlearn_ops.data.facts import split_qa, texts
from unlearn_ops.methods import run_method
from unlearn_ops.methods.base import NotApplicable
from unlearn_ops.methods.lm_token_poisoning import Config, answer_attributions, mask_words, poison, select_words
from unlearn_ops.models.lm import collate, encode_qa, labelled_logprobs, scored_logprobs

FAST = {"lm_token_poisoning": {"epochs": 3, "ig_steps": 8},
        "grad_ascent": {"epochs": 3, "lr": 1e-3},
        "grad_diff": {"epochs": 3, "lr": 1e-3},
        "npo": {"epochs": 3, "lr": 1e-3},
        "lm_retrain": {**TINY_RETRAIN, "epochs": 3}}


@pytest.fixture(scope="session")
def tiny_lm() -> TinyLM:
    return tiny_lm_bundle()   # built once per session (lru-cached), shared by the LM test modules


def forget_nll(model, splits) -> float:
    enc = encode_qa(model.tokenizer, texts(splits.forget.x))
    s, c = scored_logprobs(model, enc)
    return float(-s.sum() / c.sum())


def params(name, tiny_lm, **extra):
    p = {**FAST[name], **extra}
    if name == "lm_retrain":
        p["base_dir"] = str(tiny_lm.base_dir)
    return p


@pytest.mark.parametrize("name", sorted(FAST))
def test_contract(name, tiny_lm):
    check_contract(name, tiny_lm.model, tiny_lm.splits, params(name, tiny_lm))


@pytest.mark.parametrize("name", sorted(FAST))
def test_a_classifier_is_not_applicable(name, tiny_model, class_splits):
    with pytest.raises(NotApplicable, match="CausalLM"):
        run_method(name, tiny_model, class_splits, device="cpu")


@pytest.mark.parametrize("name,extra", [("lm_token_poisoning", {"epochs": 10}), ("grad_ascent", {"epochs": 5}),
                                        ("grad_diff", {"epochs": 5}), ("npo", {"epochs": 5}),
                                        ("lm_retrain", {"epochs": 30})])
def test_forget_answers_become_less_likely(name, extra, tiny_lm):
    before = forget_nll(tiny_lm.model, tiny_lm.splits)
    result = run_method(name, tiny_lm.model, tiny_lm.splits, params(name, tiny_lm, **extra), device="cpu")
    assert forget_nll(result.model, tiny_lm.splits) > before + 0.1


def test_retrain_knows_the_retained_people_but_not_the_forgotten_one(tiny_lm):
    result = run_method("lm_retrain", tiny_lm.model, tiny_lm.splits, params("lm_retrain", tiny_lm, epochs=30), device="cpu")
    enc = encode_qa(tiny_lm.model.tokenizer, texts(tiny_lm.splits.retain.x))
    s, c = scored_logprobs(result.model, enc)
    retain_nll = float(-s.sum() / c.sum())
    forgotten = forget_nll(result.model, tiny_lm.splits)
    assert forgotten > forget_nll(tiny_lm.model, tiny_lm.splits) + 1.0
    assert retain_nll < 0.5 < forgotten


def test_retrain_refuses_a_base_that_is_not_this_models(tiny_lm, tmp_path):
    from unlearn_ops.models.lm import save_lm, tiny_llama

    other = save_lm(tiny_llama(tiny_lm.model.tokenizer, layers=3, hidden=48, trainable_blocks=2, seed=7), tmp_path / "o")
    with pytest.raises(ValueError, match="not this model's base"):
        run_method("lm_retrain", tiny_lm.model, tiny_lm.splits, {**FAST["lm_retrain"], "base_dir": str(other)},
                   device="cpu")


def test_integrated_gradients_are_complete_and_zero_on_the_prompt(tiny_lm):
    """IG completeness: attributions over the answer sum to f(input) − f(pad baseline)."""
    model = tiny_lm.model
    enc = encode_qa(model.tokenizer, texts(tiny_lm.splits.forget.x[:2]))
    attrs = answer_attributions(model, enc, Config(ig_steps=64))
    for i, a in enumerate(attrs):
        one = enc.subset([i])
        ids, mask, labels = collate(one, model.tokenizer.pad_token_id)
        base = ids.clone()
        base[0, one.start[0]:] = model.tokenizer.pad_token_id
        with torch.no_grad():
            f = [labelled_logprobs(model, model.lm.model(input_ids=x, attention_mask=mask).last_hidden_state, labels)[0]
                 for x in (ids, base)]
        assert len(a) == len(one.ids[0]) - one.start[0]
        assert float(a.sum()) == pytest.approx(float(f[0] - f[1]), rel=0.05, abs=0.05)


def test_words_are_selected_by_score_and_masked_whole():
    from tests.lm_fixtures import tiny_lm_bundle

    tok = tiny_lm_bundle().model.tokenizer
    answer = " Celia Ivanova was born in Izmir, Turkey."
    n = len(tok(answer, add_special_tokens=False)["input_ids"])
    offsets = tok(answer, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    scores = torch.zeros(n + 1)                                   # + EOS, ignored
    lo = answer.index("Izmir")
    izmir = [j for j, (a, b) in enumerate(offsets) if a < lo + 5 and lo < b]
    scores[izmir[-1]] = 5.0                                       # one sub-word of "Izmir" is the most important
    scores[n] = 100.0                                             # EOS never selects a word
    spans = select_words(tok, answer, scores, top_k=1)
    assert [answer[a:b] for a, b in spans] == ["Izmir"]
    assert mask_words(answer, spans, "***") == " Celia Ivanova was born in ***, Turkey."
    # words the question already holds are never selected, however high their score
    scores[0] = 50.0                                              # "Celia", copied from the question
    assert [answer[a:b] for a, b in select_words(tok, answer, scores, 1)] == ["Celia"]
    excluded = frozenset({"celia", "ivanova", "was", "born"})
    assert [answer[a:b] for a, b in select_words(tok, answer, scores, 1, excluded)] == ["Izmir"]


def test_poisoning_keeps_the_question_and_masks_k_words(tiny_lm):
    forget = texts(tiny_lm.splits.forget.x)
    poisoned, info = poison(tiny_lm.model, forget, Config(top_k=2, ig_steps=8))
    for old, new, d in zip(forget, poisoned, info, strict=True):
        assert split_qa(new)[0] == split_qa(old)[0]
        # at most k words; fewer when the answer adds fewer new words ("... born in 1957." -> "1957")
        assert 1 <= len(d["words"]) <= 2 and new.count("***") == len(d["words"])
        question = split_qa(old)[0].lower()
        assert not any(re.search(rf"\b{re.escape(w.lower())}\b", question) for w in d["words"]), (old, d)
    paper, paper_info = poison(tiny_lm.model, forget, Config(top_k=2, ig_steps=8, skip_prompt_words=False))
    assert all(len(d["words"]) == 2 for d in paper_info)
    refusal, _ = poison(tiny_lm.model, forget, Config(style="refusal"))
    assert all(split_qa(t)[1] == " I don't know." for t in refusal)


def test_token_poisoning_keeps_retain_knowledge_better_than_grad_ascent(tiny_lm):
    enc = encode_qa(tiny_lm.model.tokenizer, texts(tiny_lm.splits.retain.x))

    def retain_nll(m):
        s, c = scored_logprobs(m, enc)
        return float(-s.sum() / c.sum())

    tp = run_method("lm_token_poisoning", tiny_lm.model, tiny_lm.splits, {"epochs": 10, "ig_steps": 8}, device="cpu")
    ga = run_method("grad_ascent", tiny_lm.model, tiny_lm.splits, {"epochs": 10, "lr": 1e-3}, device="cpu")
    assert forget_nll(ga.model, tiny_lm.splits) > forget_nll(tiny_lm.model, tiny_lm.splits)
    assert retain_nll(tp.model) < retain_nll(ga.model)
    assert np.isfinite(retain_nll(tp.model))


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError, match="ig_layer"):
        Config(ig_layer="attention")
    with pytest.raises(ValueError, match="style"):
        Config(style="shout")
