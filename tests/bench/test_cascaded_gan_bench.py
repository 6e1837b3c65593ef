"""`python -m bench cascaded_gan --quick` runs the whole protocol end to end (numbers not checked: smoke test)."""

import json

import pytest

from bench import BENCHES
from bench.cascaded_gan import main


def test_listed():
    assert "cascaded_gan" in BENCHES


def test_quick_protocol_writes_results(tmp_path):
    payload = main(["--quick", "--out-dir", str(tmp_path)])
    data = json.loads((tmp_path / "cascaded_gan.json").read_text())
    assert data["quick"] is True and data["fid_kind"].startswith("classifier-feature FID")
    scenarios = {r["scenario"] for r in data["rows"]}
    assert scenarios == {"item-16", "class-3", "class-3/generated_filtered"}
    for row in data["rows"]:
        assert row["unlearn_seconds"] > 0 and row["retrain_seconds"] > 0
        assert row["speedup"] == pytest.approx(row["retrain_seconds"] / row["unlearn_seconds"])
        for model in ("original", "unlearned", "retrained"):
            assert 0.0 <= row[model]["d_mia_auc"] <= 1.0 and row[model]["fid"] >= 0
    klass = next(r for r in data["rows"] if r["scenario"] == "class-3")
    assert "forget_class_share" in klass["retrained"]
    md = (tmp_path / "cascaded_gan.md").read_text()
    assert "not Inception-FID" in md and "## Targets" in md
    assert (tmp_path / "img" / "cascaded_gan_original.png").is_file()
    assert set(payload["verdicts"]) == {"class-3 share <= retrained + 1 pt", "class-3 speed-up >= 100x (wall clock)",
                                        "class-3 speed-up >= 100x (CPU time)"}


def test_quick_refuses_to_overwrite_the_published_results():
    with pytest.raises(SystemExit):
        main(["--quick"])
