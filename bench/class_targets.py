"""Issue 24 item 1's verdicts on a `class` protocol result: which methods forget a class *in the
features* (relearning fails), keep the other classes and stay fast, run by run.

    python -m bench.class_targets RESULT.json [--tuned SEED:CLASS,...] [--out NAME]

RESULT.json is a (merged) `python -m bench class` result. Every method row is checked against the
targets below; the runs a setting was tuned on (`--tuned`) are reported apart, so the held-out
verdict is the one that counts. Writes NAME.md next to the JSON (NAME defaults to the JSON's
stem); numbers are only read, never recomputed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import fmt, md_table

Row = dict[str, Any]
# target label -> check(method row, original row); issue 24 item 1
TARGETS: dict[str, Callable[[Row, Row], bool]] = {
    "A_train ≤ 0.01": lambda r, o: r["metrics"]["forget_accuracy"] <= 0.01,
    "A_test ≤ 0.01": lambda r, o: r["metrics"]["forget_class_test_accuracy"] <= 0.01,
    "retained-class test accuracy no more than 0.5 pt below the original": lambda r, o: retained_delta(r, o) >= -0.5,
    "relearn-3 ≤ 0.10": lambda r, o: r["metrics"]["relearn_acc_3"] <= 0.10,
    "speed-up ≥ 10× (wall)": lambda r, o: r["speedup"] >= 10,
    "speed-up ≥ 10× (CPU)": lambda r, o: r["cpu_speedup"] >= 10,
    "production class gates pass": lambda r, o: bool(r["gates"]["passed"]),
}


def retained_delta(row: Row, original: Row) -> float:
    """Retained-class test accuracy vs the original model, in percentage points."""
    return 100 * (row["metrics"]["retained_test_accuracy"] - original["metrics"]["retained_test_accuracy"])


def method_rows(payload: dict[str, Any]) -> list[str]:
    """The retrained reference, then every method or variant that ran."""
    return ["retrain", *payload["methods"]]


def counts(cases: list[dict[str, Any]], method: str) -> dict[str, tuple[int, int]]:
    """Target -> (runs met, runs where the method ran)."""
    ran = [c for c in cases if "metrics" in c["rows"].get(method, {})]
    return {t: (sum(check(c["rows"][method], c["rows"]["original"]) for c in ran), len(ran))
            for t, check in TARGETS.items()}


def targets_table(cases: list[dict[str, Any]], methods: list[str]) -> str:
    per = {m: counts(cases, m) for m in methods}
    return md_table(["target", *[f"`{m}`" for m in methods]],
                    [[t, *[f"{per[m][t][0]}/{per[m][t][1]}" for m in methods]] for t in TARGETS])


def summary_table(cases: list[dict[str, Any]], methods: list[str]) -> str:
    rows = []
    for m in ["original", *methods]:
        ran = [(c["rows"][m], c["rows"]["original"]) for c in cases if "metrics" in c["rows"].get(m, {})]
        cols = [fmt([r["metrics"][k] for r, _ in ran]) for k in ("forget_accuracy", "forget_class_test_accuracy")]
        cols.append(fmt([retained_delta(r, o) for r, o in ran], 2))
        cols += [fmt([r["metrics"][k] for r, _ in ran]) for k in ("relearn_acc_3", "feature_probe")]
        cols += [fmt([r[k] for r, _ in ran], 1) if m != "original" else "–"
                 for k in ("cpu_seconds", "cpu_speedup", "speedup")]
        rows.append([f"`{m}`", *cols])
    return md_table(["model", "A_train", "A_test", "retained acc Δ (pt)", "relearn-3", "probe", "CPU s",
                     "speed-up CPU", "speed-up wall"], rows)


def case_table(cases: list[dict[str, Any]], methods: list[str], tuned: set[tuple[int, int]]) -> str:
    rows = []
    for c in cases:
        o = c["rows"]["original"]
        for m in ["original", *methods]:
            r = c["rows"].get(m, {})
            if "metrics" not in r:
                continue
            x = r["metrics"]
            mark = " (tuned on)" if (c["seed"], c["class"]) in tuned else ""
            rows.append([f"{c['seed']}", f"{c['class']} ({c['class_name']}){mark}", f"`{m}`",
                         f"{x['forget_accuracy']:.4f}", f"{x['forget_class_test_accuracy']:.4f}",
                         f"{x['retained_test_accuracy']:.4f} ({retained_delta(r, o):+.2f})", f"{x['relearn_acc_3']:.3f}",
                         f"{x['feature_probe']:.3f}",
                         "–" if m == "original" else f"{r['cpu_seconds']:.1f} / {r['cpu_speedup']:.1f}×",
                         "–" if m == "original" else ("pass" if r["gates"]["passed"] else
                                                      "FAIL " + ", ".join(r["gates"]["failed"]))])
    return md_table(["seed", "class", "model", "A_train", "A_test", "retained acc (Δ pt)", "relearn-3", "probe",
                     "CPU s / speed-up", "gates"], rows)


def markdown(payload: dict[str, Any], tuned: set[tuple[int, int]], source: str) -> str:
    cases = payload["cases"]
    methods = method_rows(payload)
    held = [c for c in cases if (c["seed"], c["class"]) not in tuned]
    runs = payload.get("merged_from") or [{"file": source, "machine": payload["machine"], "load": payload["load"]}]
    machines = "; ".join(f"`{r['file']}`: commit `{r['machine']['commit']}`, {r['machine']['date']}, "
                         f"{r['machine']['torch_threads']} torch thread(s), load {r['load']['start']} → {r['load']['end']} "
                         f"on {r['load']['cores']} cores" for r in runs)
    m0 = runs[0]["machine"]
    return "\n".join([
        f"# Class unlearning in the features: issue 24 item 1 on `{Path(source).name}`", "",
        f"**What this is:** the `class` protocol (bench/class_deletion.py: relearning attack at 1/3/10 steps, feature "
        f"probe, production gates) on {payload['dataset']}, classes {payload['classes']} × seeds {payload['seeds']} "
        f"({len(cases)} runs), each method side by side with the CNN retrained from scratch without the class. "
        f"Rendered by `python -m bench.class_targets {source}"
        + (f" --tuned {','.join(f'{s}:{k}' for s, k in sorted(tuned))}" if tuned else "") + "`.", "",
        f"Machine: {m0['platform']}, {m0['cpu_count']} CPUs, device {m0['device']}, torch {m0['torch']}. Runs: "
        f"{machines}. Speed-up (CPU) = the retrain's CPU time, extrapolated from timed steps in the same process, "
        "over the method's process CPU time; the wall figure moves with the load.", "",
        f"## Targets, held-out runs ({len(held)} of {len(cases)}: every run but the ones settings were tuned on)", "",
        targets_table(held, methods), "",
        f"## Targets, all {len(cases)} runs", "", targets_table(cases, methods), "",
        "## Mean ± std over all runs", "", summary_table(cases, methods), "",
        "A_train = accuracy on the forgotten class's training images, A_test = on its test images, retained acc = "
        "test accuracy on the other classes (Δ vs the original model), relearn-3 = accuracy on never-trained images "
        "of the class after 3 Adam steps (lr 1e-3) on 64 of its images + 64 retained ones, probe = balanced accuracy "
        "of a linear probe for the class on the penultimate features (test set); definitions: docs/verification.md.",
        "", "## Per run", "", case_table(cases, methods, tuned), ""])


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m bench.class_targets", description=__doc__.split("\n\n")[0])
    p.add_argument("result", help="a (merged) `python -m bench class` result JSON")
    p.add_argument("--tuned", default="", help="SEED:CLASS runs the settings were tuned on (reported apart)")
    p.add_argument("--out", default="", help="Markdown name next to the JSON (default: the JSON's stem)")
    args = p.parse_args(argv)
    source = Path(args.result)
    payload = json.loads(source.read_text())
    tuned = {(int(s), int(k)) for s, k in (t.split(":") for t in args.tuned.split(",") if t)}
    text = markdown(payload, tuned, str(source))
    out = source.with_name(f"{args.out or source.stem}.md")
    out.write_text(text)
    print(f"[class_targets] wrote {out}")
    return text


if __name__ == "__main__":
    main()
