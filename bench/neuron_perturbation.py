"""Benchmark `neuron_perturbation` (LRA-NPP) side by side with retraining from scratch.

Protocol (issue 5): for each data set, seed and class, the original model (bench.references
base model) forgets the whole class with the paper's exact settings, the paper's noise baselines,
the outgoing-weights-only edit (the known trap) and our variant (params.yaml); the retrained model
(same architecture and schedule, retain classes only; bench.references) is the reference.

Per model: At (forget-class accuracy, train split), Ag (other classes, train split: a seeded
subsample of `--ag-n` images), other-class and forget-class test accuracy, Fr (SVM-transfer
MIA, `unlearn_ops.verify.mia.forgetting_rate`), loss-MIA (`simple_mia`, forget-class train vs
forget-class non-members) and its gap to retraining, the relearning attack (3 Adam 1e-3 steps on
64 forget-class + 64 retained training images; forget-class test accuracy) and the linear
feature probe (balanced accuracy, forget class vs the rest, on the test split), wall time, peak
memory and speed-up = retrain time / method time. A k_p sweep on a few classes gives the
trade-off curve (forget vs relearn vs utility), as a table and a PNG.

    python -m bench neuron_perturbation [--quick] [--datasets mnist5k,fmnist] [--classes 0,1]
                                        [--seeds 0,1] [--curve-classes 0,6] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench import references as refs
from bench.common import OUT_DIR, fmt, md_table, mean_std, measure, method_settings, write_results
from flows.params import load_params
from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.methods import run_method
from unlearn_ops.methods.neuron_perturbation import PAPER
from unlearn_ops.training import TrainConfig, accuracy, fit
from unlearn_ops.utils import atomic_write_json, canonical_json
from unlearn_ops.verify.mia import forgetting_rate, matched_nonmembers, simple_mia
from unlearn_ops.verify.probe import feature_probe
from unlearn_ops.verify.relearn import relearn

NAME = "neuron_perturbation"
METRICS_VERSION = 1       # bump when `metrics` changes, so cached rows are recomputed
TARGETS = {"At": 0.01, "other_test_gap": 0.01, "Fr": 0.95, "speedup": 1000.0, "relearn_3": 0.10}
CURVE_K_P = (20, 50, 100, 150, 200, 300)


def configs(variant: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What is compared: the paper's exact MNIST settings, its noise baselines, the
    outgoing-weights-only edit (passes output metrics, exposed by relearning), our variant."""
    return {
        "paper (36/50/80, zero)": dict(PAPER),
        "paper, calibrated (36/100/150)": {**PAPER, "k_a": 100, "k_p": 150},
        "noise-GN (paper's baseline)": {**PAPER, "mode": "gauss"},
        "noise-LN (paper's baseline)": {**PAPER, "mode": "laplace"},
        "outgoing only (100/150)": {**PAPER, "k_a": 100, "k_p": 150, "scope": "outgoing"},
        "variant (params.yaml)": dict(variant),
    }


# ----------------------------------------------------------------------------- measuring
def retrain_peak_memory(spec_model: nn.Module, data: Part, cfg: TrainConfig, steps: int = 20) -> float:
    """Peak extra memory of the retraining schedule, measured over its first `steps` steps
    (model, Adam state and activations are all allocated by then)."""
    import copy

    model = copy.deepcopy(spec_model)
    short = TrainConfig(**{**cfg.__dict__, "epochs": steps / max(1, -(-len(data) // cfg.batch_size))})
    return measure(lambda: fit(model, data, short)).peak_mb


# ----------------------------------------------------------------------------- one class
@dataclass
class Case:
    """Everything the metrics of one (data set, seed, class) need, sampled once."""

    dataset: str
    seed: int
    cls: int
    splits: Splits
    original: nn.Module
    forget_nm: Part          # forget-class non-members (the MIA's non-member side)
    ag_part: Part            # retained training images (subsample) for Ag
    relearn_forget: Part
    relearn_retain: Part
    forget_test: Part


def make_case(dataset: str, seed: int, cls: int, original: nn.Module, splits: Splits, ag_n: int) -> Case:
    forget_test = splits.test.where(splits.test.y == cls)
    return Case(dataset, seed, cls, splits, original,
                forget_nm=matched_nonmembers(splits.forget, splits.nonmember),
                ag_part=splits.retain.sample(ag_n, seed + 11),
                relearn_forget=splits.forget.sample(64, seed + 12),
                relearn_retain=splits.retain.sample(64, seed + 13),
                forget_test=forget_test)


def metrics(model: nn.Module, case: Case) -> dict[str, float]:
    s = case.splits
    other_test = s.test.where(s.test.y != case.cls)
    mia = simple_mia(model, case.splits.forget.sample(len(case.forget_nm), case.seed + 14), case.forget_nm,
                     seed=case.seed)
    out = {
        "At": accuracy(model, s.forget),
        "Ag": accuracy(model, case.ag_part),
        "other_test": accuracy(model, other_test),
        "forget_test": accuracy(model, case.forget_test),
        "Fr": forgetting_rate(case.original, model, s.forget, case.forget_nm, seed=case.seed),
        "mia_simple": mia["mia_simple"],
        "probe": feature_probe(model, s.test, [case.cls], seed=case.seed),
    }
    rel = relearn(model, case.relearn_forget, case.relearn_retain, case.forget_test, steps=(1, 3, 10),
                  seed=case.seed, device="cpu" if not torch.cuda.is_available() else "auto")
    out.update({f"relearn_{k}": rel[f"relearn_acc_{k}"] for k in (1, 3, 10)})
    return out


def run_case(case: Case, methods: dict[str, dict[str, Any]], retrain_model: nn.Module, retrain_seconds: float,
             retrain_mb: float) -> dict[str, Any]:
    row: dict[str, Any] = {"dataset": case.dataset, "seed": case.seed, "class": case.cls}
    ref = metrics(retrain_model, case)
    ref.update(seconds=retrain_seconds, peak_mb=retrain_mb)
    row["retrain"] = ref
    row["original"] = metrics(case.original, case)
    for name, params in methods.items():
        params = {**params, "seed": case.seed}
        run = measure(lambda p=params: run_method(NAME, case.original, case.splits, p))
        result = run.result
        m = metrics(result.model, case)
        m.update(seconds=run.seconds, peak_mb=run.peak_mb, memory_how=run.memory_how,
                 k_p=result.details["k_p"][case.cls],
                 speedup=retrain_seconds / max(run.seconds, 1e-9),
                 mia_gap=abs(m["mia_simple"] - ref["mia_simple"]),
                 other_test_gap=ref["other_test"] - m["other_test"])
        row[name] = m
    return row


def class_row(case: Case, active: list[str], forget: list[str], methods: dict[str, dict[str, Any]],
              memory: dict[str, float]) -> dict[str, Any]:
    """Retrain reference (cached by bench.references) + every method on one class."""
    ref_model, ref_seconds = refs.retrain_reference(case.dataset, active, forget, case.seed)
    if "retrain_mb" not in memory:       # once per data set and seed: it does not depend on the class
        memory["retrain_mb"] = retrain_peak_memory(case.original, case.splits.retain,
                                                   refs.schedule(case.dataset, case.seed))
    return run_case(case, methods, ref_model, ref_seconds, memory["retrain_mb"])


def curve_case(case: Case, base: dict[str, Any], grid: tuple[int, ...]) -> list[dict[str, Any]]:
    """k_p sweep of one configuration (no stopping rule) on one class."""
    out = []
    for k_p in grid:
        params = {**base, "k_p": k_p, "k_a": max(base.get("k_a", 100), 100), "stop_accuracy": None,
                  "seed": case.seed}
        result = run_method(NAME, case.original, case.splits, params)
        m = metrics(result.model, case)
        out.append({"dataset": case.dataset, "seed": case.seed, "class": case.cls, "k_p": k_p, **m})
    return out


def results_version(methods: dict[str, Any], variant: dict[str, Any], ag_n: int, grid: tuple[int, ...]) -> str:
    """Cached rows are reused only for the same settings, method code and metrics."""
    from unlearn_ops.methods import neuron_perturbation as method

    code = "".join(p.read_text() for p in sorted(Path(method.__file__).parent.glob("*.py")))  # the whole package
    blob = canonical_json({"methods": methods, "variant": variant, "ag_n": ag_n, "grid": grid,
                           "metrics": METRICS_VERSION, "code": code})
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cached(path: Path, compute: Callable[[], Any], fresh: bool = False) -> Any:
    """JSON result cache under var/bench-cache/results/ so an interrupted run resumes."""
    if path.is_file() and not fresh:
        return json.loads(path.read_text())
    out = compute()
    atomic_write_json(path, out)
    return out


def retrain_cached(dataset: str, store: Any, active: list[str], forget: list[str], seed: int) -> bool:
    drop = set(forget)
    retain = [i for i in active if i not in drop]
    key = refs._key(dataset, retain, refs.spec_for(store), refs.schedule(dataset, seed))
    return (refs.CACHE / "models" / key / "meta.json").is_file()


# ----------------------------------------------------------------------------- reporting
def target_flags(rows: list[dict[str, Any]], name: str) -> dict[str, str]:
    """Whether each target is met on *every* class run ("yes" / "no (k of n)")."""
    checks = {
        "At ≤ 0.01": lambda m: m["At"] <= TARGETS["At"],
        "other-class test acc within 1.0 pt of retrain": lambda m: m["other_test_gap"] <= TARGETS["other_test_gap"],
        "Fr ≥ 0.95": lambda m: m["Fr"] >= TARGETS["Fr"],
        "speed-up ≥ 1000×": lambda m: m["speedup"] >= TARGETS["speedup"],
        "relearn-3 ≤ 0.10": lambda m: m["relearn_3"] <= TARGETS["relearn_3"],
    }
    out = {}
    for label, ok in checks.items():
        passed = sum(bool(ok(r[name])) for r in rows)
        out[label] = "yes" if passed == len(rows) else f"no ({passed}/{len(rows)})"
    return out


COLUMNS = [("At", "At"), ("Ag", "Ag"), ("other_test", "other test"), ("forget_test", "forget test"),
           ("Fr", "Fr"), ("mia_simple", "loss-MIA"), ("relearn_1", "relearn-1"), ("relearn_3", "relearn-3"),
           ("relearn_10", "relearn-10"), ("probe", "probe"), ("seconds", "time (s)"), ("peak_mb", "peak MB")]


def summary_table(rows: list[dict[str, Any]], names: list[str]) -> str:
    header = ["model"] + [label for _, label in COLUMNS] + ["speed-up", "MIA gap", "k_p"]
    body = []
    for name in ["original", "retrain"] + names:
        cells = [name]
        for key, _ in COLUMNS:
            vals = [r[name].get(key, float("nan")) for r in rows]
            cells.append(fmt(vals, 4 if key == "seconds" and name != "retrain" else 3)
                         if key not in ("seconds", "peak_mb") or name != "original" else "–")
        if name in ("original", "retrain"):
            cells += ["–", "–", "–"]
        else:
            cells += [f"{mean_std([r[name]['speedup'] for r in rows])[0]:,.0f}×",
                      fmt([r[name]["mia_gap"] for r in rows]), fmt([r[name]["k_p"] for r in rows], 0)]
        body.append(cells)
    return md_table(header, body)


def per_class_table(rows: list[dict[str, Any]], name: str) -> str:
    header = ["class", "At", "At retrain", "other test", "retrain", "gap (pt)", "Fr", "relearn-3", "retrain r-3",
              "probe", "retrain probe", "k_p", "speed-up"]
    body = []
    for c in sorted({r["class"] for r in rows}):
        rs = [r for r in rows if r["class"] == c]

        def m(key: str, who: str = name, rs: list = rs) -> float:
            return mean_std([r[who][key] for r in rs])[0]
        body.append([c, f"{m('At'):.3f}", f"{m('At', 'retrain'):.3f}", f"{m('other_test'):.3f}",
                     f"{m('other_test', 'retrain'):.3f}", f"{100 * m('other_test_gap'):+.2f}", f"{m('Fr'):.3f}",
                     f"{m('relearn_3'):.3f}", f"{m('relearn_3', 'retrain'):.3f}", f"{m('probe'):.3f}",
                     f"{m('probe', 'retrain'):.3f}", f"{m('k_p'):.0f}", f"{m('speedup'):,.0f}×"])
    return md_table(header, body)


def curve_table(points: list[dict[str, Any]]) -> str:
    header = ["config", "k_p", "At", "other test", "relearn-1", "relearn-3", "probe", "Fr"]
    body = []
    for label in sorted({p["config"] for p in points}):
        for k in sorted({p["k_p"] for p in points if p["config"] == label}):
            ps = [p for p in points if p["config"] == label and p["k_p"] == k]
            body.append([label, k] + [fmt([p[key] for p in ps]) for key in
                                      ("At", "other_test", "relearn_1", "relearn_3", "probe", "Fr")])
    return md_table(header, body)


def plot_curve(points: list[dict[str, Any]], retrain_rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for label in sorted({p["config"] for p in points}):
        ks = sorted({p["k_p"] for p in points if p["config"] == label})
        for ax, key, title in zip(axes, ("At", "relearn_3", "other_test"),
                                  ("forget-class train acc (At)", "forget-class test acc after 3 relearn steps",
                                   "other-class test accuracy"), strict=True):
            ys = [mean_std([p[key] for p in points if p["config"] == label and p["k_p"] == k])[0] for k in ks]
            ax.plot(ks, ys, marker="o", label=label)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("k_p (neurons perturbed)")
    for ax, key in zip(axes, ("At", "relearn_3", "other_test"), strict=True):
        ax.axhline(mean_std([r[key] for r in retrain_rows])[0], color="k", ls="--", lw=1, label="retrain")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"python -m bench {NAME}", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one class, one seed, digits (seconds)")
    p.add_argument("--datasets", default="mnist5k,fmnist")
    p.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--fmnist-classes", default=None, help="classes for fmnist only (it is 15× slower to retrain)")
    p.add_argument("--fmnist-seeds", default=None, help="seeds for fmnist only")
    p.add_argument("--curve-classes", default="0", help="classes of the k_p sweep (first seed; '' = none)")
    p.add_argument("--ag-n", type=int, default=10000, help="retained training images sampled for Ag")
    p.add_argument("--out-dir", default=None)
    p.add_argument("--cached-only", action="store_true",
                   help="skip classes whose retrain reference is not cached yet (the report lists what ran)")
    return p.parse_args(argv)


def ints(text: str | None) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()] if text else []


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv or [])
    variant = method_settings(NAME, load_params()["unlearn"])
    if args.quick:
        plan = {"digits": ([3], [0])}
        curve_classes: list[int] = [3]
        grid: tuple[int, ...] = (20, 80)
        methods = {"paper (36/50/80, zero)": dict(PAPER), "variant (params.yaml)": variant}
    else:
        plan = {}
        for ds in args.datasets.split(","):
            classes = ints(args.fmnist_classes) if ds == "fmnist" and args.fmnist_classes else ints(args.classes)
            seeds = ints(args.fmnist_seeds) if ds == "fmnist" and args.fmnist_seeds else ints(args.seeds)
            plan[ds] = (classes, seeds)
        curve_classes, grid, methods = ints(args.curve_classes), CURVE_K_P, configs(variant)

    rows: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    version = results_version(methods, variant, args.ag_n, grid)
    for ds, (classes, seeds) in plan.items():
        store = refs.store(ds)
        active = store.active_ids()
        aset = set(active)
        for seed in seeds:
            original, base_seconds = refs.base_model(ds, seed)
            print(f"[{NAME}] {ds} seed {seed}: base model ({base_seconds:.0f} s to train)", flush=True)
            memory: dict[str, float] = {}
            for cls in classes:
                forget = [i for i in store.class_ids(cls) if i in aset]
                if args.cached_only and not retrain_cached(ds, store, active, forget, seed):
                    print(f"  class {cls}: no cached retrain reference yet, skipped (--cached-only)", flush=True)
                    continue
                splits = store.splits(forget)
                case = make_case(ds, seed, cls, original, splits, args.ag_n)
                case_dir = refs.CACHE / "results" / NAME / version
                row = cached(case_dir / f"{ds}-s{seed}-c{cls}.json",
                             lambda case=case, forget=forget, active=active, memory=memory: class_row(
                                 case, active, forget, methods, memory),
                             fresh=args.quick)
                rows.append(row)
                v = row["variant (params.yaml)"]
                print(f"  class {cls}: variant At {v['At']:.3f} other {v['other_test']:.3f} "
                      f"(retrain {row['retrain']['other_test']:.3f}) relearn-3 {v['relearn_3']:.3f} "
                      f"Fr {v['Fr']:.3f} {v['seconds'] * 1000:.0f} ms", flush=True)
                if seed == seeds[0] and cls in curve_classes:
                    for label, base in (("paper path (k_a 100)", {**PAPER, "k_a": 100}), ("variant", variant)):
                        pts = cached(case_dir / f"curve-{ds}-s{seed}-c{cls}-{label.split()[0]}.json",
                                     lambda case=case, base=base: curve_case(case, base, grid), fresh=args.quick)
                        points += [{"config": label, **p} for p in pts]

    markdown = report(rows, points, list(methods), plan, args)
    out_dir = Path(args.out_dir) if args.out_dir else OUT_DIR
    if points:
        plot_curve(points, [r["retrain"] for r in rows if (r["dataset"], r["class"]) in
                            {(p["dataset"], p["class"]) for p in points}], out_dir / f"{NAME}_kp_curve.png")
    payload = {"plan": {ds: {"classes": c, "seeds": s} for ds, (c, s) in plan.items()}, "variant": variant,
               "methods": methods, "targets": TARGETS, "rows": rows, "curve": points}
    write_results(NAME, payload, markdown, out_dir=out_dir)
    return payload


def report(rows: list[dict[str, Any]], points: list[dict[str, Any]], names: list[str],
           plan: dict[str, tuple[list[int], list[int]]], args: argparse.Namespace) -> str:
    ran = []
    for ds in plan:
        for seed in sorted({r["seed"] for r in rows if r["dataset"] == ds}):
            cls = sorted(r["class"] for r in rows if r["dataset"] == ds and r["seed"] == seed)
            ran.append(f"{ds} seed {seed}: classes {cls}")
    lines = ["What was run: " + ("; ".join(ran) or "nothing") + (" (--quick)" if args.quick else "")
             + ". Each class is compared with retraining from scratch without it (same architecture and "
             "schedule, bench.references). Requested: " + "; ".join(f"{ds} classes {c} seeds {s}" for ds, (c, s)
                                                                   in plan.items()) + ".", "",
             f"CPU load average when this report was written: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores. "
             "Times (and so speed-ups) are wall-clock on that shared machine; retraining times come from the "
             "reference cache, measured when each reference was trained. Peak memory on the CPU is the growth "
             "of the process's peak RSS during the call (VmHWM reset before it); for retraining it is measured "
             "over the first 20 steps of the same schedule.", ""]
    for ds in plan:
        rs = [r for r in rows if r["dataset"] == ds]
        if not rs:
            continue
        lines += [f"## {ds}: mean ± std over {len(rs)} class × seed runs", "", summary_table(rs, names), ""]
        lines += ["Targets on every class (variant | paper's exact settings):", ""]
        flags_v = target_flags(rs, "variant (params.yaml)")
        first = names[0]
        flags_p = target_flags(rs, first)
        lines += [md_table(["target", "variant", first], [[k, flags_v[k], flags_p[k]] for k in flags_v]), ""]
        lines += ["Per class (variant, mean over seeds):", "", per_class_table(rs, "variant (params.yaml)"), ""]
    if points:
        lines += ["## k_p trade-off (forget vs relearn vs utility)", "",
                  f"Classes {sorted({(p['dataset'], p['class']) for p in points})}, first seed; no stopping rule. "
                  f"![k_p curve]({NAME}_kp_curve.png)", "", curve_table(points), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
