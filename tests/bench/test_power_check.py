"""`python -m bench power_check --quick` runs end to end (digits, tiny CNN, temp cache) and records,
per batch, the champion's own gate metrics, the power verdict and its cost."""

import copy
import json

import torch

from bench import power_check
from bench import references as refs
from bench.common import weights_digest
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
    md = (tmp_path / "out" / "power_check.md").read_text()
    assert "| subjects | samples | champion z |" in md
    # the report names the weights it measured: the same cached champion gives the same digest
    assert len(stored["champion_sha256"]) == 16 and f"`{stored['champion_sha256']}`" in md
    champion, _ = refs.base_model(payload["dataset"], power_check.load_params()["train"]["seed"])
    assert weights_digest(champion) == stored["champion_sha256"]


def test_the_weights_digest_changes_with_any_weight(tiny_model):
    model = copy.deepcopy(tiny_model)  # the fixture is shared by the session
    before = weights_digest(model)
    assert weights_digest(copy.deepcopy(model)) == before  # a function of the weights alone
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-6
    assert weights_digest(model) != before
