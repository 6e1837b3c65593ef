"""Benchmark `class`: forget one whole Fashion-MNIST class, for each class, side by side with retraining.

    python -m bench class [--seeds 3] [--classes 0,3] [--methods salun,ssd] [--quick --out-dir DIR]
    python -m bench class --merge A/class.json B/class.json [--out-dir DIR]

The protocol splits into processes by class or seed (e.g. `--classes 0,1,2,3,4` and `--classes
5,6,7,8,9`, one torch thread each, separate --out-dir); `--merge` joins their cases into one report.

Seed s: the original model is the build's CNN and schedule (3 epochs, Adam 1e-3, batch 128) trained
with seed s on the whole Fashion-MNIST train pool (`bench.references.base_model("fmnist", s)`);
for each class c the retrained reference is the same schedule from scratch without class c
(`bench.references.retrain_reference`, cached and shared with other benchmarks). Every registered
classifier method except `noop` runs with its params.yaml settings (seed = s) and is evaluated by
`unlearn_ops.verify.suite.evaluate` with the relearning attack (1, 3, 10 steps) and the feature
probe; Avg. Gap (percentage points, SalUn's UA / RA / TA / MIA-Efficacy) is taken to the retrained
model. Production gates (params.yaml `gates.class`) are applied with the original as the previous
champion. `logit_suppression` is reported under its own name: it only suppresses the logit, and
the relearning / probe columns show it.

`--quick` runs class 3 of digits with one seed and tiny settings: a smoke test of the protocol
(seconds); its numbers mean nothing and are written only with --out-dir.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import compare
from bench import references as R
from bench.common import (
    load_note,
    load_record,
    load_runs,
    machine,
    md_table,
    merge_args,
    require_disjoint,
    require_same,
    write_results,
)
from flows.params import load_params

NAME = "class"
KEYS = ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy", "retained_test_accuracy",
        "forget_class_test_accuracy", "forgetting_rate", "mia_loss_auc", "feature_probe", "relearn_acc_0",
        "relearn_acc_1", "relearn_acc_3", "relearn_acc_10", "retained_test_accuracy_drop")
RELEARN_STEPS = (1, 3, 10)
# relearn_acc_3 this far above retrain's: the class was suppressed, not removed. Three steps, as in
# issue 5's relearning test: after 10 steps the retrained model relearns the class too (measured:
# Fashion-MNIST class 0, retrain 0.0 at 3 steps vs 0.89 for logit_suppression), so 10 cannot tell.
RELEARN_FLAG = 0.3
RELEARN_FLAG_STEPS = 3
PROBE_FLAG = 0.05     # feature-probe balanced accuracy this far above retrain's


def cases_for(dataset: str, seeds: list[int], classes: list[int]):
    """(seed, class, original, splits, retrained, retrain seconds) for every pair, cached models."""
    s = R.store(dataset)
    active = s.active_ids()
    aset = set(active)
    for seed in seeds:
        original, _ = R.base_model(dataset, seed)
        for c in classes:
            forget = [i for i in s.class_ids(c) if i in aset]
            retrained, seconds = R.retrain_reference(dataset, active, forget, seed)
            yield compare.Case(f"seed {seed} class {c}", seed, s.splits(forget), original, retrained, seconds,
                               forget_classes=[c], extra={"class": c, "class_name": s.classes[c]},
                               schedule=R.schedule(dataset, seed))


def merge(files: list[Path], out_dir: Path | None) -> dict[str, Any]:
    """One report from several runs of the protocol (same data, schedule, methods and gates)."""
    parts = load_runs(files)
    require_same(parts, ("dataset", "methods", "schedule", "gates", "quick"))
    # seed, class order in the report, whatever order the runs were given in
    cases = sorted((c for p in parts for c in p["cases"]), key=lambda c: (c["seed"], c["class"]))
    require_disjoint([c["case"] for c in cases])
    header = {k: parts[0][k] for k in ("quick", "dataset", "methods", "schedule", "gates", "load")}
    # complete: no run stopped early, or together they cover every class for every seed they hold
    # (runs split by class and stopped once the others had their cases)
    grid = {(c["seed"], c["class"]) for c in cases}
    seeds, n_classes = {c["seed"] for c in cases}, len(R.store(header["dataset"]).classes)
    full = len(grid) == len(seeds) * n_classes
    payload = assemble(header, cases, complete=full or all(p.get("complete", True) for p in parts))
    payload["merged_from"] = [{"file": str(f), "machine": p["machine"], "load": p["load"], "classes": p["classes"],
                               "seeds": p["seeds"]} for f, p in zip(files, parts, strict=True)]
    write_results(NAME, payload, markdown(payload), out_dir)
    return payload


def assemble(header: dict[str, Any], cases: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
    """The result payload over `cases`: seeds / classes are those the cases cover, the summary and
    the suppression flags are derived from them (one place for a run and a merge)."""
    methods = header["methods"]
    return {**header, "complete": complete, "cases": cases,
            "seeds": sorted({c["seed"] for c in cases}), "classes": sorted({c["class"] for c in cases}),
            "summary": compare.summarize(cases, ["original", compare.REFERENCE, *methods], KEYS),
            "suppression_flags": suppression_flags(cases, methods)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(argv or [])
    if "--merge" in argv:
        return merge(*merge_args(NAME, argv))
    args = compare.parser(NAME, __doc__.split("\n\n")[0], classes=True).parse_args(argv)
    dataset = "digits" if args.quick else "fmnist"
    seeds = compare.seeds_of(args)
    classes = [3] if args.quick else [int(c) for c in args.classes.split(",") if c != ""]
    methods = compare.with_variants(compare.classifier_methods([m for m in args.methods.split(",") if m]), args.variant)
    params = load_params()
    out_dir = Path(args.out_dir) if args.out_dir else None
    cases: list[dict[str, Any]] = []

    header = {"quick": args.quick, "dataset": dataset, "methods": methods, "gates": params["gates"]["class"],
              "schedule": {k: v for k, v in asdict(R.schedule(dataset, 0)).items() if k != "device"}}
    for case in cases_for(dataset, seeds, classes):
        cases.append(compare.run_case(case, methods, "class", params["unlearn"], params["gates"],
                                      eval_kwargs={"relearn_steps": RELEARN_STEPS, "probe": True},
                                      overrides=compare.QUICK_OVERRIDES if args.quick else None))
        if out_dir is not None and len(cases) < len(seeds) * len(classes):
            # a long run stopped early keeps its finished cases (usable with --merge), marked partial
            partial = assemble({**header, "load": load_record()}, cases, complete=False)
            write_results(NAME, partial, markdown(partial), out_dir)
    payload = assemble({**header, "load": load_record()}, cases, complete=True)
    if args.quick and out_dir is None:
        print(f"[{NAME}] quick run: nothing written (pass --out-dir to keep it)")
        return payload
    write_results(NAME, payload, markdown(payload), out_dir)
    return payload


def suppression_flags(cases: list[dict[str, Any]], methods: list[str]) -> dict[str, dict[str, int]]:
    """Per method: in how many cases the relearning attack / the probe exposed it vs retrain."""
    out: dict[str, dict[str, int]] = {}
    for name in methods:
        relearn = probe = runs = 0
        for c in cases:
            row, ref = c["rows"].get(name, {}), c["rows"][compare.REFERENCE]["metrics"]
            if "metrics" not in row:
                continue
            runs += 1
            m = row["metrics"]
            key = f"relearn_acc_{RELEARN_FLAG_STEPS}"
            relearn += int(m.get(key, 0) - ref.get(key, 0) >= RELEARN_FLAG)
            probe += int(m.get("feature_probe", 0) - ref.get("feature_probe", 0) >= PROBE_FLAG)
        out[name] = {"runs": runs, "relearn": relearn, "probe": probe}
    return out


def markdown(payload: dict[str, Any]) -> str:
    s, methods = payload["summary"], payload["methods"]
    flags = suppression_flags(payload["cases"], methods)   # recomputed, so a rerender follows the rule
    rows = []
    for name in ["original", compare.REFERENCE, *methods]:
        e = s.get(name, {})
        if not e.get("runs"):
            rows.append([f"`{name}`", *(["n/a"] * 11), (e.get("skipped") or ["not run"])[0]])
            continue
        passed = e.get("gates_passed")
        f = flags.get(name)
        note = ("suppresses the logit only (not unlearning)" if name == "logit_suppression" else "")
        if f and f["runs"] and (f["relearn"] or f["probe"]):
            note = (note + "; " if note else "") + f"exposed: relearn {f['relearn']}/{f['runs']}, probe {f['probe']}/{f['runs']}"
        rows.append([f"`{name}`", compare.cell(e, "forget_accuracy"), compare.cell(e, "retain_accuracy"),
                     compare.cell(e, "test_accuracy"), compare.cell(e, "mia_efficacy"),
                     compare.cell(e, "avg_gap", scale=1.0),
                     compare.cell(e, "relearn_acc_3", digits=1), compare.cell(e, "feature_probe", digits=1),
                     "—" if name == "original" else compare.cell(e, "seconds", scale=1.0, digits=1),
                     "—" if name == "original" else compare.cell(e, "speedup", scale=1.0, digits=1),
                     "—" if name == "original" else compare.cell(e, "cpu_speedup", scale=1.0, digits=1),
                     "—" if not passed else f"{passed[0]}/{passed[1]}", note])
    table = md_table(["method", "forget acc %", "retain acc % (RA)", "test acc % (TA)", "MIA-Eff. %",
                      "Avg. Gap (pp)", "relearn-3 %", "probe %", "wall s", "speed-up (wall)", "speed-up (CPU)",
                      "gates passed", "note"], rows)
    per_case = per_case_table(payload)
    runs = payload.get("merged_from")
    m = runs[0]["machine"] if runs else machine()
    sched = payload["schedule"]
    what = (f"## What was run\n\n- Data: {payload['dataset']}; classes {payload['classes']}; seeds "
            f"{payload['seeds']} (mean ± std over every (seed, class) pair).\n"
            f"- Original: the build's CNN, {sched['epochs']} epochs, Adam lr {sched['lr']}, batch "
            f"{sched['batch_size']}, seed = the run's seed, on the whole active train pool (cached).\n"
            f"- Retrained reference: the same schedule from scratch without the class (cached; its time is the "
            f"one measured when it was trained).\n"
            f"- Methods: {', '.join(f'`{n}`' for n in methods)}, params.yaml settings, seed = the run's.\n"
            f"- Gates: params.yaml `gates.class` = `{payload['gates']}`, original as previous champion.\n"
            f"- Flags: relearn = `relearn_acc_{RELEARN_FLAG_STEPS}` ≥ retrain's + {RELEARN_FLAG}; probe = `feature_probe` ≥ "
            f"retrain's + {PROBE_FLAG}.\n"
            f"- Machine: {m['cpu_count']} CPUs, {m['device']}, torch threads {m['torch_threads']}; {load_note(payload.get('load'))}; "
            f"wall-clock times depend on the load when each was measured (the cached retrain's too). Speed-up (CPU) = the retrain's CPU time, extrapolated from 20 timed steps of its schedule in the same "
            f"process, over the method's process CPU time.\n")
    if runs:
        what += f"- Merged from {len(runs)} runs: " + "; ".join(
            f"`{r['file']}` (classes {r['classes']}, seeds {r['seeds']}, commit {r['machine']['commit']}, "
            f"{r['machine']['date']}, {r['machine']['torch_threads']} torch thread(s); {load_note(r['load'])})"
            for r in runs) + ".\n"
    legend = ("Accuracies, MIA-Efficacy, relearn-3 (accuracy on never-trained samples of the class after 3 "
              "relearning steps) and probe (balanced accuracy of a linear probe for the class on penultimate "
              "features) in %; Avg. Gap in percentage points over forget accuracy (UA), RA, TA and MIA-Efficacy, to "
              "the retrained model (0 = retrain). Definitions: docs/verification.md.")
    sup = flags.get("logit_suppression")
    sup_text = ""
    if sup and sup["runs"]:
        sup_text = (f"\n\n`logit_suppression` zeroes the class's output row: it **only suppresses the logit** (a "
                    f"legitimate fast option to hide a class from predictions, not unlearning). It was exposed by the "
                    f"relearning attack in {sup['relearn']}/{sup['runs']} cases and by the feature probe in "
                    f"{sup['probe']}/{sup['runs']}.")
    partial = ([] if payload.get("complete", True) else
               ["**Partial results: the run (or one of the merged runs) stopped before its last case.**"])
    return "\n\n".join([*partial, f"Whole-class forgetting on Fashion-MNIST.{sup_text}", table, legend, per_case,
                         what])


def per_case_table(payload: dict[str, Any]) -> str:
    methods = [n for n in payload["methods"] if payload["summary"].get(n, {}).get("runs")]
    rows = []
    for c in payload["cases"]:
        row = [c["case"] + f" ({c.get('class_name', '')})"]
        for n in methods:
            r = c["rows"].get(n, {})
            row.append("n/a" if "avg_gap" not in r else
                       f"{r['avg_gap']:.2f}{'' if r['gates']['passed'] else ' ✗'}")
        rows.append(row)
    return "Avg. Gap (pp) per case; ✗ = rejected by the production gates.\n\n" + md_table(
        ["case", *[f"`{n}`" for n in methods]], rows)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
