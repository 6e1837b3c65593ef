"""Side-by-side comparison of unlearning methods with retraining (shared by `class` and `random10`).

One *case* = one original model, one forget set, one seed and its retrained reference. Every
method runs on the case with its production settings (params.yaml `unlearn.<name>`, seed set to
the case's seed), is timed, and is evaluated by `unlearn_ops.verify.suite.evaluate` exactly like
the retrained model; the Avg. Gap is taken to the retrained model's metrics. The production
gates (params.yaml `gates.<kind>`) are applied to the same numbers, with the original model as
the previous champion, so a report also says which methods the pipeline would have accepted.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from bench.common import fmt, mean_std, parse_variant
from unlearn_ops.data.splits import Splits
from unlearn_ops.methods import METHODS, TEST_ONLY, run_method
from unlearn_ops.methods._loops import cycle_indices, take
from unlearn_ops.methods.base import NotApplicable
from unlearn_ops.training import TrainConfig, make_optimizer, reinitialize
from unlearn_ops.verify import check
from unlearn_ops.verify.gap import accuracy_gap
from unlearn_ops.verify.gates import for_method
from unlearn_ops.verify.mia import matched_nonmembers
from unlearn_ops.verify.suite import avg_gap, evaluate

# Registered methods that do not unlearn an image classifier (GANs, language models, the text
# head refit). A method module may also declare `MODEL_KINDS = ("classifier", ...)`; that
# attribute wins when present.
NOT_CLASSIFIER = frozenset({"cascaded_gan", "gan_retrain", "lm_token_poisoning", "grad_ascent", "grad_diff", "npo",
                            "lm_retrain", "text_retrain"})
REFERENCE = "retrain"
# A second exact retrain (another seed) scored like a method: its Avg. Gap to the reference is the
# noise floor of any Avg. Gap taken to one retrained model (random10: about 0.4 pp, docs/verification.md).
TWIN = "retrain_twin"
UTILITY_DROPS = {"test_accuracy": "test_accuracy_drop", "retained_test_accuracy": "retained_test_accuracy_drop"}


def is_classifier_method(name: str) -> bool:
    kinds = getattr(METHODS[name], "MODEL_KINDS", None)
    return "classifier" in kinds if kinds is not None else name not in NOT_CLASSIFIER


def seeds_of(args) -> list[int]:
    """The run's seeds from --first-seed / --seeds (quick: the first seed only)."""
    return [args.first_seed] if args.quick else list(range(args.first_seed, args.first_seed + args.seeds))


def with_variants(methods: list[str], variants: Sequence[str]) -> list[str]:
    """`methods` plus each variant label (checked: a known classifier method)."""
    for v in variants:
        name, _ = parse_variant(v, METHODS)
        if not is_classifier_method(name):
            raise SystemExit(f"variant {v!r}: {name} is not a classifier method")
    return [*methods, *variants]


def classifier_methods(only: Sequence[str] | None = None) -> list[str]:
    """Registered classifier methods except the reference (`retrain`) and test canaries (`noop`)."""
    names = [n for n in METHODS if n != REFERENCE and n not in TEST_ONLY and is_classifier_method(n)]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise SystemExit(f"unknown or excluded methods {unknown}; choose from {names}")
        names = [n for n in names if n in only]
    return names


def applies_to(name: str, kind: str) -> bool:
    """False when the method declares it cannot serve this request kind (`REQUEST_KINDS`)."""
    return kind in METHODS[name].REQUEST_KINDS


def method_params(name: str, unlearn_params: dict[str, Any], seed: int,
                  overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """params.yaml settings of `name`, the case's seed, then overrides (quick mode)."""
    params = {**dict(unlearn_params.get(name) or {}), **(overrides or {})}
    if "seed" in {f.name for f in fields(METHODS[name].Config)}:
        params["seed"] = seed
    return params


@dataclass
class Case:
    label: str
    seed: int
    splits: Splits
    original: nn.Module
    retrained: nn.Module
    retrain_seconds: float
    forget_classes: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schedule: TrainConfig | None = None   # the retrain's schedule, for its CPU-time estimate
    twin: nn.Module | None = None          # an independent retrain (TWIN row), when the protocol has one
    twin_seconds: float = float("nan")


def retrain_cpu_seconds(case: Case, probe_steps: int = 20) -> float:
    """CPU seconds of the retrain, extrapolated from `probe_steps` timed steps of its schedule.

    Wall-clock times on a shared machine depend on the load at the moment each run was measured
    (the cached retrain may have been trained hours earlier); process CPU time does not, so
    speed-ups are also reported as CPU-time ratios, with the retrain's CPU time estimated here in
    the same process as the methods (one training step costs the same at step 20 as at step 2 000).
    """
    if case.schedule is None:
        return float("nan")
    cfg = case.schedule
    model = reinitialize(copy.deepcopy(case.original).cpu().train(), cfg.seed)
    opt = make_optimizer(model.parameters(), cfg)
    batches = cycle_indices(len(case.splits.retain), cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
    x, y = take(case.splits.retain, next(batches), torch.device("cpu"))
    F.cross_entropy(model(x), y).backward()  # warm-up step, not timed (allocations, kernels)
    start = time.process_time()
    for _ in range(probe_steps):
        x, y = take(case.splits.retain, next(batches), torch.device("cpu"))
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    per_step = (time.process_time() - start) / probe_steps
    total = math.ceil(cfg.epochs * math.ceil(len(case.splits.retain) / cfg.batch_size))
    return per_step * total


def gate_metrics(metrics: dict[str, float], model: nn.Module, case: Case,
                 original_metrics: dict[str, float]) -> dict[str, float]:
    """The production-gate keys that `evaluate` does not return: the generalization-gap test
    and the utility drops vs the original (the previous champion)."""
    out = dict(metrics)
    out["forget_set_size"] = float(len(case.splits.forget))
    out.update(accuracy_gap(model, case.splits.forget, matched_nonmembers(case.splits.forget, case.splits.nonmember)))
    for key, drop in UTILITY_DROPS.items():
        if key in metrics and key in original_metrics:
            out[drop] = original_metrics[key] - metrics[key]
    return out


def run_case(case: Case, methods: Sequence[str], kind: str, unlearn_params: dict[str, Any],
             gates: dict[str, Any], eval_kwargs: dict[str, Any], overrides: dict[str, dict] | None = None,
             device: str = "auto", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate the original, the retrained model and every method on one case. An entry of
    `methods` may be a variant `name:key=value,...` (params.yaml settings with those changed),
    reported under that label."""
    def score(model: nn.Module) -> dict[str, float]:
        return evaluate(model, case.splits, original=case.original, forget_classes=case.forget_classes,
                        seed=case.seed, **eval_kwargs)

    t0 = time.perf_counter()
    retrain_cpu = retrain_cpu_seconds(case)
    original = score(case.original)
    original = gate_metrics(original, case.original, case, original)
    reference = gate_metrics(score(case.retrained), case.retrained, case, original)
    rows: dict[str, Any] = {
        "original": {"metrics": original, "avg_gap": avg_gap(original, reference)},
        REFERENCE: {"metrics": reference, "avg_gap": 0.0, "seconds": case.retrain_seconds, "speedup": 1.0,
                    "cpu_seconds": retrain_cpu, "cpu_speedup": 1.0,
                    "gates": check(reference, for_method(gates[kind], exact=True)).to_dict()},
    }
    log(f"[{case.label}] original / retrain evaluated ({time.perf_counter() - t0:.0f} s); "
        f"retrain took {case.retrain_seconds:.0f} s wall, ≈ {retrain_cpu:.0f} s CPU")
    if case.twin is not None:
        twin = gate_metrics(score(case.twin), case.twin, case, original)
        rows[TWIN] = {"metrics": twin, "avg_gap": avg_gap(twin, reference), "seconds": case.twin_seconds,
                      "speedup": case.retrain_seconds / max(case.twin_seconds, 1e-9), "cpu_seconds": retrain_cpu,
                      "cpu_speedup": 1.0, "gates": check(twin, for_method(gates[kind], exact=True)).to_dict()}
        log(f"[{case.label}] {TWIN} (independent retrain): Avg. Gap {rows[TWIN]['avg_gap']:.2f} to the reference")
    for label in methods:
        name, extra = parse_variant(label, METHODS)
        if not applies_to(name, kind):
            rows[label] = {"skipped": f"{name} does not serve {kind} deletion (REQUEST_KINDS)"}
            continue
        params = method_params(name, unlearn_params, case.seed, {**(overrides or {}).get(name, {}), **extra})
        cpu0 = time.process_time()
        try:
            result = run_method(name, case.original, case.splits, params, device=device)
        except NotApplicable as e:  # a method refusing this request says why; anything else is a bug
            rows[label] = {"skipped": f"{type(e).__name__}: {e}"}
            log(f"[{case.label}] {label}: skipped ({e})")
            continue
        cpu = time.process_time() - cpu0
        model = result.model.cpu().eval()
        metrics = gate_metrics(score(model), model, case, original)
        row = {"metrics": metrics, "avg_gap": avg_gap(metrics, reference), "seconds": result.seconds,
               "speedup": case.retrain_seconds / max(result.seconds, 1e-9), "cpu_seconds": cpu,
               "cpu_speedup": retrain_cpu / max(cpu, 1e-9),
               "gates": check(metrics, gates[kind]).to_dict(), "details": _plain(result.details)}
        rows[label] = row
        log(f"[{case.label}] {label}: {result.seconds:.1f} s ({cpu:.1f} s CPU), Avg. Gap {row['avg_gap']:.2f}, "
            f"gates {'pass' if row['gates']['passed'] else 'FAIL ' + ','.join(row['gates']['failed'])}")
    return {"case": case.label, "seed": case.seed, "forget_classes": case.forget_classes,
            "forget_size": len(case.splits.forget), "retain_size": len(case.splits.retain), **case.extra,
            "rows": rows}


def _plain(details: dict[str, Any]) -> dict[str, Any]:
    """JSON-friendly subset of a method's details (numbers, strings, short lists)."""
    out = {}
    for k, v in details.items():
        if isinstance(v, (int, float, str, bool)) or (isinstance(v, list) and len(v) <= 20):
            out[k] = v
    return out


def summarize(cases: list[dict[str, Any]], names: Sequence[str], keys: Sequence[str]) -> dict[str, Any]:
    """Per method: mean ± std over cases of each key, Avg. Gap, seconds, speed-up, gate pass count."""
    summary: dict[str, Any] = {}
    for name in names:
        runs = [c["rows"][name] for c in cases if name in c["rows"] and "metrics" in c["rows"][name]]
        skipped = [c["rows"][name]["skipped"] for c in cases if "skipped" in c["rows"].get(name, {})]
        if not runs:
            summary[name] = {"runs": 0, "skipped": skipped[:1]}
            continue
        entry: dict[str, Any] = {"runs": len(runs)}
        for key in keys:
            entry[key] = mean_std([r["metrics"].get(key, float("nan")) for r in runs])
        for key in ("avg_gap", "seconds", "speedup", "cpu_seconds", "cpu_speedup"):
            entry[key] = mean_std([r.get(key, float("nan")) for r in runs])
        gates = [r["gates"]["passed"] for r in runs if "gates" in r]
        entry["gates_passed"] = [int(sum(gates)), len(gates)]
        entry["gates_failed"] = sorted({g for r in runs if "gates" in r for g in r["gates"]["failed"]})
        summary[name] = entry
    return summary


def reference_names(cases: list[dict[str, Any]]) -> list[str]:
    """The rows every method is read against: the original, the retrained reference, and the
    independent retrain where the cases have one."""
    return ["original", REFERENCE, *([TWIN] if any(TWIN in c["rows"] for c in cases) else [])]


def cell(entry: dict[str, Any], key: str, scale: float = 100.0, digits: int = 2) -> str:
    """'mean ± std' of a summary entry (accuracies shown in %)."""
    m, s = entry.get(key, (float("nan"), float("nan")))
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "n/a"
    return f"{m * scale:.{digits}f} ± {s * scale:.{digits}f}"


def best_method(summary: dict[str, Any], names: Sequence[str], min_speedup: float,
                key: str = "speedup") -> tuple[str | None, str | None]:
    """(lowest Avg. Gap among methods with mean `key` ≥ min_speedup, lowest Avg. Gap overall)."""
    ranked = sorted((summary[n]["avg_gap"][0], n) for n in names
                    if summary.get(n, {}).get("runs") and not np.isnan(summary[n]["avg_gap"][0]))
    fast = [n for _, n in ranked if summary[n][key][0] >= min_speedup]
    return (fast[0] if fast else None), (ranked[0][1] if ranked else None)


__all__ = ["REFERENCE", "TWIN", "Case", "applies_to", "best_method", "cell", "classifier_methods", "fmt",
           "method_params", "reference_names", "run_case", "seeds_of", "summarize", "with_variants"]


def parser(prog: str, description: str, *, classes: bool):
    """The flags both protocols share: --quick, --seeds N, --methods, --out-dir (+ --classes)."""
    import argparse

    p = argparse.ArgumentParser(prog=f"python -m bench {prog}", description=description)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: digits, tiny settings, one seed; numbers mean nothing (needs --out-dir to write)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (first..first+N-1)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="first seed (e.g. tune settings on seeds the published run does not use)")
    if classes:
        p.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9", help="comma-separated classes to forget")
    p.add_argument("--methods", default="", help="comma-separated subset of methods (default: every classifier method)")
    p.add_argument("--variant", action="append", default=[], metavar="METHOD:KEY=VALUE,...",
                   help="also run METHOD with these params.yaml settings changed, reported under this label "
                        "(repeatable)")
    p.add_argument("--out-dir", default=None, help="write results here instead of docs/benchmarks/")
    return p


# Quick mode: few steps per method, so a smoke test of the protocol takes seconds.
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "finetune": {"epochs": 0.2},
    "neg_grad_plus": {"min_steps": 5},
    "random_label": {"min_steps": 5, "epochs": 1.0},
    "salun": {"min_steps": 5, "epochs": 1.0},
    "scrub": {"epochs": 2, "max_epochs": 1, "retain_steps": 5},
    "ssd": {"max_train_samples": 500},
}
