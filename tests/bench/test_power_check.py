"""`python -m bench power_check --quick` runs end to end (digits, tiny CNN, temp cache) and records,
per batch, the champion's own gate metrics, the power verdict and its cost."""

import json

from bench import power_check
from bench import references as refs
from tests.conftest import TINY_SPEC


def test_power_check_quick(tmp_path, monkeypatch):
    monkeypatch.setattr(refs, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(refs, "spec_for", lambda store, arch="cnn": dict(TINY_SPEC))
    payload = power_check.main(["--quick", "--out-dir", str(tmp_path / "out")])
    rows = payload["rows"]
    assert [r["subjects"] for r in rows] == power_check.QUICK["subjects"]
    for r in rows:
        assert r["samples"] > 0 and r["check_cpu_s"] > 0 and isinstance(r["power"], bool)
        assert r["evidence"] and r["evidence"][0].startswith("forget_accuracy_z ")
        # the verdict is the margin rule applied to the recorded z
        z = payload["gates"]["forget_accuracy_z"]
        assert r["power"] == (r["forget_accuracy_z"] >= z["max"] + z["power_margin"])
    assert payload["method"] == "random_label"
    assert all(run["subjects"] in {r["subjects"] for r in rows if r["power"]} for run in payload["method_runs"])
    stored = json.loads((tmp_path / "out" / "power_check.json").read_text())
    assert stored["protocol"] == "power_check" and len(stored["rows"]) == len(rows)
    assert "| subjects | samples | champion z |" in (tmp_path / "out" / "power_check.md").read_text()
