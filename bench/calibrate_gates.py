"""Gate calibration: measure the production-gate metrics of retrain vs noop (and baselines), propose thresholds.

    python -m bench calibrate_gates [--seeds 3] [--classes 0,6] [--methods finetune,salun] [--quick --out-dir DIR]

Production gates must not need a retrain (that would defeat unlearning), so they compare the
forget set with non-members of the same classes and utility with the previous champion
(`unlearn_ops.verify.production_metrics`). Their thresholds are calibrated here, where the retrain
reference exists:

* item deletion, on the memorizing base (`bench.memorizing`, the `random10` base): per seed a random
  10 % forget set; `noop` (must fail), `retrain` (must pass), a few baselines and an over-forgetting
  run (NegGrad+ without its retain term, far too long: must fail the utility gate). The forget set
  is also cut to 10 / 30 / 100 / 300 samples to see how each statistic behaves for small requests
  (the retrained model never saw any of them, so it is a valid reference for every cut);
* class deletion, on the build's 3-epoch CNN (`bench.references`, the `class` base): `noop` and
  `retrain` for the given classes.

Proposal rules (written next to the numbers in the report):
* `forget_accuracy_z` ≤ 3: the pooled two-proportion z of forget vs non-member accuracy is ≈ N(0, 1)
  for a model that never saw the forget set, whatever its size (3 ⇒ ≈ 0.1 % false alarms); kept at
  3 unless a retrained model exceeds it;
* `mia_loss_auc`: the largest retrain value over seeds and cuts ≥ 100 samples, plus a margin of 0.05;
* `test_accuracy_drop`: the largest retrain drop, plus 0.01, at least 0.01;
* `forget_set_size` (min): the smallest cut at which `noop` fails the z and AUC gates in every seed
  (below it the population tests cannot tell a no-op from a retrain, so the gate must not judge);
* class gates: retrain gives 0 forget accuracy, so 0.02 stays; `retained_test_accuracy_drop`:
  the largest retrain drop plus 0.01, at least 0.02.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import compare
from bench import references as R
from bench.common import OUT_DIR, machine, md_table, mean_std, rerender, write_results
from bench.memorizing import Memorizing
from flows.params import load_params
from unlearn_ops.data.splits import Splits
from unlearn_ops.methods import run_method
from unlearn_ops.verify import production_metrics

NAME = "calibrate_gates"
FRACTION = 0.10
CUTS = (10, 30, 100, 300)
ITEM_KEYS = ("mia_loss_auc", "mia_simple", "forget_accuracy_gap", "forget_accuracy_z", "test_accuracy_drop")
CLASS_KEYS = ("forget_accuracy", "forget_class_test_accuracy", "retained_test_accuracy_drop")
BASELINES = "finetune,neg_grad_plus,salun"
OVERFORGET = {"alpha": 0.0, "epochs": 30, "min_steps": 200, "lr": 1e-2, "max_grad_norm": 0.0}
QUICK = Memorizing(dataset="digits", subset_size=500, epochs=30, lr=3e-3, batch_size=32)


def item_rows(mem: Memorizing, seeds: list[int], methods: list[str], unlearn: dict, quick: bool) -> list[dict]:
    base, _ = mem.base()
    rows = []
    for seed in seeds:
        forget = mem.forget_ids(FRACTION, seed)
        splits = mem.splits(forget)
        ref = production_metrics(base, splits, seed=seed)
        models = {"noop": base, "retrain": mem.retrain(forget, seed)[0]}
        for name in methods:
            params = compare.method_params(name, unlearn, seed, compare.QUICK_OVERRIDES.get(name) if quick else None)
            models[name] = run_method(name, base, splits, params).model.cpu().eval()
        models["over-forgetting"] = run_method("neg_grad_plus", base, splits, {**OVERFORGET, "seed": seed}).model.cpu()
        for name, model in models.items():
            m = production_metrics(model, splits, reference_test_accuracy=ref["test_accuracy"], seed=seed)
            rows.append({"seed": seed, "model": name, "n_forget": len(splits.forget), **{k: m[k] for k in ITEM_KEYS}})
            if name in ("noop", "retrain"):
                for n in CUTS:
                    if n >= len(splits.forget):
                        continue
                    cut = Splits(splits.forget.sample(n, seed), splits.retain, splits.test, splits.nonmember,
                                 splits.num_classes)
                    mc = production_metrics(model, cut, reference_test_accuracy=ref["test_accuracy"], seed=seed)
                    rows.append({"seed": seed, "model": name, "n_forget": n, **{k: mc[k] for k in ITEM_KEYS}})
        print(f"[{NAME}] item seed {seed} done", flush=True)
    return rows


def is_cached(dataset: str, train_ids: list[str], seed: int) -> bool:
    """Whether `bench.references` already holds this model (so calibration never trains one by surprise)."""
    spec = R.spec_for(R.store(dataset))
    return (R.CACHE / "models" / R._key(dataset, train_ids, spec, R.schedule(dataset, seed)) / "meta.json").is_file()


def class_rows(dataset: str, seeds: list[int], classes: list[int], train_missing: bool = False) -> list[dict]:
    s = R.store(dataset)
    active = s.active_ids()
    aset = set(active)
    rows = []
    for seed in seeds:
        base, _ = R.base_model(dataset, seed)
        for c in classes:
            forget = [i for i in s.class_ids(c) if i in aset]
            drop = set(forget)
            if not train_missing and not is_cached(dataset, [i for i in active if i not in drop], seed):
                print(f"[{NAME}] class {c} seed {seed}: no cached retrain, skipped (--train-missing trains it)")
                continue
            splits = s.splits(forget)
            ref = production_metrics(base, splits, forget_classes=[c], seed=seed)
            retrained, _ = R.retrain_reference(dataset, active, forget, seed)
            for name, model in (("noop", base), ("retrain", retrained)):
                m = production_metrics(model, splits, forget_classes=[c], reference_test_accuracy=ref["test_accuracy"],
                                       reference_retained_test_accuracy=ref["retained_test_accuracy"], seed=seed)
                rows.append({"seed": seed, "class": c, "model": name, **{k: m[k] for k in CLASS_KEYS}})
        print(f"[{NAME}] class seed {seed} done", flush=True)
    return rows


def _max(rows: list[dict], key: str, **where) -> float:
    vals = [r[key] for r in rows if all(r.get(k) == v for k, v in where.items()) and not math.isnan(r[key])]
    return max(vals) if vals else float("nan")


def _ceil(x: float, step: float) -> float:
    return math.ceil(x / step - 1e-9) * step


def propose(item: list[dict], klass: list[dict]) -> dict[str, dict[str, dict[str, float]]]:
    """Thresholds from the measurements (rules in the module docstring)."""
    retrain_item = [r for r in item if r["model"] == "retrain"]
    z_max = _max(retrain_item, "forget_accuracy_z")
    auc = max((r["mia_loss_auc"] for r in retrain_item if r["n_forget"] >= 100), default=float("nan"))
    drop = _max(retrain_item, "test_accuracy_drop", n_forget=max(r["n_forget"] for r in retrain_item))
    z_cut, auc_cut = max(3.0, _ceil(z_max, 0.5)), round(_ceil(auc + 0.05, 0.01), 2)
    samples = {"forget_set_size": {"min": min_detectable_size(item, z_cut, auc_cut)},
               "forget_accuracy_z": {"max": z_cut},
               "mia_loss_auc": {"max": auc_cut},
               "test_accuracy_drop": {"max": round(max(0.01, _ceil(drop + 0.01, 0.005)), 3)}}
    proposal = {"samples": samples, "subject": dict(samples)}
    if klass:
        cdrop = _max(klass, "retained_test_accuracy_drop", model="retrain")
        proposal["class"] = {"forget_accuracy": {"max": 0.02}, "forget_class_test_accuracy": {"max": 0.02},
                             "retained_test_accuracy_drop": {"max": round(max(0.02, _ceil(cdrop + 0.01, 0.005)), 3)}}
    return proposal


def min_detectable_size(item: list[dict], z_cut: float, auc_cut: float) -> int:
    """Smallest forget-set size at which every `noop` run is caught (z > z_cut or AUC > auc_cut)."""
    sizes = sorted({r["n_forget"] for r in item if r["model"] == "noop"})
    for n in sizes:
        runs = [r for r in item if r["model"] == "noop" and r["n_forget"] == n]
        if all(r["forget_accuracy_z"] > z_cut or r["mia_loss_auc"] > auc_cut for r in runs):
            return int(n)
    return int(sizes[-1]) if sizes else 0


def verdicts(rows: list[dict], gates: dict[str, dict[str, float]]) -> dict[str, list[int]]:
    """Per model: [passed, total] under `gates` (full-size forget sets only for item rows)."""
    from unlearn_ops.verify import check
    from unlearn_ops.verify.gates import for_method

    out: dict[str, list[int]] = {}
    full = max((r.get("n_forget", 0) for r in rows), default=0)
    for r in rows:
        if "n_forget" in r and r["n_forget"] != full:
            continue
        metrics = {**r, "forget_set_size": float(r["n_forget"])} if "n_forget" in r else r
        p = out.setdefault(r["model"], [0, 0])
        p[0] += int(check(metrics, for_method(gates, exact=r["model"] == "retrain")).passed)
        p[1] += 1
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = compare.parser(NAME, __doc__.split("\n\n")[0], classes=True)
    p.set_defaults(methods=BASELINES, classes="0,6")
    p.add_argument("--train-missing", action="store_true", help="train class retrain references not yet cached")
    p.add_argument("--reanalyse", action="store_true",
                   help="recompute proposal and verdicts from the measurements in docs/benchmarks/calibrate_gates.json "
                        "(after a change to the rules or to params.yaml; nothing is re-measured)")
    args = p.parse_args(argv or [])
    params = load_params()
    if args.reanalyse:
        return reanalyse(params["gates"], Path(args.out_dir) if args.out_dir else OUT_DIR)
    seeds = [0] if args.quick else list(range(args.seeds))
    mem = QUICK if args.quick else Memorizing()
    methods = compare.classifier_methods([m for m in args.methods.split(",") if m])
    torch.manual_seed(0)
    item = item_rows(mem, seeds, methods, params["unlearn"], args.quick)
    classes = [3] if args.quick else [int(c) for c in args.classes.split(",") if c != ""]
    klass = class_rows("digits" if args.quick else "fmnist", seeds if args.quick else [0], classes,
                       train_missing=args.train_missing or args.quick)
    payload = {"quick": args.quick, "seeds": seeds, "methods": methods, "classes": classes, "cuts": list(CUTS),
               "item": item, "class": klass, **analyse(item, klass, params["gates"])}
    if args.quick and not args.out_dir:
        return payload
    write_results(NAME, payload, markdown(payload), Path(args.out_dir) if args.out_dir else None)
    return payload


def analyse(item: list[dict], klass: list[dict], current: dict[str, dict]) -> dict[str, Any]:
    """Proposed thresholds and who passes under the current and the proposed gates."""
    proposal = propose(item, klass)
    return {"proposal": proposal, "current": current,
            "verdicts": {"current": {"samples": verdicts(item, current["samples"]),
                                     "class": verdicts(klass, current["class"])},
                         "proposal": {"samples": verdicts(item, proposal["samples"]),
                                      "class": verdicts(klass, proposal.get("class", current["class"]))}}}


def reanalyse(current: dict[str, dict], out_dir: Path) -> dict[str, Any]:
    """Rewrite the report from its stored measurements with today's rules (the run's machine and
    commit stay; the commit of the analysis is recorded beside them)."""
    path = out_dir / f"{NAME}.json"
    payload = json.loads(path.read_text())
    payload.update(analyse(payload["item"], payload["class"], current))
    payload["analysis_commit"] = machine()["commit"]
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=float) + "\n")
    rerender(NAME, markdown, out_dir)
    return payload


def _summary_table(rows: list[dict], keys: tuple[str, ...], group: str) -> str:
    groups = sorted({(r["model"], r.get(group)) for r in rows}, key=lambda g: (g[0], g[1] or 0))
    out = []
    for model, g in groups:
        sel = [r for r in rows if r["model"] == model and r.get(group) == g]
        cells = []
        for k in keys:
            m, s = mean_std([r[k] for r in sel])
            hi = max((r[k] for r in sel if not np.isnan(r[k])), default=float("nan"))
            cells.append(f"{m:.3f} ± {s:.3f} (max {hi:.3f})")
        out.append([f"`{model}`", g, len(sel), *cells])
    return md_table(["model", group, "runs", *[f"`{k}`" for k in keys]], out)


def markdown(payload: dict[str, Any]) -> str:
    m = machine()
    v = payload["verdicts"]
    lines = [
        "Production gates compare the forget set with same-class non-members and utility with the previous "
        "champion, so they need no retrain. Their thresholds are calibrated here against retraining "
        "(bench/calibrate_gates.py; rules in its docstring).",
        "## Proposal\n\n```yaml\n" + _yaml(payload["proposal"]) + "```",
        "## Acceptance under the current params.yaml gates and under the proposal (full forget sets)\n\n"
        + md_table(["gates", "kind", *sorted(set(v["current"]["samples"]) | set(v["current"]["class"]))],
                   [[g, kind, *[("{}/{}".format(*v[g][kind][n]) if n in v[g][kind] else "—")
                                for n in sorted(set(v["current"]["samples"]) | set(v["current"]["class"]))]]
                    for g in ("current", "proposal") for kind in ("samples", "class")]),
        "## Item deletion (memorizing base, random forget sets and cuts of them)\n\n"
        + _summary_table(payload["item"], ITEM_KEYS, "n_forget"),
        "## Class deletion (the build's 3-epoch CNN)\n\n" + (_summary_table(payload["class"], CLASS_KEYS, "class")
                                                             if payload["class"] else "not run"),
        f"## What was run\n\n- Seeds {payload['seeds']}; baselines {payload['methods']} with params.yaml settings; "
        f"over-forgetting = `neg_grad_plus` with {OVERFORGET}.\n- Item base: `bench.memorizing` (10 000 Fashion-MNIST "
        f"samples, 15 epochs; the `random10` base); forget set = 10 % per seed, cuts {payload['cuts']}.\n"
        f"- Class base: the build's CNN (seed 0), classes {payload['classes']}, cached retrain references.\n"
        f"- Machine: {m['cpu_count']} CPUs, {m['device']}.",
    ]
    return "\n\n".join(lines)


def _yaml(d: dict[str, Any]) -> str:
    out = []
    for kind, gates in d.items():
        out.append(f"{kind}:")
        for metric, bounds in gates.items():
            out.append(f"  {metric}: {{{', '.join(f'{k}: {v}' for k, v in bounds.items())}}}")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
