"""Diagnostic for `random10` tuning: where each model puts its true-label confidence.

    python -m bench confidence [--seed 10] [--variant random_label:relabel=match,retain_loss=kl ...] [--quick]

For one seed of the random10 protocol (same memorizing base, forget set and cached retrained
model), prints for the original, the retrained model and each `method:key=value,…` variant
(params.yaml settings with those changed): forget / retain / test accuracy, MIA-Efficacy, Avg.
Gap to the retrained model, the method's CPU seconds, and quantiles of the true-label confidence
on the forget, test and retain sets. MIA-Efficacy's SVC splits members from non-members by that
confidence alone, so these quantiles show *why* a setting's MIA-Efficacy differs from the
retrained model's (docs/methods/random_label.md uses them). A setting can match those marginals
with the wrong samples, so each model is also compared with the retrained one *per sample*:
`errors shared` = share of the forget samples the retrained model gets wrong that this model gets
wrong too (next to it, this model's own error share: what a random choice of errors would share),
and Spearman's ρ between the forget samples' confidences under this model and the retrained one.
Prints only; writes nothing. Tune on a seed the published protocol does not use (10), then run
`python -m bench random10`.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import spearmanr
from torch import nn

from bench.common import parse_variant
from bench.compare import method_params
from bench.memorizing import Memorizing
from bench.random10 import FRACTION, QUICK
from flows.params import load_params
from unlearn_ops.data.splits import Splits
from unlearn_ops.methods import METHODS, run_method
from unlearn_ops.verify.mia import softmax, true_label_confidence
from unlearn_ops.verify.suite import avg_gap, evaluate

QUANTILES = (0.05, 0.10, 0.15, 0.20, 0.30, 0.50)
GAP_KEYS = ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy")


def profile(model: nn.Module, splits: Splits, seed: int) -> dict:
    """The four Avg. Gap metrics, the confidence quantiles and the forget set's per-sample
    confidences and errors of one model."""
    metrics = evaluate(model, splits, seed=seed)
    probs, y = softmax(model, splits.forget), splits.forget.y.numpy()
    wrong = probs.argmax(1) != y
    confidence = {"forget": probs[np.arange(len(y)), y], "test": true_label_confidence(model, splits.test),
                  "retain": true_label_confidence(model, splits.retain.sample(min(5000, len(splits.retain)), 0))}
    return {"metrics": {k: metrics[k] for k in GAP_KEYS}, "forget_confidence": confidence["forget"], "wrong": wrong,
            "quantiles": {k: np.quantile(c, QUANTILES) for k, c in confidence.items()}}


def show(name: str, row: dict, reference: dict | None, seconds: float | None) -> list[str]:
    m = row["metrics"]
    head = (f"{name}: forget {100 * m['forget_accuracy']:.2f} RA {100 * m['retain_accuracy']:.2f} "
            f"TA {100 * m['test_accuracy']:.2f} MIA-Eff {100 * m['mia_efficacy']:.2f}")
    if reference is not None:
        shared = (row["wrong"] & reference["wrong"]).sum() / max(1, reference["wrong"].sum())
        rho = spearmanr(row["forget_confidence"], reference["forget_confidence"]).statistic
        head += (f" | Avg. Gap {avg_gap(m, reference['metrics'], GAP_KEYS):.2f} pp | errors shared "
                 f"{100 * shared:.1f} % (random: {100 * row['wrong'].mean():.1f} %) | ρ {rho:.3f}")
    if seconds is not None:
        head += f" | {seconds:.1f} s CPU"
    qs = " ".join(f"q{q:.2f}" for q in QUANTILES)
    return [head, *(f"    {part:6s} {qs}: " + " ".join(f"{v:.4f}" for v in values)
                    for part, values in row["quantiles"].items())]


def main(argv: list[str] | None = None) -> list[str]:
    ap = argparse.ArgumentParser(prog="python -m bench confidence", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=10, help="random10 seed (default 10: not a published-protocol seed)")
    ap.add_argument("--variant", action="append", default=[], help="method:key=value,… (repeatable)")
    ap.add_argument("--quick", action="store_true", help="the random10 --quick base (digits; a smoke test)")
    args = ap.parse_args(argv or [])
    mem = QUICK if args.quick else Memorizing()
    base, _ = mem.base()
    forget = mem.forget_ids(FRACTION, args.seed)
    splits = mem.splits(forget)
    retrained, _ = mem.retrain(forget, args.seed)
    reference = profile(retrained, splits, args.seed)
    lines = [*show("original", profile(base, splits, args.seed), reference, None), *show("retrain", reference, None, None)]
    print("\n".join(lines), flush=True)
    params = load_params()["unlearn"]
    for spec in args.variant:
        name, extra = parse_variant(spec, METHODS)
        start = time.process_time()
        result = run_method(name, base, splits, method_params(name, params, args.seed, extra), device="cpu")
        seconds = time.process_time() - start
        out = show(spec, profile(result.model, splits, args.seed), reference, seconds)
        out[0] += f" | {result.details}"
        print("\n".join(out), flush=True)
        lines += out
    return lines


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
