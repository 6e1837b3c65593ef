"""The `sharded` benchmark's verdicts and Markdown report (bench/sharded.py runs it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TARGET_ONE, TARGET_HUNDRED, TARGET_POINTS = 5.0, 1.5, 1.5  # issue 21


def _checks(row: dict[str, Any], mono: dict[str, Any], largest: str) -> dict[str, bool | None]:
    d = row["deletions"]
    return {"accuracy": 100 * (mono["test_accuracy"] - row["test_accuracy"]) <= TARGET_POINTS,
            "one": d["1 subjects"]["ratio"] >= TARGET_ONE if "1 subjects" in d else None,
            "hundred": d[largest]["ratio"] >= TARGET_HUNDRED if largest in d else None}


def verdicts(payload: dict[str, Any]) -> dict[str, str]:
    """Target → `met (configs)` or `not met (configs measured)`; `not measured` when no
    configuration ran what it needs."""
    largest = f"{max(payload['setup']['subjects'])} subjects"
    mono, rows = payload["monolithic"], payload["configs"]
    checks = {row["config"]: _checks(row, mono, largest) for row in rows}

    def verdict(keys: tuple[str, ...]) -> str:
        measured = {label: c for label, c in checks.items() if all(c[k] is not None for k in keys)}
        if not measured:
            return "not measured"
        met = [label for label, c in measured.items() if all(c[k] for k in keys)]
        return f"met ({', '.join(met)})" if met else f"not met (measured: {', '.join(measured)})"

    return {f"accuracy within {TARGET_POINTS} points of the monolithic model": verdict(("accuracy",)),
            f"one-subject deletion >= {TARGET_ONE}x cheaper": verdict(("one",)),
            f"{largest} deletion >= {TARGET_HUNDRED}x cheaper": verdict(("hundred",)),
            "all three in one configuration": verdict(("accuracy", "one", "hundred"))}


def _cell(row: dict[str, Any], name: str) -> str:
    d = row["deletions"].get(name)
    if d is None:
        return "—"
    slices = ",".join(f"{'pool' if r['member'] < 0 else r['member']}@{r['from_slice'] + 1}" for r in d["retrained"])
    return f"{d['cpu_s']:.1f} s ({d['ratio']:.1f}x) [{slices}]" if len(d["retrained"]) <= 4 else \
        f"{d['cpu_s']:.1f} s ({d['ratio']:.1f}x) [{len(d['retrained'])} members]"


def markdown(payload: dict[str, Any], load_note: str, md_table: Callable, machine: Callable) -> str:
    mono, rows, setup = payload["monolithic"], payload["configs"], payload["setup"]
    names = [f"{k} subjects" for k in setup["subjects"]] + ["class"]
    largest = f"{max(setup['subjects'])} subjects"
    out = []
    if payload["quick"]:
        out.append("**Quick run (digits, tiny settings): a smoke test, these numbers mean nothing.**\n")
    if payload.get("builds_only"):
        out.append("**Builds only (a pilot): no deletion was run.**\n")
    out += ["## Verdicts", "", md_table(["target", "verdict"], [[k, v] for k, v in payload["verdicts"].items()]), "",
            "## Accuracy and deletion cost", "",
            f"Monolithic model (the build's schedule, retrained without the {largest}): test accuracy "
            f"{mono['test_accuracy']:.4f}, retrain {mono['retrain_cpu_s']:.0f} CPU s (measured for {mono['measured_for']}; "
            "the other deletions' monolithic cost is that time scaled by their training steps), loss-MIA AUC of the "
            f"forgotten subjects after retraining {mono['mia_after']:.3f}, inference "
            f"{mono['inference_cpu_ms_per_1000']:.0f} CPU ms per 1 000 images.", "",
            *([f"Shared warm start (`warm` configurations): {payload['warm_start']['samples']} pool samples, trained "
               f"once in {payload['warm_start']['cpu_s']:.0f} CPU s (not in the build column, which is the members' "
               f"training); alone it reaches test accuracy {payload['warm_start']['test_accuracy']:.4f}. A deletion "
               "from the pool (not run: no random subject is drawn from it) retrains the warm start and every member: "
               "its cost is this plus the build column.", ""] if payload.get("warm_start") else []),
            "Each deletion cell: CPU seconds of `sharded_retrain` (ratio: monolithic retrain CPU / this) "
            "[member@slice it was retrained from, 1-based; `pool`: the shared warm start].", ""]
    header = ["config", "test acc", "Δ vs mono (points)", "build CPU s", *names, "MIA AUC before → after",
              "inference ms/1000"]
    table = []
    for r in rows:
        mia_after = r["deletions"].get(largest, {}).get("mia_after")
        table.append([r["config"], f"{r['test_accuracy']:.4f}", f"{100 * (r['test_accuracy'] - mono['test_accuracy']):+.2f}",
                      f"{r['build_cpu_s']:.0f}", *(_cell(r, n) for n in names),
                      f"{r['mia_before']:.3f} → " + ("—" if mia_after is None else f"{mia_after:.3f}"),
                      f"{r['inference_cpu_ms_per_1000']:.0f}"])
    out += [md_table(header, table), ""]
    cls = [r for r in rows if "class" in r["deletions"]]
    if cls:
        out += ["Class deletion: test accuracy on the forgotten class afterwards " + ", ".join(
            f"{r['config']} {r['deletions']['class']['forget_class_test_accuracy']:.3f}" for r in cls) + ".", ""]
    out += ["## Per-class test accuracy", "",
            md_table(["model", *payload["classes"]],
                     [["monolithic", *(f"{a:.3f}" for a in mono["per_class"])]]
                     + [[r["config"], *(f"{a:.3f}" for a in r["per_class"])] for r in rows]), "",
            "## What was run", "",
            f"- Data: {payload['dataset']}, whole train pool; test pool for accuracy; the random subjects are drawn "
            f"(seed 0, nested) among the subjects outside the shared pool ({100 * setup['pool_fraction']:.0f} % of the "
            "subjects, used by `warm` configurations only).",
            "- `scratch-S{S}-R{R}-E{E}`: S members, R slices, each member E epochs over its shard (spread over its "
            "slices, `MemberSchedule.stage`), seeded fresh init. `warm-…`: the same, every member starting from a model "
            f"trained {setup['pool_epochs']} epochs on the shared pool (trained once, shared by every `warm` "
            "configuration; a deletion from the pool costs a full rebuild).",
            f"- Monolithic schedule {setup['mono']['epochs']} epochs, lr {setup['mono']['lr']}, batch "
            f"{setup['mono']['batch_size']}; members use the same lr and batch size.",
            "- MIA: loss AUC of the forgotten subjects' samples against same-class non-members "
            f"(≤ {setup['mia_cap']} each); 0.5 = indistinguishable.",
            f"- One process, one torch thread; CPU seconds of this process. {load_note}.", ""]
    return "\n".join(out)
