"""Verification of language-model unlearning (facts data; definitions in research/metrics.md §3.8).

Forget set (the subject's QA pairs), on the original and the paraphrased questions, from greedy
generations:
- `fact_recall`: share of answers that still contain the subject's fact (case-insensitive
  substring of `FactItem.facts`) — the headline "does it still know?" number;
- `rougeL`: ROUGE-L **recall** of the answer against the true answer (TOFU's convention),
  torchmetrics' implementation (rougeL needs no nltk);
- `exact_match`: normalised generated answer == true answer.
Retain set: the same three on a fixed sample of retain QA pairs (utility on what must stay).
General text: perplexity on held-out Rotten Tomatoes snippets (`LOADERS["rt"]`, test split).
Privacy: loss-based MIA, forget answers vs the held-out people's answers (`verify.mia`:
`simple_mia_scores` CV accuracy, `auc` of −loss; 0.5 = indistinguishable).
TOFU truth ratio per forget pair: R = mean_j P(â_j|q)^{1/|â_j|} / P(ã|q)^{1/|ã|} (â perturbed,
ã paraphrased correct answer); **forget quality** = p-value of the two-sample KS test between the
R values of the evaluated model and of the retrained model (1.0 for the retrained model itself).

Scoring runs only the top blocks on prefix states cached per text (`LMEvaluator`): every model
the benchmark compares shares the frozen prefix (checked, else the full model runs).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import ks_2samp

from unlearn_ops.data.facts import FactItem, FactsWorld, prompt_text
from unlearn_ops.data.splits import Splits
from unlearn_ops.models.lm import (
    CausalLM,
    Encoded,
    encode_pairs,
    encode_text,
    generate,
    prefix_states,
    same_prefix,
    scored_logprobs,
)
from unlearn_ops.verify.mia import auc, simple_mia_scores


# --------------------------------------------------------------------------- text metrics
def normalise(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L recall per pair (torchmetrics; lower-cased, punctuation dropped, no stemming)."""
    from torchmetrics.functional.text.rouge import rouge_score

    return np.array([float(rouge_score(p, r, rouge_keys="rougeL")["rougeL_recall"]) if normalise(p) else 0.0
                     for p, r in zip(predictions, references, strict=True)])


def contains_fact(answer: str, facts: Sequence[str]) -> bool:
    low = answer.lower()
    return any(f.lower() in low for f in facts)


def fact_recall(answers: Sequence[str], items: Sequence[FactItem]) -> float:
    """Share of `answers` that state their item's fact (`contains_fact`); NaN when there are none,
    so a gate on it fails rather than passing on nothing asked."""
    stated = [contains_fact(a, it.facts) for a, it in zip(answers, items, strict=True)]
    return float(np.mean(stated)) if stated else float("nan")


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    return np.array([normalise(p) == normalise(r) for p, r in zip(predictions, references, strict=True)], dtype=float)


def truth_ratio(true_lp: np.ndarray, true_len: np.ndarray, false_lp: np.ndarray, false_len: np.ndarray) -> np.ndarray:
    """R per sample from summed log-probs and lengths: mean_j exp(lp_j/len_j) / exp(lp/len).

    `false_*` have shape (n, n_perturbed). Computed in log space for stability.
    """
    true_norm = true_lp / np.maximum(true_len, 1)
    false_norm = false_lp / np.maximum(false_len, 1)
    log_mean_false = np.log(np.mean(np.exp(false_norm - false_norm.max(1, keepdims=True)), axis=1)) \
        + false_norm.max(1)
    return np.exp(log_mean_false - true_norm)


def forget_quality(values: np.ndarray, reference: np.ndarray) -> float:
    """TOFU forget quality: KS-test p-value of the truth-ratio distributions (1.0 = same as retrained)."""
    if len(values) == 0 or len(reference) == 0:
        return float("nan")
    return float(ks_2samp(values, reference).pvalue)


# --------------------------------------------------------------------------- the evaluator
def rt_snippets(n: int = 64, seed: int = 0) -> list[str]:
    """A fixed sample of held-out Rotten Tomatoes snippets (test split; never trained on)."""
    from unlearn_ops.data.sources import LOADERS

    text, _ = LOADERS["rt"]().splits["test"]
    idx = np.sort(np.random.default_rng(seed).permutation(len(text))[:n])
    return [str(text[i]) for i in idx]


@dataclass
class LMEvaluator:
    """Evaluates any model sharing `reference`'s frozen prefix on one forget request.

    `world` regenerates paraphrases, perturbed answers and facts from the sample IDs. The prefix
    states of every scored text are computed once (on `reference`) and reused for each model.
    """

    reference: CausalLM
    world: FactsWorld
    splits: Splits
    retain_n: int = 40            # retain QA pairs evaluated (fixed seeded sample)
    ppl_texts: Sequence[str] = ()  # general text for perplexity (e.g. rt_snippets())
    max_new_tokens: int = 24
    max_len: int = 64
    seed: int = 0
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.forget = [self.world.item(i) for i in self.splits.forget.ids]
        self.retain = [self.world.item(i) for i in self.splits.retain.sample(self.retain_n, self.seed).ids]
        self.nonmember = [self.world.item(i) for i in self.splits.nonmember.ids]

    # ---- scoring with cached prefix states
    def _scores(self, model: CausalLM, key: str, enc: Encoded) -> tuple[np.ndarray, np.ndarray]:
        if not same_prefix(model, self.reference):
            sums, counts = scored_logprobs(model, enc)
        else:
            if key not in self._cache:
                self._cache[key] = prefix_states(self.reference, enc)
            sums, counts = scored_logprobs(model, enc, self._cache[key])
        return sums.numpy().astype(np.float64), counts.numpy().astype(np.float64)

    def _pairs(self, items: Sequence[FactItem], answers: Sequence[str], eos: bool = True) -> Encoded:
        return encode_pairs(self.reference.tokenizer, [prompt_text(it.question) for it in items],
                            [f" {a}" for a in answers], self.max_len, add_eos=eos)

    def answer_losses(self, model: CausalLM, items: Sequence[FactItem], key: str) -> np.ndarray:
        """Mean per-token NLL of the true answers (the training objective): the MIA feature."""
        lp, n = self._scores(model, key, self._pairs(items, [it.answer for it in items]))
        return -lp / np.maximum(n, 1)

    def truth_ratios(self, model: CausalLM, items: Sequence[FactItem], key: str) -> np.ndarray:
        k = len(items[0].perturbed_answers) if items else 0
        true_lp, true_n = self._scores(model, f"{key}/para", self._pairs(
            items, [it.paraphrased_answer for it in items], eos=False))
        flat_items = [it for it in items for _ in range(k)]
        false_lp, false_n = self._scores(model, f"{key}/perturbed", self._pairs(
            flat_items, [a for it in items for a in it.perturbed_answers], eos=False))
        return truth_ratio(true_lp, true_n, false_lp.reshape(-1, k), false_n.reshape(-1, k))

    def perplexity(self, model: CausalLM) -> float:
        if not self.ppl_texts:
            return float("nan")
        lp, n = self._scores(model, "ppl", encode_text(self.reference.tokenizer, self.ppl_texts, self.max_len))
        return float(np.exp(-lp.sum() / n.sum()))

    # ---- generation metrics
    def generation_metrics(self, model: CausalLM, items: Sequence[FactItem], prefix: str,
                           paraphrased: bool = False) -> tuple[dict[str, float], list[str]]:
        if paraphrased:
            questions = [q for it in items for q in it.paraphrased_questions]
            refs = [it for it in items for _ in it.paraphrased_questions]
        else:
            questions, refs = [it.question for it in items], list(items)
        answers = generate(model, [prompt_text(q) for q in questions], self.max_new_tokens)
        gold = [it.answer for it in refs]
        return ({f"{prefix}_fact_recall": fact_recall(answers, refs),
                 f"{prefix}_rougeL": float(rouge_l_recall(answers, gold).mean()),
                 f"{prefix}_exact_match": float(exact_match(answers, gold).mean())}, answers)

    def evaluate(self, model: CausalLM, reference_truth_ratios: np.ndarray | None = None,
                 generations: bool = True) -> dict:
        """All metrics for `model`. Returns a flat dict of floats plus `truth_ratios` and
        `answers` (lists, for reports)."""
        model.eval()
        out: dict = {}
        answers: dict[str, list[str]] = {}
        if generations:
            for prefix, items, para in (("forget", self.forget, False), ("forget_para", self.forget, True),
                                        ("retain", self.retain, False)):
                metrics, ans = self.generation_metrics(model, items, prefix, para)
                out.update(metrics)
                answers[prefix] = ans
        lf = self.answer_losses(model, self.forget, "forget")
        ln = self.answer_losses(model, self.nonmember, "nonmember")
        out["forget_answer_nll"] = float(lf.mean())
        out["nonmember_answer_nll"] = float(ln.mean())
        out["retain_answer_nll"] = float(self.answer_losses(model, self.retain, "retain").mean())
        out["mia_loss_auc"] = auc(-lf, -ln)
        out["mia_simple"] = simple_mia_scores(np.log1p(lf), np.log1p(ln), seed=self.seed)
        tr = self.truth_ratios(model, self.forget, "forget")
        out["forget_truth_ratio"] = float(np.mean(tr))
        if reference_truth_ratios is not None:
            out["forget_quality"] = forget_quality(tr, np.asarray(reference_truth_ratios))
        out["perplexity"] = self.perplexity(model)
        out["truth_ratios"] = tr.tolist()
        out["answers"] = answers
        return out


def production_metrics(model: CausalLM, splits: Splits, world: FactsWorld, *, champion: CausalLM | None = None,
                       reference: dict | None = None, ppl_texts: Sequence[str] = (), seed: int = 0) -> dict[str, float]:
    """What LM gates read, without a retrained model: fact recall on the forget set (original and
    paraphrased questions), loss-MIA AUC forget vs never-seen people, and — given the previous
    champion (or its numbers in `reference`) — the retain ROUGE-L drop and relative perplexity change.

    `forget_fact_recall_excess` = forget fact recall − the same model's fact recall on the
    never-seen people: what it still knows about the subject beyond what it guesses about anyone
    (templated facts are partly guessable: a common city, a plausible year). A retrained model
    sits near 0 by construction, so this is the production stand-in for "≤ retrained + 5 points".
    `relearn_recall_10`: the relearning attack (`verify.lm_relearn`), recall of half of the person's
    facts after 10 steps on the other half.
    """
    ev = LMEvaluator(champion if champion is not None else model, world, splits, ppl_texts=ppl_texts, seed=seed)
    if champion is not None and reference is None:
        reference = {**ev.generation_metrics(champion, ev.retain, "retain")[0], "perplexity": ev.perplexity(champion)}
    m = ev.evaluate(model)
    out = {k: v for k, v in m.items() if isinstance(v, float)}
    out.update(ev.generation_metrics(model, ev.nonmember, "nonmember")[0])
    out["forget_fact_recall_excess"] = out["forget_fact_recall"] - out["nonmember_fact_recall"]
    from unlearn_ops.verify.lm_relearn import lm_relearn  # lazy: it builds on this module

    device = str(next(model.parameters()).device)
    relearned = lm_relearn(model, ev.forget, ev.retain, steps=(10,), seed=seed, device=device)
    out["relearn_recall_10"] = relearned["relearn_recall_10"]
    out["forget_set_size"] = float(len(ev.forget))
    if reference:
        if "retain_rougeL" in reference:
            out["retain_rougeL_drop"] = reference["retain_rougeL"] - out["retain_rougeL"]
        if "perplexity" in reference and np.isfinite(out["perplexity"]):
            out["perplexity_change"] = out["perplexity"] / reference["perplexity"] - 1.0
    return out


__all__ = ["LMEvaluator", "contains_fact", "exact_match", "fact_recall", "forget_quality", "normalise", "production_metrics",
           "rouge_l_recall", "rt_snippets", "truth_ratio"]

