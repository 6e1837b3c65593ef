"""`python -m bench neuron_perturbation --quick` runs end to end (tiny CNN, temp cache and output)."""

import json

from bench import neuron_perturbation as bench
from bench import references as refs
from tests.conftest import TINY_SPEC


def test_quick_benchmark_writes_results(tmp_path, monkeypatch):
    monkeypatch.setattr(refs, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(refs, "spec_for", lambda store, arch="cnn": dict(TINY_SPEC))
    out = tmp_path / "out"
    payload = bench.main(["--quick", "--out-dir", str(out)])

    (row,) = payload["rows"]
    assert (row["dataset"], row["class"], row["seed"]) == ("digits", 3, 0)
    for name in ("retrain", "original", "paper (36/50/80, zero)", "variant (params.yaml)"):
        for key in ("At", "Ag", "other_test", "Fr", "mia_simple", "relearn_3", "probe"):
            assert 0.0 <= row[name][key] <= 1.0, (name, key)
    assert row["retrain"]["At"] <= 0.05 and row["original"]["At"] >= 0.9
    variant = row["variant (params.yaml)"]
    assert variant["seconds"] > 0 and variant["speedup"] > 0 and variant["peak_mb"] >= 0
    assert {p["k_p"] for p in payload["curve"]} == {20, 80}

    saved = json.loads((out / "neuron_perturbation.json").read_text())
    assert saved["protocol"] == "neuron_perturbation" and len(saved["rows"]) == 1
    markdown = (out / "neuron_perturbation.md").read_text()
    assert "What was run" in markdown and "relearn-3 ≤ 0.10" in markdown
    assert (out / "neuron_perturbation_kp_curve.png").stat().st_size > 0
