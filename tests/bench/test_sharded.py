"""`python -m bench sharded --quick` runs end to end (digits, tiny schedules, temp cache and output)."""

import json

from bench import references as refs
from bench import sharded


def test_sharded_quick(tmp_path, monkeypatch):
    monkeypatch.setattr(refs, "CACHE", tmp_path / "cache")
    out = tmp_path / "out"
    payload = sharded.main(["--quick", "--out-dir", str(out)])
    mono, rows = payload["monolithic"], payload["configs"]
    assert mono["retrain_cpu_s"] > 0 and 0 <= mono["test_accuracy"] <= 1
    assert [r["config"] for r in rows] == list(sharded.QUICK.configs)
    for row in rows:
        assert set(row["deletions"]) >= {"1 subjects", "10 subjects"}
        one = row["deletions"]["1 subjects"]
        assert len(one["retrained"]) == 1 and one["cpu_s"] > 0 and one["ratio"] > 0  # one subject: one member
        assert 0 <= row["mia_before"] <= 1 and len(row["per_class"]) == 10
    warm = rows[0]
    assert warm["warm"] and warm["pool_samples"] > 0 and "class" in warm["deletions"]
    assert warm["deletions"]["class"]["forget_class_test_accuracy"] <= 0.05  # exact: every member retrained
    assert set(payload["verdicts"]) and all(v.startswith(("met", "not met")) for v in payload["verdicts"].values())
    saved = json.loads((out / "sharded.json").read_text())
    assert saved["protocol"] == "sharded" and saved["machine"]["commit"] and saved["verdicts"] == payload["verdicts"]
    md = (out / "sharded.md").read_text()
    assert "## Verdicts" in md and "Per-class test accuracy" in md and "smoke test" in md
