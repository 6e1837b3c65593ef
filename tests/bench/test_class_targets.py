"""bench.class_targets: each target fails on the input that misses it, and tuned runs are kept apart."""

import json

import pytest

from bench.class_targets import TARGETS, counts, main

GOOD = {"forget_accuracy": 0.0, "forget_class_test_accuracy": 0.0, "retained_test_accuracy": 0.910,
        "relearn_acc_3": 0.0, "feature_probe": 0.9}
ORIGINAL = {**GOOD, "forget_accuracy": 0.95, "forget_class_test_accuracy": 0.93, "relearn_acc_3": 0.97,
            "retained_test_accuracy": 0.912}


def row(metrics=None, speedup=30.0, cpu_speedup=30.0, passed=True, failed=()):
    return {"metrics": {**GOOD, **(metrics or {})}, "speedup": speedup, "cpu_speedup": cpu_speedup,
            "cpu_seconds": 5.0, "gates": {"passed": passed, "failed": list(failed)}}


def case(seed, cls, method_row):
    return {"seed": seed, "class": cls, "class_name": f"c{cls}",
            "rows": {"original": {"metrics": ORIGINAL}, "retrain": row(speedup=1.0, cpu_speedup=1.0), "m": method_row}}


# one input per target that makes exactly that target fail
MISSES = {
    "A_train ≤ 0.01": row({"forget_accuracy": 0.02}),
    "A_test ≤ 0.01": row({"forget_class_test_accuracy": 0.05}),
    "retained-class test accuracy no more than 0.5 pt below the original": row({"retained_test_accuracy": 0.905}),
    "relearn-3 ≤ 0.10": row({"relearn_acc_3": 0.84}),
    "speed-up ≥ 10× (wall)": row(speedup=9.9),
    "speed-up ≥ 10× (CPU)": row(cpu_speedup=9.0),
    "production class gates pass": row(passed=False, failed=["retained_test_accuracy_drop"]),
}


def test_every_target_fails_on_its_own_miss_and_only_there():
    assert set(MISSES) == set(TARGETS)
    assert all(met == (1, 1) for met in counts([case(0, 0, row())], "m").values())
    for target, bad in MISSES.items():
        got = counts([case(0, 0, bad)], "m")
        assert got[target] == (0, 1), target
        assert all(v == (1, 1) for t, v in got.items() if t != target), target


def test_retained_accuracy_is_measured_against_the_original_in_points():
    # 0.912 -> 0.907 is -0.5 pt: on the line, met; 0.9069 is past it
    assert counts([case(0, 0, row({"retained_test_accuracy": 0.9070001}))], "m")[
        "retained-class test accuracy no more than 0.5 pt below the original"] == (1, 1)
    assert counts([case(0, 0, row({"retained_test_accuracy": 0.9069}))], "m")[
        "retained-class test accuracy no more than 0.5 pt below the original"] == (0, 1)


def test_report_keeps_tuned_runs_apart_and_skipped_methods_out(tmp_path):
    skipped = {"skipped": "NotApplicable: ..."}
    machine = {"commit": "abc1234", "date": "2026-12-05", "torch_threads": 1, "platform": "Linux", "cpu_count": 2,
               "device": "cpu", "torch": "2.14.1"}
    payload = {"dataset": "fmnist", "classes": [0, 1], "seeds": [0], "methods": ["m"], "machine": machine,
               "load": {"start": 0.1, "end": 1.0, "cores": 2},
               "cases": [case(0, 0, row()), case(0, 1, MISSES["relearn-3 ≤ 0.10"]), case(0, 2, skipped)]}
    source = tmp_path / "result.json"
    source.write_text(json.dumps(payload))
    text = main([str(source), "--tuned", "0:0"])
    held = text.split("## Targets, held-out runs")[1].split("## Targets, all")[0]
    assert "(2 of 3" in held
    assert "| relearn-3 ≤ 0.10 | 2/2 | 0/1 |" in held          # the tuned run (0:0) is not in it
    assert "| relearn-3 ≤ 0.10 | 3/3 | 1/2 |" in text          # all runs; a skipped method counts nowhere
    assert "0 (c0) (tuned on)" in text
    assert (tmp_path / "result.md").read_text() == text


@pytest.mark.parametrize("spec", ["0:0", "0:0,2:8"])
def test_tuned_runs_parse(spec, tmp_path):
    payload = {"dataset": "fmnist", "classes": [0], "seeds": [0], "methods": ["m"], "cases": [case(0, 0, row())],
               "machine": {"commit": "c", "date": "d", "torch_threads": 1, "platform": "p", "cpu_count": 2,
                           "device": "cpu", "torch": "t"}, "load": {"start": 0, "end": 0, "cores": 2}}
    source = tmp_path / "r.json"
    source.write_text(json.dumps(payload))
    assert "(0 of 1" in main([str(source), "--tuned", spec])
