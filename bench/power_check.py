"""Per-batch power check on the production champion (issue 21, item 5).

    python -m bench power_check [--subjects 1,6,13,20,50,100,150] [--draws 2] [--quick] [--out-dir DIR]

The build's Fashion-MNIST CNN (params.yaml `train`: the benchmark cache's copy of the build) is
scored as its own candidate — what a no-op would hand the gates — with params.yaml's subject gates
on batches of random active data subjects, as `deletion_batch` does before its first approximate
method (`Family.measure`, `verify.production.power_check`). Per batch: the forget-set size, the
champion's `forget_accuracy_z` and `mia_loss_auc`, whether the gates' thresholds alone would pass
the no-op (the hazard), whether the power check finds power (the champion rejected by the power
margin) and what the check cost (CPU and wall seconds). For the first batch with power at each
size, the subject chain's first method (params.yaml `policy`, with the entry's settings) is run
and judged as the flow would judge it. `--quick`: digits and a tiny schedule (tests).
Writes docs/benchmarks/power_check.json and .md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench import references as refs
from bench.common import load_note, load_record, measure, weights_digest, write_results
from flows.params import load_params
from tasks.batch import Step, chain_step
from unlearn_ops.families import family
from unlearn_ops.methods import run_method
from unlearn_ops.verify.production import Evaluation, Settings, judge, power_check

NAME = "power_check"
MODEL = "fmnist-classifier"
KIND = "subject"
QUICK = {"dataset": "digits", "subjects": [1, 6, 30], "draws": 1}


def batch(store, subjects: list[str], n: int, seed: int) -> list[str]:
    """The sample IDs of `n` random active subjects (a batch of subject requests)."""
    chosen = np.random.default_rng(seed).choice(subjects, n, replace=False)
    return [i for s in chosen for i in store.subject_ids(s)]


def run(dataset: str, sizes: list[int], draws: int, params: dict[str, Any]) -> dict[str, Any]:
    store = refs.store(dataset)
    champion, _ = refs.base_model(dataset, params["train"]["seed"])
    gates, settings, fam = params["gates"], Settings.from_params(params["batch"]), family("classifier")
    step = chain_step(params["policy"][MODEL][KIND][0], f"policy.{MODEL}.{KIND}")
    subjects = sorted(s for s in store.index.subject_id.unique() if s)
    rows, runs = [], []
    for n in sizes:
        for draw in range(draws):
            ids = batch(store, subjects, n, 1000 * n + draw)
            splits = store.splits(ids)

            def champion_metrics(splits=splits, ids=ids):  # the power check as the flow runs it
                return fam.measure(Evaluation(champion, champion, splits, store, [], set(ids), settings))

            m = measure(champion_metrics)
            check = power_check(m.result, gates, [KIND])[KIND]
            noop = judge(m.result, gates, [KIND], exact=False)[KIND]
            items = m.result["items"]
            row = {"subjects": n, "draw": draw, "samples": len(ids), "forget_accuracy_z": items["forget_accuracy_z"],
                   "mia_loss_auc": items["mia_loss_auc"], "noop_passes_thresholds": noop["passed"],
                   "power": check.has_power, "evidence": list(check.evidence),
                   "check_cpu_s": m.cpu_seconds, "check_wall_s": m.seconds}
            print(row, flush=True)
            rows.append(row)
            if check.has_power and not any(r["subjects"] == n for r in runs):
                runs.append({"subjects": n, "draw": draw, "samples": len(ids),
                             **judged(step, champion, splits, store, ids, gates, settings, params)})
                print(runs[-1], flush=True)
    return {"rows": rows, "method": step.method, "method_settings": step_settings(step, params),
            "method_runs": runs, "champion_sha256": weights_digest(champion)}


def step_settings(step: Step, params: dict) -> dict[str, Any]:
    """The chain entry's settings as the flow runs them: `unlearn.<method>` with the entry's own on top."""
    return {**((params.get("unlearn") or {}).get(step.method) or {}), **step.settings}


def judged(step: Step, champion, splits, store, ids: list[str], gates: dict, settings: Settings,
           params: dict) -> dict[str, Any]:
    """The chain's first method on this batch, judged by the subject gates as the flow does."""
    fam = family("classifier")
    m = measure(lambda: run_method(step.method, champion, splits, step_settings(step, params), device="cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        v = fam.verify(Evaluation(champion, m.result.model, splits, store, [], set(ids), settings), gates, [KIND],
                       exact=False, report_dir=Path(tmp))
    items = v.metrics["items"]
    return {"passed": v.passed, "failed": v.gates[KIND]["failed"], "cpu_s": m.cpu_seconds, "wall_s": m.seconds,
            **{k: items[k] for k in ("forget_accuracy", "forget_accuracy_z", "mia_loss_auc", "test_accuracy_drop")}}


def markdown(p: dict[str, Any]) -> str:
    z = p["gates"]["forget_accuracy_z"]
    lines = [f"The champion (the build's {p['dataset']} model) scored as its own candidate — what a no-op hands the "
             f"gates — with params.yaml's `{KIND}` gates on batches of random active data subjects "
             f"({p['draws']} draws per size). Power: the champion's own `forget_accuracy_z` ≥ {z['max']} + "
             f"{z['power_margin']} (docs/verification.md, \"Power check\"). Champion weights: sha256 "
             f"`{p.get('champion_sha256', 'not recorded')}` (first 16 hex digits). {load_note(p.get('load'))}.", "",
             "| subjects | samples | champion z | champion loss AUC | no-op passes the thresholds | power | "
             "check CPU s | check wall s |", "|---|---|---|---|---|---|---|---|"]
    for r in p["rows"]:
        lines.append(f"| {r['subjects']} | {r['samples']} | {r['forget_accuracy_z']:.2f} | {r['mia_loss_auc']:.3f} | "
                     f"{'**yes**' if r['noop_passes_thresholds'] else 'no'} | {'yes' if r['power'] else 'no'} | "
                     f"{r['check_cpu_s']:.1f} | {r['check_wall_s']:.1f} |")
    lines += ["", f"Where the gates have power, the subject chain's first method `{p['method']}` "
              f"(settings {p['method_settings']}) on the first such batch of each size:", ""]
    if not p["method_runs"]:
        lines.append("(no batch had power)")
    else:
        lines += ["| subjects | samples | passed | failed gates | forget acc. | z | loss AUC | test acc. drop | "
                  "CPU s | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in p["method_runs"]:
            lines.append(f"| {r['subjects']} | {r['samples']} | {r['passed']} | {', '.join(r['failed']) or '-'} | "
                         f"{r['forget_accuracy']:.4f} | {r['forget_accuracy_z']:.2f} | {r['mia_loss_auc']:.3f} | "
                         f"{r['test_accuracy_drop']:.4f} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog=f"python -m bench {NAME}")
    ap.add_argument("--subjects", default="1,6,13,20,50,100,150", help="batch sizes in data subjects")
    ap.add_argument("--draws", type=int, default=2, help="random batches per size")
    ap.add_argument("--quick", action="store_true", help="digits, 3 small sizes, 1 draw (tests)")
    ap.add_argument("--out-dir", default=None)
    a = ap.parse_args(argv)
    params = load_params()
    dataset = QUICK["dataset"] if a.quick else params["data"]["dataset"]
    sizes = QUICK["subjects"] if a.quick else [int(s) for s in a.subjects.split(",")]
    draws = QUICK["draws"] if a.quick else a.draws
    payload = {"dataset": dataset, "draws": draws, "quick": a.quick, "gates": params["gates"][KIND],
               **run(dataset, sizes, draws, params), "load": load_record()}
    write_results(NAME, payload, markdown(payload), Path(a.out_dir) if a.out_dir else None)
    print(markdown(payload))
    return payload
