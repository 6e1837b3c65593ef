"""`python -m bench concept_poisoning --quick` runs the whole protocol end to end (smoke test:
the protocol's plumbing and bookkeeping are checked, its numbers are not)."""

import json

import pytest

from bench import BENCHES
from bench.concept_poisoning import TEXT_VARIANTS, main


def test_listed():
    assert "concept_poisoning" in BENCHES


def test_quick_protocol_writes_results(tmp_path):
    payload = main(["--quick", "--out-dir", str(tmp_path)])
    data = json.loads((tmp_path / "concept_poisoning.json").read_text())
    assert data["quick"] is True and data["dataset"] == "digits"
    (row,) = data["rows"]
    m = row["concept_poisoning (params.yaml)"]
    assert m["speedup"] == pytest.approx(row["retrain"]["seconds"] / m["seconds"])
    for model in ("original", "retrain", "concept_poisoning (params.yaml)", "localized+targeted", "none+keep"):
        assert 0.0 <= row[model]["A_train"] <= 1.0 and 0.0 <= row[model]["Fr"] <= 1.0
    assert m["A_global_drop"] == pytest.approx(row["original"]["A_global"] - m["A_global"])
    # the concept report picture of the class, and the concept report itself (no forget sample IDs)
    assert (tmp_path / "concept_poisoning_class3.png").is_file()
    assert payload["concept_report"]["donors"]["3"]["donor"] != 3
    text = data["text"]
    assert set(text["cases"]) == {"class 1 (fresh)", f"movie {text['movie']!r}"}
    for res in text["cases"].values():
        for name in ("original", "retrain", *TEXT_VARIANTS):
            assert 0.0 <= res[name]["A_train"] <= 1.0
        assert res[next(iter(TEXT_VARIANTS))]["tokens_masked"] == 0  # label-only variant
    md = (tmp_path / "concept_poisoning.md").read_text()
    assert "Targets on every run" in md and "## Ablation" in md and "## Text" in md


def test_quick_refuses_to_overwrite_the_published_results():
    with pytest.raises(SystemExit):
        main(["--quick"])
