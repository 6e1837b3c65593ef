"""`python -m bench cascaded_gan --quick` runs the whole protocol end to end (numbers not checked: smoke test)."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench import BENCHES
from bench.cascaded_gan import DATASETS, build_settings, gate_proposal, main, noise_floor, per_run, summarize


def test_listed():
    assert "cascaded_gan" in BENCHES


def test_quick_protocol_writes_results(tmp_path, monkeypatch):
    from bench import references as refs

    monkeypatch.setattr(refs, "CACHE", tmp_path / "cache")  # its tiny GANs stay out of var/bench-cache
    payload = main(["--quick", "--twin", "--out-dir", str(tmp_path)])
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
    # --twin: the class deletion's second exact retrain is scored like the others; an item deletion has none
    assert "forget_class_share" in klass["twin"] and klass["twin"]["fid"] != klass["retrained"]["fid"]
    assert not any("twin" in r for r in data["rows"] if r["mode"] == "item")
    md = (tmp_path / "cascaded_gan.md").read_text()
    assert "not Inception-FID" in md and "## Targets" in md and "## Production gates" in md
    assert (tmp_path / "img" / "cascaded_gan_original.png").is_file()
    assert set(payload["verdicts"]) == {"class-3 share <= retrained + 1 pt", "class-3 speed-up >= 100x (wall clock)",
                                        "class-3 speed-up >= 100x (CPU time)",
                                        "class-3 FID change <= retrained's + 10 points"}
    assert "Share target met on" in md and "## Noise floor" in md


def test_quick_refuses_to_overwrite_the_published_results():
    with pytest.raises(SystemExit):
        main(["--quick"])


def row(mode: str, d_mia: tuple[float, float, float], fid: tuple[float, float, float], share=None) -> dict:
    models = {}
    for i, m in enumerate(("original", "unlearned", "retrained")):
        models[m] = {"d_mia_auc": d_mia[i], "fid": fid[i]}
        if share is not None:
            models[m]["forget_class_share"] = share[i]
    return {"mode": mode, **models}


def test_gate_proposal_lets_every_retrained_gan_pass():
    rows = [row("item", (0.60, 0.52, 0.50), (100, 105, 120)), row("item", (0.58, 0.49, 0.53), (100, 98, 90)),
            row("class", (0.9, 0.4, 0.5), (200, 150, 140), share=(0.10, 0.03, 0.004))]
    g = gate_proposal(rows)
    assert g["items.d_mia_auc"]["max"] == pytest.approx(0.58)          # 0.53 + 0.05
    assert g["items.fid_change"]["max"] == pytest.approx(0.25)         # +20 % + 0.05
    assert g["class.forget_class_share"]["max"] == pytest.approx(0.02)  # 0.004 + 0.01, rounded up
    assert g["class.fid_change"]["retrained"] == [pytest.approx(-0.3)]
    for gate in g.values():
        assert all(v <= gate["max"] for v in gate["retrained"])


def class_row(seed: int, fid: tuple[float, float, float], share: tuple[float, float, float]) -> dict:
    r = row("class", (0.5, 0.5, 0.5), fid, share)
    return {**r, "seed": seed, "scenario": "class-0", "forget_size": 100, "speedup": 200.0, "cpu_speedup": 150.0,
            "unlearn_seconds": 1.0, "unlearn_cpu_seconds": 1.0, "retrain_seconds": 200.0, "retrain_cpu_seconds": 150.0,
            "details": {"iterations": 10}}


@pytest.mark.parametrize("unlearned_fid, passes", [(119.0, True), (121.0, False)])
def test_class_fid_target_is_relative_to_the_retrained_gans_change(unlearned_fid, passes):
    # retrained FID change +10 %: the unlearned GAN may be at most +20 %, i.e. FID 120 from 100
    _, verdicts = summarize([class_row(0, (100.0, unlearned_fid, 110.0), (0.10, 0.02, 0.02))])
    assert verdicts["class-0 FID change <= retrained's + 10 points"] is passes


@pytest.mark.parametrize("unlearned_share, passes", [(0.029, True), (0.031, False)])
def test_class_share_target_allows_one_point_over_retraining(unlearned_share, passes):
    _, verdicts = summarize([class_row(0, (100.0, 100.0, 100.0), (0.10, unlearned_share, 0.02))])
    assert verdicts["class-0 share <= retrained + 1 pt"] is passes


@pytest.mark.parametrize("twin_fid, twin_share, meets", [(119.0, 0.029, {"share": True, "fid": True}),
                                                         (121.0, 0.031, {"share": False, "fid": False})])
def test_the_twin_is_held_to_the_unlearned_gans_targets(twin_fid, twin_share, meets):
    # retrained: FID change +10 %, share 2 %; the twin may be at most +20 % (FID 120) and 3 %
    r = class_row(0, (100.0, 100.0, 110.0), (0.10, 0.02, 0.02))
    r["twin"] = {"d_mia_auc": 0.5, "fid": twin_fid, "forget_class_share": twin_share}
    summary, verdicts = summarize([r])
    assert summary[0]["twin_meets"] == meets
    assert verdicts["class-0 FID change <= retrained's + 10 points"]  # the unlearned GAN's verdicts are its own
    section = "\n".join(noise_floor(summary))
    assert f"share target on {int(meets['share'])} of 1 classes and the FID target on {int(meets['fid'])} of 1" in section


def test_per_run_counts_each_seed_against_its_own_retrained_gan():
    # seed 0 meets both targets; seed 1 misses FID (+25 % against +10 % + 10) though the means would pass
    rows = [class_row(0, (100.0, 100.0, 110.0), (0.10, 0.02, 0.02)), class_row(1, (100.0, 125.0, 110.0), (0.10, 0.02, 0.02))]
    assert summarize(rows)[1]["class-0 FID change <= retrained's + 10 points"]  # mean +12.5 % <= +20 %
    assert per_run(rows) == ["Run by run (not on the means): the unlearned GAN meets the share target in 2, the FID "
                             "target in 1 and both in 1 of 2 runs.\n"]
    for r, twin_share in zip(rows, (0.05, 0.02), strict=True):  # the twin misses the share on seed 0
        r["twin"] = {"d_mia_auc": 0.5, "fid": 100.0, "forget_class_share": twin_share}
    assert per_run(rows)[0].endswith("; a second exact retrain meets the share target in 1, the FID target in 2 and "
                                     "both in 1 of 2 runs.\n")
    other_class = {**rows[1], "scenario": "class-1"}
    assert per_run([rows[0], other_class]) == []  # one seed: the verdicts on the means are the runs


def test_no_noise_floor_section_without_a_twin():
    summary, _ = summarize([class_row(0, (100.0, 100.0, 110.0), (0.10, 0.02, 0.02))])
    assert "twin_meets" not in summary[0] and noise_floor(summary) == []


def test_fmnist_profile_changes_only_what_it_names():
    arch, cfg, method = build_settings(False, DATASETS["mnist5k"])
    f_arch, f_cfg, f_method = build_settings(False, DATASETS["fmnist"])
    assert f_arch == arch and f_cfg.epochs == DATASETS["fmnist"].gan_epochs != cfg.epochs
    assert {k for k in method if f_method[k] != method[k]} == set(DATASETS["fmnist"].method)
    assert DATASETS["fmnist"].items == () and DATASETS["fmnist"].result != DATASETS["mnist5k"].result


def test_trained_gans_are_cached_with_their_measured_seconds(tmp_path, monkeypatch):
    from bench import references as refs
    from unlearn_ops.data.splits import Part
    from unlearn_ops.models.gan import GanTrainConfig

    monkeypatch.setattr(refs, "CACHE", tmp_path / "cache")
    x = torch.rand(32, 1, 28, 28)
    data = Part(ids=tuple(f"s/{i}" for i in range(32)), x=x, y=torch.zeros(32, dtype=torch.long))
    arch = {"z_dim": 4, "g_width": 2, "d_width": 2}
    cfg = GanTrainConfig(epochs=1, batch_size=16, seed=3, device="cpu")
    first, timing = refs.trained_gan("t", data, arch, cfg)
    again, cached = refs.trained_gan("t", data, arch, cfg)
    assert cached == timing and timing["seconds"] > 0 and timing["cpu_seconds"] > 0
    a, b = first.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other, _ = refs.trained_gan("t", data, arch, replace(cfg, seed=4))  # another seed is another model
    assert not torch.equal(next(other.generator.parameters()), next(first.generator.parameters()))
    assert len(list((tmp_path / "cache" / "gans").iterdir())) == 2


def test_a_variant_needs_its_own_label():
    with pytest.raises(SystemExit):
        main(["--dataset", "fmnist", "--variant", "cascaded_gan:preserve_weight=10"])


def test_merge_keeps_only_the_classes_asked_for(tmp_path):
    def run_file(name: str, classes: list[int]) -> Path:
        rows = [{**class_row(0, (100.0, 100.0, 110.0), (0.10, 0.02, 0.02)), "scenario": f"class-{c}",
                 "forget_classes": [c]} for c in classes]
        for r in rows:
            for model in ("original", "unlearned", "retrained"):
                r[model].update(d_forget_mean=0.5, d_generated_mean=0.5)
        payload = {"dataset": "fmnist", "gan": {}, "schedule": {}, "method": {}, "fid_kind": "f", "eval_samples": 10,
                   "downstream": {}, "threads": 1, "quick": False, "reference_test_accuracy": 0.9, "rows": rows,
                   "seconds": 1.0, "argv": [], "machine": {}}
        (tmp_path / name).write_text(json.dumps(payload))
        return tmp_path / name

    files = [run_file("a.json", [0, 1, 2]), run_file("b.json", [3, 8, 9])]
    merged = main(["--merge", *map(str, files), "--classes", "0", "3", "8", "--out-dir", str(tmp_path / "out")])
    assert [r["scenario"] for r in merged["rows"]] == ["class-0", "class-3", "class-8"]
    assert {s["scenario"] for s in merged["summary"]} == {"class-0", "class-3", "class-8"}
    assert len(main(["--merge", *map(str, files), "--out-dir", str(tmp_path / "all")])["rows"]) == 6
