"""The gate-calibration rules (bench/calibrate_gates.py) on synthetic measurements."""

from bench.calibrate_gates import propose, verdicts


def item(model, n, z, auc, drop):
    return {"seed": 0, "model": model, "n_forget": n, "mia_loss_auc": auc, "mia_simple": 0.5,
            "forget_accuracy_gap": 0.0, "forget_accuracy_z": z, "test_accuracy_drop": drop}


def test_proposal_follows_retrain_and_rejects_noop():
    rows = [item("retrain", 1000, 1.2, 0.51, 0.004), item("retrain", 100, -0.5, 0.58, 0.004),
            item("retrain", 10, 2.0, 0.75, 0.004),  # a cut of 10 is too noisy for the AUC rule
            item("noop", 1000, 9.0, 0.62, 0.0), item("over-forgetting", 1000, -5.0, 0.3, 0.4)]
    klass = [{"seed": 0, "class": 0, "model": "retrain", "forget_accuracy": 0.0, "forget_class_test_accuracy": 0.0,
              "retained_test_accuracy_drop": -0.01},
             {"seed": 0, "class": 0, "model": "noop", "forget_accuracy": 0.9, "forget_class_test_accuracy": 0.85,
              "retained_test_accuracy_drop": 0.0}]
    p = propose(rows, klass)
    assert p["samples"]["forget_accuracy_z"] == {"max": 3.0}          # statistics, not the data, set 3
    assert p["samples"]["mia_loss_auc"] == {"max": 0.63}              # 0.58 (cuts >= 100) + 0.05
    assert p["samples"]["test_accuracy_drop"] == {"max": 0.015}       # 0.004 + 0.01, rounded up to 0.005
    assert p["subject"] == p["samples"]
    assert p["class"]["retained_test_accuracy_drop"] == {"max": 0.02}  # never below 0.02
    v = verdicts(rows, p["samples"])
    assert v == {"retrain": [1, 1], "noop": [0, 1], "over-forgetting": [0, 1]}
    assert verdicts(klass, p["class"]) == {"retrain": [1, 1], "noop": [0, 1]}


def test_z_threshold_rises_only_if_a_retrain_exceeds_it():
    rows = [item("retrain", 1000, 3.7, 0.5, 0.0), item("noop", 1000, 9.0, 0.6, 0.0)]
    assert propose(rows, [])["samples"]["forget_accuracy_z"] == {"max": 4.0}


def test_size_gate_is_the_smallest_cut_that_catches_every_noop():
    from bench.calibrate_gates import min_detectable_size

    rows = [item("noop", 10, 1.1, 0.50, 0.0), item("noop", 30, 2.0, 0.55, 0.0), item("noop", 100, 3.4, 0.55, 0.0),
            item("noop", 1000, 10.7, 0.56, 0.0), item("retrain", 100, 0.4, 0.55, 0.0)]
    assert min_detectable_size(rows, z_cut=3.0, auc_cut=0.6) == 100
    assert min_detectable_size(rows, z_cut=5.0, auc_cut=0.6) == 1000
