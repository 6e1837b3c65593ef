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
    check_merge(data, tmp_path)


def check_merge(data: dict, tmp_path) -> None:
    """--merge: runs split by seed (here: the quick run cut into an image run and a text run)
    give one report with every image row and the text section."""
    images = {**data, "text": None}
    text = {**data, "rows": [], "ablation_rows": [], "complete": False, "machine": {**data["machine"], "commit": "abc1234"}}
    paths = []
    for name, part in (("images", images), ("text", text)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(part))
    merged_dir = tmp_path / "merged"
    merged = main(["--merge", *map(str, paths), "--out-dir", str(merged_dir)])
    assert merged["rows"] == data["rows"] and merged["ablation_rows"] == data["ablation_rows"]
    assert merged["text"] == data["text"] and merged["complete"] is True  # a text-only run's images do not count
    md = (merged_dir / "concept_poisoning.md").read_text()
    assert "Merged from 2 runs" in md and "commit abc1234" in md and "## Text" in md and "Partial" not in md
    with pytest.raises(SystemExit, match="differ"):
        other = tmp_path / "other.json"
        other.write_text(json.dumps({**data, "params": {**data["params"], "epochs": 99}}))
        main(["--merge", str(paths[0]), str(other), "--out-dir", str(merged_dir)])


def test_quick_refuses_to_overwrite_the_published_results():
    with pytest.raises(SystemExit):
        main(["--quick"])
