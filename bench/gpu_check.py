"""GPU check: the quick protocols and one deletion batch on CUDA, checked against the CPU.

    python -m bench gpu_check         # (make gpu-check) on a CUDA machine: a few minutes → docs/benchmarks/gpu.md
    python -m bench gpu_check         # on a CPU-only machine: one "no CUDA device" line, exit 0, nothing written

What runs on both devices, from the same starting weights:
- `class` quick protocol (digits, class 3, seed 0): `neuron_perturbation`, `concept_poisoning`, `retrain`;
- `cascaded_gan` quick protocol (MNIST-5k, 400 images, narrow GAN): class mode on digit 0, and
  `gan_retrain` (the exact method) on the GPU for the speed-up;
- one deletion batch (the tiny digits workspace of `bench overhead --quick`, a class request) with
  `batch.device: auto`, which must pick CUDA and end as the CPU batch does.

The methods' results on CUDA must agree with the CPU's within `TOLERANCES` (floating-point sums
run in another order on a GPU, so training steps drift apart; a zero-shot edit should agree
almost exactly). Speed-ups are each method's GPU seconds against retraining on the same GPU.
`--device cpu` rehearses the whole check on the CPU (CPU against CPU) into `--out-dir` only.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import OUT_DIR, md_table, write_results

NAME = "gpu"
CLASS_METHODS = ("neuron_perturbation", "concept_poisoning", "retrain")
# |cuda − cpu| allowed per metric (accuracies and shares are fractions)
TOLERANCES = {"forget_accuracy": 0.05, "forget_class_test_accuracy": 0.05, "retained_test_accuracy": 0.03,
              "forget_class_share": 0.10}
NO_CUDA = "no CUDA device: gpu_check needs one (torch.cuda.is_available() is False); nothing run, nothing written"


def agree(cpu: dict[str, float], gpu: dict[str, float]) -> dict[str, Any]:
    """Per metric the two values, their difference and whether it is within its tolerance."""
    out = {}
    for key, tol in TOLERANCES.items():
        if key in cpu and key in gpu:
            diff = abs(gpu[key] - cpu[key])
            out[key] = {"cpu": round(cpu[key], 4), "gpu": round(gpu[key], 4), "diff": round(diff, 4),
                        "tolerance": tol, "ok": bool(diff <= tol)}
    return out


def class_protocol(device: str) -> dict[str, Any]:
    from bench import compare
    from bench.class_deletion import cases_for
    from flows.params import load_params
    from unlearn_ops.methods import run_method
    from unlearn_ops.verify import utility

    case = next(cases_for("digits", [0], [3]))
    unlearn = load_params()["unlearn"]
    schedule = {"epochs": case.schedule.epochs, "lr": case.schedule.lr, "batch_size": case.schedule.batch_size}
    rows = {}
    for name in CLASS_METHODS:
        overrides = schedule if name == "retrain" else compare.QUICK_OVERRIDES.get(name, {})
        params = compare.method_params(name, unlearn, case.seed, overrides)
        runs = {}
        for dev in ("cpu", device):
            result = run_method(name, case.original, case.splits, params, device=dev)
            runs[dev] = {"seconds": result.seconds,
                         "metrics": utility(result.model.cpu().eval(), case.splits, case.forget_classes)}
        rows[name] = {"cpu_seconds": round(runs["cpu"]["seconds"], 3), "gpu_seconds": round(runs[device]["seconds"], 3),
                      "agreement": agree(runs["cpu"]["metrics"], runs[device]["metrics"])}
    retrain = rows["retrain"]["gpu_seconds"]
    for row in rows.values():
        row["speedup_vs_gpu_retrain"] = round(retrain / max(row["gpu_seconds"], 1e-9), 1)
    return rows


def gan_protocol(device: str) -> dict[str, Any]:
    from bench.cascaded_gan import QUICK_REF, build_settings, reference_classifier, scenario_splits, trained_gan
    from bench.references import store
    from unlearn_ops.data.splits import Splits
    from unlearn_ops.methods import run_method
    from unlearn_ops.verify.gan import gan_metrics

    s = store("mnist5k")
    full = s.splits()
    full = Splits(forget=full.forget, retain=full.retain.sample(400, 0), test=full.test.sample(200, 0),
                  nonmember=full.nonmember.sample(200, 0), num_classes=full.num_classes)
    arch, cfg, method = build_settings(quick=True)
    reference, _ = reference_classifier(s, True, full.retain, "mnist5k")
    original, _, _ = trained_gan(arch, cfg, full.retain, 0, reference, QUICK_REF)
    splits = scenario_splits(full, full.retain.y.numpy() == 0)
    params = {**method, "mode": "class", "substitution": "retain_sample", "seed": 0}
    runs = {}
    for dev in ("cpu", device):
        result = run_method("cascaded_gan", original, splits, params, device=dev)
        runs[dev] = {"seconds": result.seconds,
                     "metrics": gan_metrics(result.model.cpu().eval(), splits, forget_classes=[0], n=300, seed=0)}
    retrain = run_method("gan_retrain", original, splits,
                         {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr_g": cfg.lr_g, "lr_d": cfg.lr_d,
                          "reference_epochs": 2, "reference_lr": 3e-3}, device=device)
    return {"cascaded_gan": {"cpu_seconds": round(runs["cpu"]["seconds"], 3),
                             "gpu_seconds": round(runs[device]["seconds"], 3),
                             "speedup_vs_gpu_retrain": round(retrain.seconds / max(runs[device]["seconds"], 1e-9), 1),
                             "agreement": agree(runs["cpu"]["metrics"], runs[device]["metrics"])},
            "gan_retrain": {"gpu_seconds": round(retrain.seconds, 3)}}


def deletion_batch(device: str) -> dict[str, Any]:
    """The class request of `bench overhead --quick` through the flow with batch.device `auto`
    (`device` when rehearsing on the CPU), beside the same batch with `cpu`."""
    import os

    import yaml

    from bench.overhead import requests_for, workspace
    from flows.server import prefect_server

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    out: dict[str, Any] = {}
    try:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        os.environ["PREFECT_HOME"] = str(work / "prefect")
        with prefect_server(log_file=work / "server.log", echo=lambda _: None):
            from flows.deletion_batch import deletion_batch as flow

            for label, setting in (("cpu", "cpu"), ("auto", "auto" if device == "cuda" else device)):
                root, model, info = workspace(work / label, quick=True)
                params = yaml.safe_load((root / "params.yaml").read_text())
                params["batch"]["device"] = setting
                (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                result = flow(requests=[requests_for(root, model, info["dataset"])["class"]], root=str(root))
                models = result.get("models") or [{}]
                final = [a for a in models[0].get("attempts", []) if a.get("status") != "not_applicable"]
                out[label] = {"seconds": round(time.perf_counter() - start, 2),
                              "outcome": (result.get("certificate") or {}).get("outcome"),
                              "methods": [a.get("method") for a in final],
                              "cuda_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)
                              if torch.cuda.is_available() else 0.0}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["agree"] = out["cpu"]["outcome"] == out["auto"]["outcome"] and out["cpu"]["methods"] == out["auto"]["methods"]
    out["used_cuda"] = out["auto"]["cuda_memory_mb"] > 0
    return out


def verdicts(payload: dict[str, Any]) -> dict[str, bool]:
    v = {f"{name}: CUDA agrees with CPU": all(m["ok"] for m in row["agreement"].values())
         for name, row in {**payload["class"], "cascaded_gan": payload["gan"]["cascaded_gan"]}.items()}
    v["deletion batch (device auto): same outcome and methods as on CPU"] = payload["batch"]["agree"]
    if payload["device"] == "cuda":
        v["deletion batch (device auto) ran on CUDA"] = payload["batch"]["used_cuda"]
    return v


def markdown(p: dict[str, Any]) -> str:
    rows = []
    for name, row in {**p["class"], "cascaded_gan": p["gan"]["cascaded_gan"]}.items():
        diffs = ", ".join(f"{k} {m['cpu']:.3f}→{m['gpu']:.3f}" for k, m in row["agreement"].items())
        rows.append([f"`{name}`", f"{row['cpu_seconds']:.2f}", f"{row['gpu_seconds']:.2f}",
                     f"{row['speedup_vs_gpu_retrain']:.1f}×", diffs,
                     "yes" if all(m["ok"] for m in row["agreement"].values()) else "**no**"])
    b = p["batch"]
    tol = ", ".join(f"{k} ±{v}" for k, v in TOLERANCES.items())
    return "\n".join([
        f"Device: **{p['device_name']}** (CUDA {p['cuda']}). Same starting weights on both devices; quick "
        "protocols of `class` (digits, class 3, seed 0) and `cascaded_gan` (MNIST-5k, 400 images, class 0).", "",
        md_table(["method", "CPU s", "GPU s", "speed-up vs retrain (same GPU)", "CPU → GPU", "within tolerance"],
                 rows), "",
        f"Tolerances (|GPU − CPU|): {tol}. `gan_retrain` on the GPU: {p['gan']['gan_retrain']['gpu_seconds']:.2f} s.",
        "",
        f"Deletion batch (tiny digits workspace, class request): `batch.device: cpu` {b['cpu']['seconds']:.1f} s → "
        f"{b['cpu']['outcome']} via {' → '.join(b['cpu']['methods'])}; `auto` {b['auto']['seconds']:.1f} s → "
        f"{b['auto']['outcome']} via {' → '.join(b['auto']['methods'])}, peak CUDA memory "
        f"{b['auto']['cuda_memory_mb']:.0f} MB.", "",
        "## Verdicts", "", *(f"- {k}: **{'met' if ok else 'not met'}**" for k, ok in p["verdicts"].items()),
    ])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cpu: rehearse the whole check CPU against CPU (needs --out-dir)")
    ap.add_argument("--out-dir", type=Path, default=None, help="default docs/benchmarks (CUDA runs only)")
    a = ap.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA)
        return {"cuda": False}
    if a.device == "cpu" and (a.out_dir is None or Path(a.out_dir).resolve() == OUT_DIR.resolve()):
        ap.error("a CPU rehearsal is not a GPU result: give --out-dir outside docs/benchmarks")
    payload: dict[str, Any] = {"device": a.device, "cuda": torch.version.cuda,
                               "device_name": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu (rehearsal)",
                               "tolerances": TOLERANCES}
    payload["class"] = class_protocol(a.device)
    payload["gan"] = gan_protocol(a.device)
    payload["batch"] = deletion_batch(a.device)
    payload["verdicts"] = verdicts(payload)
    out = write_results(NAME, payload, markdown(payload), a.out_dir)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return payload


if __name__ == "__main__":
    main()
