"""Relearning attack on a language model: do a person's facts come back when the attacker teaches
it some of the *others*?

The forget set is split per person: every other QA pair is the attack set, the rest the probe
set. A copy of the model is fine-tuned for a few full-batch steps on the attack pairs mixed with
as many retained pairs (as `verify.relearn` mixes retain samples: without them a few steps on a
handful of pairs wreck what the model knows, and even the original "forgets" the probe facts),
and fact recall is measured on the probe questions (greedy answers). The facts of one person are drawn
independently, so a model that never saw the person learns nothing about the probe facts from the
attack pairs: it stays at its guess rate. A model that only suppressed the answers (the weights
still hold them) gets them back within a few steps — the LM form of `verify.relearn`
(Hu et al. 2024, "Jogging the memory of unlearned LLMs").
"""

from __future__ import annotations

from collections.abc import Sequence

from unlearn_ops.data.facts import FactItem, prompt_text
from unlearn_ops.lm_training import mean_nll, optimizer_for, step, text_set, trainable_copy
from unlearn_ops.models.lm import CausalLM, generate
from unlearn_ops.verify.lm import fact_recall


def attack_and_probe(items: Sequence[FactItem]) -> tuple[list[FactItem], list[FactItem]]:
    """Per person (in ID order), the even-position pairs attack and the odd-position pairs probe."""
    attack, probe = [], []
    for subject in sorted({it.subject_id for it in items}):
        own = sorted((it for it in items if it.subject_id == subject), key=lambda it: it.sample_id)
        attack += own[0::2]
        probe += own[1::2]
    return attack, probe


def probe_recall(model: CausalLM, probe: Sequence[FactItem], max_new_tokens: int = 24) -> float:
    return fact_recall(generate(model, [prompt_text(it.question) for it in probe], max_new_tokens), probe)


def lm_relearn(model: CausalLM, items: Sequence[FactItem], retain: Sequence[FactItem], steps: tuple[int, ...] = (3, 10),
               lr: float = 2e-4, grad_clip: float = 1.0, seed: int = 0, device: str = "cpu") -> dict[str, float]:
    """`relearn_recall_<k>`: probe fact recall after k AdamW steps on the attack pairs plus as many
    `retain` pairs (k = 0: before). The caller's model is not modified. Needs at least two pairs
    per person (else NaN)."""
    attack, probe = attack_and_probe(items)
    if not attack or not probe:
        return {f"relearn_recall_{k}": float("nan") for k in (0, *steps)}
    m = trainable_copy(model, seed, device)
    m.eval()
    out = {"relearn_recall_0": probe_recall(m, probe)}
    data = text_set(m, [it.text for it in (*attack, *retain[: len(attack)])])
    opt = optimizer_for(m, lr)
    everything = list(range(len(data)))
    for k in range(1, max(steps) + 1):
        m.train()
        step(m, opt, mean_nll(m, data, everything), grad_clip)
        if k in steps:
            m.eval()
            out[f"relearn_recall_{k}"] = probe_recall(m, probe)
    return out


__all__ = ["attack_and_probe", "lm_relearn", "probe_recall"]
