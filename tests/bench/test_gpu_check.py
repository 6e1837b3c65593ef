"""bench/gpu_check.py on a CPU machine: one clear line, exit 0, nothing written; the agreement check can fail."""

from __future__ import annotations

import pytest

from bench import gpu_check


def test_without_cuda_it_says_so_and_writes_nothing(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out-dir", str(tmp_path)]) == {"cuda": False}
    assert capsys.readouterr().out.strip() == gpu_check.NO_CUDA
    assert not any(tmp_path.iterdir())


def test_a_cpu_rehearsal_never_writes_into_the_published_results():
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu"])
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--out-dir", str(gpu_check.OUT_DIR)])


def test_a_gpu_result_outside_the_tolerance_fails_the_verdict():
    close = gpu_check.agree({"forget_accuracy": 0.0, "retained_test_accuracy": 0.91},
                            {"forget_accuracy": 0.01, "retained_test_accuracy": 0.90})
    far = gpu_check.agree({"forget_accuracy": 0.0, "retained_test_accuracy": 0.91},
                          {"forget_accuracy": 0.30, "retained_test_accuracy": 0.91})
    assert all(m["ok"] for m in close.values())
    assert not far["forget_accuracy"]["ok"] and far["retained_test_accuracy"]["ok"]
    row = {"cpu_seconds": 1.0, "gpu_seconds": 0.1, "speedup_vs_gpu_retrain": 10.0}
    payload = {"device": "cuda", "class": {"neuron_perturbation": {**row, "agreement": far}},
               "gan": {"cascaded_gan": {**row, "agreement": close}},
               "batch": {"agree": True, "used_cuda": True}}
    v = gpu_check.verdicts(payload)
    assert v["neuron_perturbation: CUDA agrees with CPU"] is False and v["cascaded_gan: CUDA agrees with CPU"] is True


def test_the_gan_part_runs_on_the_cpu(tmp_path, monkeypatch):
    # the GPU check runs only where a GPU is lent: its GAN part must not break unseen when the bench changes
    from bench import references as refs

    monkeypatch.setattr(refs, "CACHE", tmp_path / "cache")
    out = gpu_check.gan_protocol("cpu")
    assert out["cascaded_gan"]["cpu_seconds"] > 0 and out["gan_retrain"]["gpu_seconds"] > 0
    assert all(m["ok"] for m in out["cascaded_gan"]["agreement"].values())  # CPU against CPU agrees
