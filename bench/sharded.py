"""Benchmark `sharded`: what a data subject's deletion costs on a sharded classifier (SISA) and
what the ensemble costs in accuracy, against retraining the monolithic model, in one run.

    python -m bench sharded [--configs warm-S8-R4-E1,scratch-S8-R1-E3] [--builds-only] [--quick --out-dir DIR]

One process, one torch thread; costs are CPU seconds (`time.process_time`) of this process.
The monolithic reference is the build's CNN and schedule (params.yaml `train`: 3 epochs, Adam
1e-3, batch 128, seed 0) retrained from scratch without the 100 subjects; its cost for the other
deletions is that measured CPU time scaled by their number of training steps (the same loop on
1-3 % fewer samples). A configuration `{scratch|warm}-S{shards}-R{slices}-E{member epochs}` is
built by `unlearn_ops.sharding.train_ensemble` on the whole train pool and then forgets, each from
the built model, 1, 10 and 100 random data subjects (nested draws, seed 0) and, for the
configurations in `--class-configs`, one whole class, with `sharded_retrain` (`run_method`).

`warm`: SISA's transfer variant. A shared pool of 10 % of the data subjects (chosen by a stable
hash, `ShardMap.assign(pool_fraction=...)`) trains a model of the member's architecture for
`pool_epochs`; every member starts from its weights. Here the pool stands for data that requests
are not expected to target — public or irrevocably consented data — carved from Fashion-MNIST's
train split, because this project has no such data of its own. The random subjects are drawn
outside the pool. A request that does target the pool is still honoured exactly, by a full rebuild
(warm start + every member: the build's own computation, whose cost is the build column).

Measured per configuration: ensemble test accuracy (and per class) against the monolithic model;
CPU of the build and of each deletion, and its ratio to the monolithic retrain; the loss-MIA AUC
of the 100 forgotten subjects against same-class non-members, before and after the deletion (0.5 =
indistinguishable; the monolithic retrain's value is the reference); inference CPU per 1 000 images.
Targets (issue 21): one configuration whose one-subject deletion is ≥ 5x and 100-subject
deletion ≥ 1.5x cheaper than the monolithic retrain, with test accuracy within 1.5 points.

`--quick` runs digits with tiny settings: a smoke test of the protocol (seconds); its numbers mean
nothing and are written only with --out-dir.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import references as refs
from bench.common import load_note, load_record, machine, md_table, measure, write_results
from bench.sharded_report import markdown, verdicts
from unlearn_ops.data.splits import Part, Splits
from unlearn_ops.methods import run_method
from unlearn_ops.models import build_model
from unlearn_ops.models.sharded import POOL, ShardMap
from unlearn_ops.sharding import MemberSchedule, train_ensemble, warm_start
from unlearn_ops.training import TrainConfig, fit, per_class_accuracy, predict_logits, reinitialize
from unlearn_ops.utils import atomic_write_json
from unlearn_ops.verify.mia import matched_nonmembers, simple_mia

NAME = "sharded"
CONFIG = re.compile(r"^(scratch|warm)-S(\d+)-R(\d+)-E([\d.]+)$")


@dataclass(frozen=True)
class Setup:
    dataset: str
    mono: TrainConfig                # the monolithic model's (the build's) schedule
    pool_fraction: float             # share of the subjects in the shared pool of `warm` configurations
    pool_epochs: float               # passes of the warm start over the pool
    subjects: tuple[int, ...]        # deletion sizes (nested random draws)
    configs: tuple[str, ...]
    class_configs: tuple[str, ...]   # configurations whose class deletion is run
    light_configs: tuple[str, ...]   # configurations run with the one-subject deletion only (curve points)
    forget_class: int
    mia_cap: int                     # forgotten samples and non-members behind each MIA (at most)


# A reduced grid, to fit ~40 CPU minutes on a shared 2-core machine (docs/benchmarks/sharded.md says
# what was left out): member schedule E = 1.5 from the pilot (docs/methods/sharded_retrain.md).
FULL = Setup("fmnist", TrainConfig(epochs=3, lr=1e-3, batch_size=128, seed=0, device="cpu"), 0.1, 10,
             (1, 10, 100),
             ("warm-S4-R4-E1.5", "warm-S4-R1-E1.5", "warm-S8-R4-E1.5", "warm-S16-R4-E1.5", "scratch-S8-R1-E3"),
             ("warm-S4-R4-E1.5",), ("scratch-S8-R1-E3",), 3, 1000)
QUICK = Setup("digits", TrainConfig(epochs=15, lr=3e-3, batch_size=64, seed=0, device="cpu"), 0.2, 10,
              (1, 10), ("warm-S2-R2-E4", "scratch-S2-R1-E8"), ("warm-S2-R2-E4",), (), 3, 200)


def parse_config(label: str) -> tuple[bool, int, int, float]:
    match = CONFIG.match(label)
    if not match:
        raise SystemExit(f"bad configuration {label!r}: use e.g. warm-S8-R4-E1 or scratch-S8-R1-E3")
    return match.group(1) == "warm", int(match.group(2)), int(match.group(3)), float(match.group(4))


@dataclass(frozen=True)
class Data:
    train: Part
    test: Part
    nonmember: Part
    subjects: list[str]                 # per train sample
    num_classes: int
    forget: dict[str, tuple[str, ...]]  # deletion name → IDs

    def splits(self, name: str) -> Splits:
        drop = set(self.forget[name])
        mask = np.array([i in drop for i in self.train.ids])
        return Splits(self.train.where(mask), self.train.where(~mask), self.test, self.nonmember, self.num_classes)


def load_data(setup: Setup) -> tuple[Data, dict]:
    s = refs.store(setup.dataset)
    active = s.active_ids()
    subjects = s.index.loc[active, "subject_id"].tolist()
    pooled = ShardMap.assign(active, subjects, 1, 1, setup.pool_fraction)
    outside = sorted({sub for sub, shard in zip(subjects, pooled.shard.tolist(), strict=True) if shard != POOL})
    drawn = [outside[k] for k in np.random.default_rng(0).permutation(len(outside))[:max(setup.subjects)]]
    forget: dict[str, tuple[str, ...]] = {}
    for k in setup.subjects:
        chosen = set(drawn[:k])
        forget[f"{k} subjects"] = tuple(i for i, sub in zip(active, subjects, strict=True) if sub in chosen)
    aset = set(active)
    forget["class"] = tuple(i for i in s.class_ids(setup.forget_class) if i in aset)
    data = Data(s.part(active), s.part(s.pool_ids("test")), s.part(s.pool_ids("nonmember")), subjects,
                len(s.classes), forget)
    return data, {"classes": s.classes, "spec": refs.spec_for(s)}


def mia_auc(model: torch.nn.Module, data: Data, name: str, cap: int) -> float:
    forget = data.splits(name).forget.sample(cap, 0)
    return simple_mia(model, forget, matched_nonmembers(forget, data.nonmember).sample(cap, 0))["mia_loss_auc"]


def evaluate(model: torch.nn.Module, data: Data) -> dict[str, Any]:
    m = measure(lambda: predict_logits(model, data.test.x))
    acc = float((m.result.argmax(1) == data.test.y).float().mean())
    return {"test_accuracy": acc, "per_class": per_class_accuracy(model, data.test, data.num_classes),
            "inference_cpu_ms_per_1000": 1000 * m.cpu_seconds / len(data.test) * 1000}


def steps(n: int, cfg: TrainConfig) -> int:
    return math.ceil(cfg.epochs * math.ceil(n / cfg.batch_size))


def monolithic(setup: Setup, data: Data, spec: dict) -> dict[str, Any]:
    """Retrain the monolithic model without the largest subject draw; the other costs scale by steps."""
    largest = f"{max(setup.subjects)} subjects"
    splits = data.splits(largest)
    model = reinitialize(build_model(spec), setup.mono.seed)
    m = measure(lambda: fit(model, splits.retain, setup.mono))
    print(f"monolithic retrain ({largest}): {m.cpu_seconds:.0f} CPU s", flush=True)
    base = steps(len(splits.retain), setup.mono)
    costs = {name: m.cpu_seconds * steps(len(data.train) - len(ids), setup.mono) / base
             for name, ids in data.forget.items()}
    return {**evaluate(model, data), "retrain_cpu_s": m.cpu_seconds, "measured_for": largest, "deletion_cpu_s": costs,
            "mia_after": mia_auc(model, data, largest, setup.mia_cap)}


def schedule_of(setup: Setup, epochs: float, warm: bool) -> MemberSchedule:
    base = setup.mono
    return MemberSchedule(epochs, base.lr, base.batch_size, base.seed, device="cpu",
                          pool_epochs=setup.pool_epochs if warm else 0.0)


def shared_warm_start(setup: Setup, data: Data, spec: dict) -> dict[str, Any]:
    """The warm start every `warm` configuration shares: the pool and its schedule do not depend
    on the number of shards or slices, so it is trained (and its CPU measured) once."""
    shard_map = ShardMap.assign(list(data.train.ids), data.subjects, 1, 1, setup.pool_fraction)
    m = measure(lambda: warm_start(spec, data.train, shard_map, schedule_of(setup, 1, True)))
    model = build_model(spec)
    model.load_state_dict(m.result)
    print(f"shared warm start: {m.cpu_seconds:.0f} CPU s", flush=True)
    return {"init": m.result, "cpu_s": m.cpu_seconds, "samples": int((shard_map.shard == POOL).sum()),
            "test_accuracy": evaluate(model, data)["test_accuracy"]}


def sharded(setup: Setup, data: Data, spec: dict, label: str, deletions: list[str],
            pool: dict[str, Any] | None) -> dict[str, Any]:
    warm, shards, slices, epochs = parse_config(label)
    schedule = schedule_of(setup, epochs, warm)
    shard_map = ShardMap.assign(list(data.train.ids), data.subjects, shards, slices,
                                setup.pool_fraction if warm else 0.0)
    init = pool["init"] if warm and pool else None
    built = measure(lambda: train_ensemble(spec, data.train, shard_map, schedule, init=init))
    model = built.result
    largest = f"{max(setup.subjects)} subjects"
    row = {"config": label, "warm": warm, "shards": shards, "slices": slices, "member_epochs": epochs,
           "pool_samples": int((shard_map.shard == POOL).sum()), "build_cpu_s": built.cpu_seconds,
           **evaluate(model, data), "mia_before": mia_auc(model, data, largest, setup.mia_cap), "deletions": {}}
    print(f"{label}: built in {built.cpu_seconds:.0f} CPU s, test accuracy {row['test_accuracy']:.4f}", flush=True)
    params = {"epochs": epochs, "lr": schedule.lr, "batch_size": schedule.batch_size, "seed": schedule.seed,
              "pool_epochs": schedule.pool_epochs}
    for name in deletions:
        d = measure(lambda name=name: run_method("sharded_retrain", model, data.splits(name), params, device="cpu"))
        out = {"cpu_s": d.cpu_seconds, "samples": len(data.forget[name]),
               "retrained": d.result.details["retrained"]}
        if name == largest:
            out["mia_after"] = mia_auc(d.result.model, data, name, setup.mia_cap)
        if name == "class":
            out["forget_class_test_accuracy"] = evaluate(d.result.model, data)["per_class"][setup.forget_class]
        row["deletions"][name] = out
        print(f"  {name}: {d.cpu_seconds:.1f} CPU s, members {[r['member'] for r in out['retrained']]}", flush=True)
    return row


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog=f"python -m bench {NAME}", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--configs", default="", help="comma-separated configurations (default: the protocol's grid)")
    p.add_argument("--class-configs", default=None, help="configurations whose class deletion is run")
    p.add_argument("--builds-only", action="store_true", help="accuracy and build cost only (a pilot)")
    p.add_argument("--out-dir", default=None)
    args = p.parse_args(argv or [])
    setup = QUICK if args.quick else FULL
    configs = [c for c in args.configs.split(",") if c] or list(setup.configs)
    class_configs = setup.class_configs if args.class_configs is None else tuple(args.class_configs.split(","))
    for label in configs:
        parse_config(label)
    torch.set_num_threads(1)  # CPU seconds of one thread: comparable across configurations
    data, info = load_data(setup)
    subjects = [f"{k} subjects" for k in setup.subjects]
    mono = monolithic(setup, data, info["spec"])
    pool = shared_warm_start(setup, data, info["spec"]) if any(parse_config(c)[0] for c in configs) else None
    rows = []
    for label in configs:
        deletions = (subjects[:1] if label in setup.light_configs else subjects) + \
            (["class"] if label in class_configs else [])
        rows.append(sharded(setup, data, info["spec"], label, [] if args.builds_only else deletions, pool))
        atomic_write_json(refs.CACHE / f"{NAME}.partial.json", {"monolithic": mono, "configs": rows})  # a run cut short
    for row in rows:
        for name, d in row["deletions"].items():
            d["ratio"] = mono["deletion_cpu_s"][name] / d["cpu_s"]
    payload = {"quick": args.quick, "dataset": setup.dataset, "setup": {**asdict(setup), "mono": asdict(setup.mono)},
               "classes": info["classes"], "monolithic": mono, "configs": rows, "load": load_record(),
               "warm_start": {k: v for k, v in (pool or {}).items() if k != "init"},
               "builds_only": args.builds_only}
    payload["verdicts"] = verdicts(payload)
    if args.quick and not args.out_dir:
        print("--quick: numbers are a smoke test; pass --out-dir to keep them")
        return payload
    write_results(NAME, payload, markdown(payload, load_note(payload["load"]), md_table, machine),
                  Path(args.out_dir) if args.out_dir else None)
    return payload
