"""`python -m bench lm_token_poisoning --quick` runs the protocol end to end on a tiny Llama (smoke test)."""

import json
import tempfile

import pytest

from bench import BENCHES
from bench.lm_token_poisoning import main


def test_listed():
    assert "lm_token_poisoning" in BENCHES


def test_quick_protocol_writes_results(tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # the quick run's temp folder lands here
    main(["--quick", "--out-dir", str(tmp_path)])
    assert not list(scratch.glob("bench-lm-quick-*")), "the quick run left its temp folder behind"
    data = json.loads((tmp_path / "lm_token_poisoning.json").read_text())
    assert data["quick"] is True and data["sizes"] == [1]
    models = {r["model"] for r in data["rows"]}
    assert models == {"original", "retrain", "lm_token_poisoning", "grad_ascent", "grad_diff", "npo"}
    retrain = next(r for r in data["rows"] if r["model"] == "retrain")
    assert retrain["forget_quality"] == 1.0 and retrain["seconds"] > 0
    for row in data["rows"]:
        assert 0.0 <= row["forget_fact_recall"] <= 1.0 and 0.0 <= row["mia_loss_auc"] <= 1.0
        if row["model"] not in ("original", "retrain"):
            assert row["speedup"] == retrain["seconds"] / row["seconds"]
    tp = next(r for r in data["rows"] if r["model"] == "lm_token_poisoning")
    assert tp["poisoned"] and all("***" in p["poisoned"] for p in tp["poisoned"])
    md = (tmp_path / "lm_token_poisoning.md").read_text()
    assert "## Targets" in md and "## Poisoned answers" in md


def test_privleak_is_muses_relative_auc_against_the_retrained_model_of_the_same_draw():
    from bench.lm_token_poisoning import privleak

    rows = [{"seed": 0, "size": 1, "model": "retrain", "mia_loss_auc": 0.5},
            {"seed": 0, "size": 1, "model": "npo", "mia_loss_auc": 0.75},
            {"seed": 1, "size": 1, "model": "retrain", "mia_loss_auc": 0.4},
            {"seed": 1, "size": 1, "model": "npo", "mia_loss_auc": 0.3}]
    privleak(rows)
    assert [r["privleak"] for r in rows] == pytest.approx([0.0, 0.5, 0.0, -0.25])
