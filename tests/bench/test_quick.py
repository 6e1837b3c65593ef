"""`python -m bench class --quick` and `random10 --quick` run end to end (digits, tiny CNN, temp cache)."""

import json

import pytest

from bench import class_deletion as CLASS_BENCH
from bench import compare, random10
from bench import references as refs
from tests.conftest import TINY_SPEC

MINE = "finetune,neg_grad_plus,random_label,salun,scrub,ssd,logit_suppression"


@pytest.fixture()
def tiny_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(refs, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(refs, "spec_for", lambda store, arch="cnn": dict(TINY_SPEC))
    return tmp_path


def check_rows(payload, expect_skipped=()):
    (case,) = payload["cases"]
    rows = case["rows"]
    assert rows["retrain"]["avg_gap"] == 0.0 and rows["retrain"]["speedup"] == 1.0
    for name in payload["methods"]:
        if name in expect_skipped:
            assert "skipped" in rows[name], name
            continue
        r = rows[name]
        for key in ("forget_accuracy", "retain_accuracy", "test_accuracy", "mia_efficacy"):
            assert 0.0 <= r["metrics"][key] <= 1.0, (name, key)
        assert r["avg_gap"] >= 0 and r["seconds"] > 0 and r["speedup"] > 0 and r["cpu_speedup"] > 0, name
        assert isinstance(r["gates"]["passed"], bool)


def test_class_quick(tiny_cache, monkeypatch):
    out = tiny_cache / "out"
    payload = CLASS_BENCH.main(["--quick", "--methods", MINE, "--out-dir", str(out)])
    assert payload["classes"] == [3] and payload["seeds"] == [0]
    check_rows(payload)
    ref = payload["cases"][0]["rows"]["retrain"]["metrics"]
    assert ref["forget_accuracy"] <= 0.05 and {"feature_probe", "relearn_acc_10"} <= set(ref)
    saved = json.loads((out / "class.json").read_text())
    assert saved["protocol"] == "class" and saved["machine"]["commit"]
    md = (out / "class.md").read_text()
    assert "suppresses the logit only" in md and "What was run" in md and "Avg. Gap" in md

    # --merge: two runs (here the same run relabelled as another seed) → one report over both
    other = {**saved, "seeds": [1], "cases": [{**c, "case": "seed 1 class 3", "seed": 1} for c in saved["cases"]]}
    (tiny_cache / "other.json").write_text(json.dumps(other))
    merged = CLASS_BENCH.main(["--merge", str(out / "class.json"), str(tiny_cache / "other.json"),
                               "--out-dir", str(tiny_cache / "merged")])
    assert merged["seeds"] == [0, 1] and len(merged["cases"]) == 2
    assert merged["summary"]["salun"]["runs"] == 2
    assert "Merged from 2 runs" in (tiny_cache / "merged" / "class.md").read_text()
    # a run stopped early leaves the merge partial, unless the runs together cover every class of every seed
    (tiny_cache / "other.json").write_text(json.dumps({**other, "complete": False}))
    runs = [str(out / "class.json"), str(tiny_cache / "other.json")]
    assert not CLASS_BENCH.main(["--merge", *runs, "--out-dir", str(tiny_cache / "m2")])["complete"]
    assert "Partial results" in (tiny_cache / "m2" / "class.md").read_text()
    monkeypatch.setattr(CLASS_BENCH.R, "store", lambda name: type("OneClass", (), {"classes": ["3"]})())
    assert CLASS_BENCH.main(["--merge", *runs, "--out-dir", str(tiny_cache / "m3")])["complete"]
    with pytest.raises(SystemExit, match="overlap"):
        CLASS_BENCH.main(["--merge", str(out / "class.json"), str(out / "class.json"), "--out-dir", str(tiny_cache)])


def test_random10_quick(tiny_cache):
    out = tiny_cache / "out"
    variant = "random_label:repair_steps=7"
    payload = random10.main(["--quick", "--methods", MINE, "--variant", variant, "--out-dir", str(out)])
    check_rows(payload, expect_skipped={"logit_suppression"})
    case = payload["cases"][0]
    assert case["forget_size"] == 50 and case["retain_size"] == 450
    # the independent retrain (seed + 100) is scored like a method: its gap is the metric's noise floor
    twin = case["rows"][compare.TWIN]
    assert twin["avg_gap"] > 0 and isinstance(twin["gates"]["passed"], bool)
    assert twin["metrics"] != case["rows"]["retrain"]["metrics"]
    assert payload["summary"][compare.TWIN]["runs"] == 1
    # a variant runs beside its method with the one setting changed, under its own label
    assert payload["methods"][-1] == variant
    assert case["rows"][variant]["details"]["repair_steps"] == 7
    assert case["rows"]["random_label"]["details"]["repair_steps"] == 0
    md = (out / "random10.md").read_text()
    assert "target" in md.lower() and "What was run" in md and f"`{variant}`" in md
    assert f"`{compare.TWIN}`" in md and "noise floor" in md

    # the verdict compares the best fast method with the independent retrain seed by seed, and the
    # noise-floor target needs both a mean gap ≤ 0.6 and the twin's distance on half of the seeds
    def verdict(gaps: list[tuple[float, float]]) -> str:
        seeds = []
        for seed, (gap, twin_gap) in enumerate(gaps):
            rows = {name: {**row, "cpu_speedup": 1.0} if "metrics" in row else row
                    for name, row in case["rows"].items()}
            rows[variant] = {**case["rows"][variant], "avg_gap": gap, "cpu_speedup": 50.0}  # the only fast method
            rows[compare.TWIN] = {**twin, "avg_gap": twin_gap}
            seeds.append({**case, "seed": seed, "rows": rows})
        names = [*compare.reference_names(seeds), *payload["methods"]]
        synthetic = {**payload, "cases": seeds, "summary": compare.summarize(seeds, names, random10.KEYS)}
        return random10.markdown(synthetic).split("\n\n")[0]

    floor = "Noise-floor target (Avg. Gap ≤ 0.6 and as close as the twin on at least half of the seeds, at ≥ 10×)"
    assert "as close as that or closer on 1 of 2 seeds" in verdict([(0.8, 1.0), (1.2, 1.0)])
    assert f"{floor} **NOT met**" in verdict([(0.8, 1.0), (1.2, 1.0)])  # mean 1.0
    assert f"{floor} **met**" in verdict([(0.5, 0.6), (0.6, 0.5)])
    assert f"{floor} **NOT met**" in verdict([(0.5, 0.4), (0.6, 0.5)])  # low, but farther than a second retrain

    # --merge: runs on other seeds (here the same run relabelled as seed 1) → one report over both
    saved = json.loads((out / "random10.json").read_text())
    other = {**saved, "seeds": [1], "cases": [{**c, "case": "seed 1", "seed": 1} for c in saved["cases"]]}
    (tiny_cache / "other.json").write_text(json.dumps(other))
    merged = random10.main(["--merge", str(tiny_cache / "other.json"), str(out / "random10.json"),
                            "--out-dir", str(tiny_cache / "merged")])
    assert merged["seeds"] == [0, 1] and merged["summary"]["random_label"]["runs"] == 2
    assert merged["summary"][variant]["avg_gap"][1] == 0.0  # the same numbers twice: no spread
    assert "Merged from 2 runs" in (tiny_cache / "merged" / "random10.md").read_text()
    with pytest.raises(SystemExit, match="overlap"):
        random10.main(["--merge", str(out / "random10.json"), str(out / "random10.json"), "--out-dir", str(tiny_cache)])


def test_variants_and_seeds_flags():
    args = compare.parser("random10", "", classes=False).parse_args(["--first-seed", "10", "--seeds", "2"])
    assert compare.seeds_of(args) == [10, 11]
    with pytest.raises(ValueError, match="unknown method"):
        compare.with_variants(["finetune"], ["nope:lr=1"])
    with pytest.raises(SystemExit, match="not a classifier"):
        compare.with_variants(["finetune"], ["cascaded_gan:steps=1"])


def test_every_classifier_method_is_benchmarked_and_noop_never():
    names = compare.classifier_methods()
    assert "noop" not in names and "retrain" not in names
    assert {"neg_grad_plus", "random_label", "salun", "scrub", "ssd", "logit_suppression"} <= set(names)
    assert not {"cascaded_gan", "gan_retrain", "text_retrain", "lm_retrain"} & set(names)  # other model kinds


def test_confidence_diagnostic_quick(tiny_cache, capsys):
    from bench import confidence

    lines = confidence.main(["--quick", "--seed", "0", "--variant", "random_label:relabel=match,retain_loss=kl"])
    heads = [line for line in lines if not line.startswith("    ")]
    assert [h.split(":")[0] for h in heads] == ["original", "retrain", "random_label"]
    assert "Avg. Gap" in heads[0] and "Avg. Gap" not in heads[1] and "s CPU" in heads[2]
    assert all("errors shared" in h and "ρ" in h for h in (heads[0], heads[2]))
    assert "'relabelled'" in heads[2] and "'softened'" in heads[2]
    quantiles = [[float(v) for v in line.split(": ")[1].split()] for line in lines if line.startswith("    ")]
    assert len(quantiles) == 9 and all(q == sorted(q) and 0.0 <= q[0] <= q[-1] <= 1.0 for q in quantiles)
    assert capsys.readouterr().out.count("q0.05") == 9


def test_every_protocol_names_a_module_and_class_keeps_its_cli_name():
    from pathlib import Path

    from bench import BENCHES

    here = Path(CLASS_BENCH.__file__).parent
    assert all((here / f"{module}.py").is_file() for module in BENCHES.values())
    assert BENCHES["class"] == CLASS_BENCH.__name__.rsplit(".", 1)[1] and CLASS_BENCH.NAME == "class"
