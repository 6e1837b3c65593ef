"""Tune a class-unlearning setting on a seed the published protocol does not use: retained-class
accuracy against the relearning attack, without the retrained reference (the reference's
relearn-3 is 0.000 on every published run, and the retained accuracy is judged against the
original), so one tuning point costs one method run plus its evaluation, not a retrain.

    python -m bench.class_tuning --seed 3 --classes 8,5,7,0 \
        --variant concept_poisoning:trainable=features,epochs=1,reset_units=0.25 [--variant ...] [--out F.json]

Prints one JSON line per (class, variant) as it goes; --out keeps them all. Numbers from here
are lab notes for choosing settings, never a published result (that is `python -m bench class`).

`--production` unlearns the model the build trains instead (params.yaml `train`: the sharded
ensemble the `fmnist-classifier` chains serve, its build seed; `--seed` then seeds the methods
and the relearning attack): does a setting chosen on the protocol's CNN pass there too?
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from torch import nn

from bench import references as R
from bench.common import parse_variant
from bench.compare import method_params
from flows.params import load_params
from unlearn_ops.methods import METHODS, run_method
from unlearn_ops.verify.suite import evaluate


def original_model(dataset: str, seed: int, production: bool) -> nn.Module:
    """The protocol's CNN of `seed`, or the model params.yaml's build trains (sharded when `train` says so)."""
    if not production:
        return R.base_model(dataset, seed)[0]
    from flows.train import fit_model, model_spec

    t, s = load_params()["train"], R.store(dataset)
    return fit_model(t, s, s.part(s.active_ids()), model_spec(t["arch"], s))[0].cpu().eval()


def tune(seed: int, classes: list[int], variants: list[str], dataset: str = "fmnist",
         production: bool = False) -> list[dict[str, Any]]:
    s = R.store(dataset)
    active = set(s.active_ids())
    original = original_model(dataset, seed, production)
    unlearn = load_params()["unlearn"]
    rows = []
    for c in classes:
        splits = s.splits([i for i in s.class_ids(c) if i in active])
        before = evaluate(original, splits, forget_classes=[c], seed=seed)["retained_test_accuracy"]
        for label in variants:
            name, extra = parse_variant(label, METHODS)
            params = method_params(name, unlearn, seed, extra)
            cpu = time.process_time()
            result = run_method(name, original, splits, params, device="auto")
            cpu = time.process_time() - cpu
            m = evaluate(result.model.cpu().eval(), splits, forget_classes=[c], relearn_steps=(3,), seed=seed)
            row = {"model": "production" if production else "protocol", "seed": seed, "class": c, "variant": label,
                   "cpu_seconds": round(cpu, 2), "A_train": m["forget_accuracy"], "A_test": m["forget_class_test_accuracy"],
                   "retained": m["retained_test_accuracy"], "original_retained": before,
                   "retained_delta_pt": 100 * (m["retained_test_accuracy"] - before), "relearn_3": m["relearn_acc_3"]}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(prog="python -m bench.class_tuning", description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, required=True, help="a seed the published protocol does not use")
    p.add_argument("--classes", required=True, help="comma-separated classes to forget, one at a time")
    p.add_argument("--variant", action="append", required=True, metavar="METHOD:KEY=VALUE,...")
    p.add_argument("--out", default=None, help="also write every row to this JSON file")
    p.add_argument("--production", action="store_true", help="unlearn the build's model (params.yaml train), "
                   "not the protocol's CNN")
    args = p.parse_args(argv)
    rows = tune(args.seed, [int(c) for c in args.classes.split(",") if c], args.variant, production=args.production)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1) + "\n")
    return rows


if __name__ == "__main__":
    main()
