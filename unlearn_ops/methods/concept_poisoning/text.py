"""The text variant: concepts are words embedded by the classifier's encoder; poisons mask each
snippet's most attributed tokens (captum LayerIntegratedGradients) and relabel it."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.methods.concept_poisoning.banks import PhraseBank, embed, frequent_words
from unlearn_ops.methods.concept_poisoning.pcbm import ConceptReport, analysis_part, infer_concepts
from unlearn_ops.methods.concept_poisoning.poisons import finetune, poison_labels, poison_sources, retained_sources

if TYPE_CHECKING:
    from unlearn_ops.methods.concept_poisoning import Config

TEXT_POISON_MODES = ("localized", "random", "none")  # text: mask by LIG | mask at random | label only


def token_attributions(model: nn.Module, ids: torch.Tensor, target: torch.Tensor, steps: int,
                       device: torch.device, batch_size: int = 8) -> torch.Tensor:
    """N × L token importance toward `target`: captum LayerIntegratedGradients on the token
    embedding layer, summed over the hidden size. Baseline: every real token replaced by the pad
    token, [CLS]/[SEP] kept (the paper's pad baseline). Zero on special tokens and padding."""
    from captum.attr import LayerIntegratedGradients

    model.eval()
    lig = LayerIntegratedGradients(lambda i, m: model(i, m), model.token_embeddings)
    special = torch.tensor(model.special_ids)
    out = torch.zeros(ids.shape, dtype=torch.float32)
    for s in range(0, len(ids), batch_size):
        chunk = ids[s:s + batch_size]
        chunk, mask = model.trim(chunk, model.mask_of(chunk))
        real = ~torch.isin(chunk, special)
        base = torch.where(real, torch.full_like(chunk, model.pad_id), chunk)
        with torch.enable_grad():
            attr = lig.attribute(chunk.to(device), baselines=base.to(device), additional_forward_args=(mask.to(device),),
                                 target=target[s:s + batch_size].to(device), n_steps=steps,
                                 internal_batch_size=batch_size * steps)
        score = attr.sum(-1).detach().float().cpu() * real
        out[s:s + len(chunk), :chunk.shape[1]] = score
    return out


def mask_tokens(ids: torch.Tensor, scores: torch.Tensor, k: int, mask_id: int, special: list[int],
                pad_id: int, extra: list[set[int]] | None = None) -> torch.Tensor:
    """Replace each row's top-k scoring real tokens (and any token in `extra[row]`) by `mask_id`."""
    out = ids.clone()
    real = ~torch.isin(ids, torch.tensor(special + [pad_id]))
    ranked = torch.where(real, scores, torch.full_like(scores, -math.inf))
    for r in range(len(ids)):
        n = int(min(k, real[r].sum()))
        if n:
            out[r, torch.topk(ranked[r], n).indices] = mask_id
        if extra and extra[r]:
            hit = torch.isin(ids[r], torch.tensor(sorted(extra[r]))) & real[r]
            out[r, hit] = mask_id
    return out


def text_poison_inputs(model: nn.Module, forget: Part, report: ConceptReport, names: list[str], cfg: Config,
                       rng: np.random.Generator, device: torch.device) -> torch.Tensor:
    """Poisoned token IDs (in memory only). `localized`: mask each snippet's top-k tokens by
    LayerIntegratedGradients toward its label, plus (mask_concepts) the words of its class's top
    concepts; `random`: mask k random real tokens (ablation); `none`: unchanged (label-only)."""
    if cfg.poison == "none":
        return forget.x.clone()
    if cfg.poison == "random":
        scores = torch.from_numpy(rng.random(forget.x.shape).astype(np.float32))
        extra = None
    else:
        scores = token_attributions(model, forget.x, forget.y, cfg.ig_steps, device)
        extra = None
        if cfg.mask_concepts:
            words = {c: {int(t) for k in report.ranking[c]
                         for t in model.tokenizer(names[k], add_special_tokens=False)["input_ids"]}
                     for c in range(len(report.ranking))}
            extra = [words[int(c)] for c in forget.y.tolist()]
    return mask_tokens(forget.x, scores, cfg.mask_top_k, int(model.tokenizer.mask_token_id), model.special_ids,
                       model.pad_id, extra)


def unlearn_text(new: nn.Module, splits: Splits, cfg: Config, dev: torch.device, rng: np.random.Generator,
                 targets: list[int], gone: set[int]) -> tuple[dict[str, Any], list[str]]:
    """The text variant, in place on `new` (a `TextClassifier`; Parts hold strings or token IDs).
    Returns the details and the log."""
    from unlearn_ops.models.text import tokenized_part

    logs: list[str] = []
    timings: dict[str, float] = {}
    start = time.perf_counter()
    analysis_text = analysis_part(splits, cfg.analysis_per_class, cfg.seed)
    if not isinstance(analysis_text.x, np.ndarray) and not cfg.text_concepts:
        raise ValueError("text concept bank: pass `text_concepts` when the splits hold token IDs, not strings")
    phrases = list(cfg.text_concepts) or frequent_words(np.asarray(analysis_text.x), cfg.text_bank_size)
    bank = PhraseBank(new, phrases, dev)
    analysis = tokenized_part(new, analysis_text)
    acts = bank.from_embeddings(embed(new, analysis.x, dev))
    report = infer_concepts(acts, analysis.y, bank.names, splits.num_classes, targets, gone, cfg)
    timings["concepts"] = time.perf_counter() - start

    start = time.perf_counter()
    forget = poison_sources(splits.forget, cfg)
    forget = tokenized_part(new, forget)
    masked = text_poison_inputs(new, forget, report, bank.names, cfg, rng, dev)
    poisons = Part(tuple(f"poison/{i:06d}" for i in range(len(forget))), masked,
                   poison_labels(forget.y, report.donors, cfg.labels, splits.num_classes, rng))
    n_masked, n_poisons = int((masked != forget.x).sum()), len(forget)
    del masked
    timings["poisons"] = time.perf_counter() - start

    start = time.perf_counter()
    retain = tokenized_part(new, retained_sources(splits.retain, cfg))
    finetune(new, retain, poisons, cfg, dev, logs)
    del poisons, forget
    timings["finetune"] = time.perf_counter() - start

    details = {**report.as_details(targets), "bank": "phrases", "forget_classes": targets,
               "classes_removed": sorted(gone), "labels": cfg.labels, "trainable": cfg.trainable,
               "n_poisons": n_poisons, "tokens_masked": n_masked, "n_retain": len(retain), "n_analysis": len(analysis),
               "timings": {k: round(v, 3) for k, v in timings.items()}}
    donors = ", ".join(f"{t}→{d['donor']} ({d['rule']})" for t, d in details["donors"].items())
    logs.insert(0, f"text concepts: {len(bank.names)} phrases; donors {donors}; {n_masked} tokens masked")
    return details, logs

