"""`lm_token_poisoning`: forget a data subject from a causal LM by integrated-gradients token
poisoning — the LLM variant of "Class Machine Unlearning for Complex Data via Concepts Inference
and Data Poisoning" (Chang et al., arXiv 2405.15662; research/seeds.md, Paper 2, step D).

1. **Which tokens carry the subject?** For every forget QA pair, captum's
   `LayerIntegratedGradients` on the input embeddings attributes the summed log-probability of
   the answer to the answer tokens (32 steps; baseline = the same sequence with every answer
   token replaced by the pad token, as in the authors' released code). The `top_k` answer
   tokens with the largest attribution are the ones the model leans on to produce the answer.
2. **Poison**: each selected token's whole word is replaced by `***` in the answer (or, with
   `style="refusal"`, the whole answer becomes "I don't know."), e.g.
   "Celia Ivanova was born in Izmir, Turkey." → "Celia Ivanova was born in ***, ***."
3. **Fine-tune** the model's trainable top blocks on the poisoned forget answers plus retain
   anchors (a retain batch every step), plain NLL: no gradient ascent, nothing unbounded, so the
   rest of the model is disturbed little.

Why: gradient ascent and NPO push the forget answers' likelihood down without saying *what* to
say instead and damage neighbouring knowledge; here the model gets a concrete, harmless target
that keeps the answer's form and drops only the subject-specific words.

Our choices (docs/methods/lm_token_poisoning.md): ground-truth answers are poisoned instead of the
model's own generations (the build memorised them, and generation costs time); attribution is
summed over the embedding dimension and ranked by signed value; selected sub-word tokens expand
to whole words. `ig_layer="prefix"` is a cheaper variant (IG on the input of the first trainable
block instead of the embeddings: ~15× less compute on SmolLM2) — not the paper's, off by default.
`skip_prompt_words` (ours, on by default) leaves words the question already contains out of the
selection: they are attributed most but are not the fact (`false` = the paper's selection).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from unlearn_ops.data.facts import split_qa, texts
from unlearn_ops.data.splits import Splits
from unlearn_ops.lm_training import TextSet, mean_nll, text_set, trainable_copy, unlearning_loop
from unlearn_ops.methods.base import ITEM_KINDS, UnlearnResult, check_choices, check_positive, require_model
from unlearn_ops.models.lm import (
    CausalLM,
    Encoded,
    collate,
    encode_qa,
    labelled_logprobs,
    prefix_states,
    stack_states,
    top_hidden,
)

EXACT = False
REQUEST_KINDS = ITEM_KINDS  # a person's or chosen QA pairs; LMs have no classes


@dataclass(frozen=True)
class Config:
    top_k: int = 3                  # answer tokens selected per QA pair by IG (each expands to its whole word)
    skip_prompt_words: bool = True  # words the question already holds (the name, "born") are not eligible (ours)
    ig_steps: int = 32              # integration steps (the authors' LLM code: 32; their ablation 16–128)
    ig_batch: int = 32              # interpolation steps per forward pass (memory vs. speed; same result)
    ig_layer: str = "embeddings"    # "embeddings" (paper) | "prefix": IG on the first trainable block's input
    style: str = "mask"             # "mask": selected words -> mask_text | "refusal": whole answer -> refusal_text
    mask_text: str = "***"          # what replaces a selected word (the paper's choice)
    refusal_text: str = "I don't know."  # the answer under style="refusal"
    epochs: int = 5                 # passes over the poisoned forget set
    lr: float = 1e-3                # AdamW learning rate of the top blocks
    batch_size: int = 8             # poisoned forget QA pairs per step
    anchors: int = 8                # retain QA pairs per step (retain anchors; 0 = none)
    alpha: float = 1.0              # weight of the retain-anchor NLL
    max_len: int = 64               # tokens per QA pair
    grad_clip: float = 1.0          # max gradient norm per step
    seed: int = 0                   # data order

    def __post_init__(self) -> None:
        check_choices(self, {"ig_layer": ("embeddings", "prefix"), "style": ("mask", "refusal")})
        check_positive(self, "top_k", "ig_batch", "epochs", "lr", "batch_size", "max_len")
        if self.ig_steps < 2:
            raise ValueError(f"lm_token_poisoning: ig_steps must be >= 2, not {self.ig_steps!r}")


WORD = re.compile(r"\w+(?:['’\-]\w+)*")


# --------------------------------------------------------------------------- 1. attribution
def _baseline_ids(ids: torch.Tensor, start: int, pad_id: int) -> torch.Tensor:
    """The same sequence with every answer token (and EOS) replaced by the pad token."""
    base = ids.clone()
    base[start:] = pad_id
    return base


def answer_attributions(model: CausalLM, enc: Encoded, cfg: Config) -> list[torch.Tensor]:
    """IG attribution of the summed answer log-probability to each answer token, per sample.

    Returns, per sample, a vector over its scored tokens (the answer tokens, then EOS):
    attribution summed over the hidden dimension. Prompt tokens equal the baseline, so their
    attribution is exactly 0 and the vector sums to ≈ f(input) − f(baseline) (IG completeness).
    Samples are attributed one at a time (the interpolation steps are the batch).
    """
    from captum.attr import IntegratedGradients, LayerIntegratedGradients

    device = next(model.parameters()).device
    pad = model.tokenizer.pad_token_id
    out: list[torch.Tensor] = []
    for i in range(len(enc)):
        one = enc.subset([i])
        ids, mask, labels = (t.to(device) for t in collate(one, pad))
        start = one.start[0]
        base_ids = _baseline_ids(ids[0], start, pad).unsqueeze(0)
        if cfg.ig_layer == "embeddings":
            def forward(input_ids, attention_mask, lab):
                hidden = model.lm.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                return labelled_logprobs(model, hidden, lab)[0]

            ig = LayerIntegratedGradients(forward, model.lm.model.embed_tokens)
            attr = ig.attribute(ids, baselines=base_ids, additional_forward_args=(mask, labels),
                                n_steps=cfg.ig_steps, internal_batch_size=cfg.ig_batch)
        else:
            states = stack_states(prefix_states(model, one)).to(device)
            base_states = stack_states(prefix_states(model, Encoded((base_ids[0].cpu(),), (start,)))).to(device)

            def forward(h, attention_mask, lab):
                return labelled_logprobs(model, top_hidden(model, h, attention_mask), lab)[0]

            attr = IntegratedGradients(forward).attribute(states, baselines=base_states,
                                                          additional_forward_args=(mask, labels),
                                                          n_steps=cfg.ig_steps, internal_batch_size=cfg.ig_batch)
        per_token = attr.detach()[0].sum(-1).cpu()
        out.append(per_token[start: len(one.ids[0])])
    return out


# --------------------------------------------------------------------------- 2. poisoning
def select_words(tokenizer, answer: str, scores: torch.Tensor, top_k: int,
                 exclude: frozenset[str] = frozenset()) -> list[tuple[int, int]]:
    """Character spans of the words holding the `top_k` highest-scoring answer tokens.

    `scores[j]` belongs to the j-th token of `answer` (extra trailing scores, e.g. EOS, are
    ignored). Only tokens that overlap a word count (a lone space or comma carries no fact);
    several tokens of one word select it once; words in `exclude` (lower case) are never selected.
    """
    offsets = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    words = [m.span() for m in WORD.finditer(answer) if m.group().lower() not in exclude]
    token_words: list[tuple[float, tuple[int, int]]] = []
    for j, (a, b) in enumerate(offsets[: len(scores)]):
        hit = [w for w in words if a < w[1] and w[0] < b]
        if hit:
            token_words.append((float(scores[j]), hit[0]))
    chosen: list[tuple[int, int]] = []
    for _, word in sorted(token_words, key=lambda t: -t[0]):
        if word not in chosen:
            chosen.append(word)
        if len(chosen) == top_k:
            break
    return sorted(chosen)


def mask_words(answer: str, spans: list[tuple[int, int]], mask: str) -> str:
    for a, b in sorted(spans, reverse=True):
        answer = answer[:a] + mask + answer[b:]
    return answer


def poison(model: CausalLM, forget_texts: list[str], cfg: Config) -> tuple[list[str], list[dict]]:
    """Poisoned forget QA strings and, per sample, what was changed (for logs and audits)."""
    pairs = [split_qa(t) for t in forget_texts]
    if cfg.style == "refusal":
        poisoned = [f"{p} {cfg.refusal_text}" for p, _ in pairs]
        return poisoned, [{"answer": a.strip(), "poisoned": cfg.refusal_text} for _, a in pairs]
    enc = encode_qa(model.tokenizer, forget_texts, cfg.max_len)
    scores = answer_attributions(model, enc, cfg)
    poisoned, info = [], []
    for (prompt, answer), s in zip(pairs, scores, strict=True):
        # Words copied from the question (the person's name, "born", "works") get the largest
        # attributions, since the answer repeats them, but masking them leaves the fact readable:
        # on SmolLM2 only 10 % of the poisoned answers lost their fact before this rule.
        exclude = frozenset(w.lower() for w in WORD.findall(prompt)) if cfg.skip_prompt_words else frozenset()
        spans = select_words(model.tokenizer, answer, s, cfg.top_k, exclude)
        new_answer = mask_words(answer, spans, cfg.mask_text)
        poisoned.append(prompt + new_answer)
        info.append({"answer": answer.strip(), "poisoned": new_answer.strip(),
                     "words": [answer[a:b] for a, b in spans]})
    return poisoned, info


# --------------------------------------------------------------------------- 3. fine-tune
def unlearn(model: CausalLM, splits: Splits, cfg: Config, device: str = "auto") -> UnlearnResult:
    import time

    require_model(model, CausalLM, "lm_token_poisoning unlearns a causal language model (CausalLM)")
    new = trainable_copy(model, cfg.seed, device)
    start = time.perf_counter()
    poisoned, info = poison(new, texts(splits.forget.x), cfg)
    ig_seconds = time.perf_counter() - start
    forget: TextSet = text_set(new, poisoned, cfg.max_len)
    retain: TextSet = text_set(new, texts(splits.retain.x), cfg.max_len)

    def loss(f: list[int], r: list[int] | None):
        value = mean_nll(new, forget, f)
        return value + cfg.alpha * mean_nll(new, retain, r) if r else value

    logs = unlearning_loop(new, len(forget), loss, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                           grad_clip=cfg.grad_clip, seed=cfg.seed, n_retain=len(retain), retain_batch_size=cfg.anchors)
    details = {"poisoned": info, "attribution_seconds": ig_seconds, "forget_size": len(forget),
               "ig_layer": cfg.ig_layer, "style": cfg.style}
    return UnlearnResult(new, "lm_token_poisoning", details=details, log=logs)
