"""Shared benchmark plumbing: timing and memory of a call, machine/commit notes, result files,
mean ± std tables."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearn_ops.methods import METHODS
from unlearn_ops.methods.base import make_config
from unlearn_ops.utils import project_root

OUT_DIR = project_root() / "docs" / "benchmarks"
LOAD_AT_START = os.getloadavg()[0]   # when the benchmark process started
# A second exact retrain ("twin") is trained with the run's seed + this, outside every protocol's seed range;
# scored like a method, it is the noise floor of any target taken relative to one retrained model.
TWIN_SEED_OFFSET = 100


@dataclass(frozen=True)
class Measured:
    result: Any
    seconds: float       # wall clock
    cpu_seconds: float   # this process's CPU time
    peak_mb: float       # peak extra memory during the call
    memory_how: str      # cuda | rss | rss-unreset (see `measure`)


def _vm(key: str) -> int:
    """VmHWM / VmRSS of this process in KiB (Linux)."""
    match = re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text())
    return int(match.group(1)) if match else 0


def measure(fn: Callable[[], Any]) -> Measured:
    """Run fn; its wall-clock and CPU seconds and peak extra memory.

    CUDA: torch.cuda.max_memory_allocated. CPU: the process's peak RSS during fn (VmHWM, reset
    through /proc/self/clear_refs) minus its RSS before; tracemalloc cannot see torch's tensors.
    """
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        torch.cuda.synchronize()
        return Measured(out, time.perf_counter() - wall, time.process_time() - cpu,
                        (torch.cuda.max_memory_allocated() - base) / 2**20, "cuda")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        how = "rss"
    except OSError:
        how = "rss-unreset"
    before = _vm("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return Measured(out, time.perf_counter() - wall, time.process_time() - cpu, max(_vm("VmHWM") - before, 0) / 1024,
                    how)


def method_settings(name: str, unlearn: dict[str, Any]) -> dict[str, Any]:
    """Every setting of method `name` as the pipeline runs it: its Config defaults with params.yaml
    `unlearn.<name>` (`unlearn`) on top. What a benchmark records, varies and runs."""
    return dataclasses.asdict(make_config(METHODS[name].Config, unlearn.get(name)))


def load_record() -> dict[str, float]:
    """1-minute load average at the start of the run and now: wall-clock times move with it."""
    return {"start": round(LOAD_AT_START, 2), "end": round(os.getloadavg()[0], 2), "cores": os.cpu_count() or 0}


def merge_args(name: str, argv: list[str]) -> tuple[list[Path], Path | None]:
    """The run files and output folder of `python -m bench NAME --merge RUN.json ... [--out-dir DIR]`."""
    p = argparse.ArgumentParser(prog=f"python -m bench {name} --merge")
    p.add_argument("--merge", nargs="+", required=True, metavar="RUN.json")
    p.add_argument("--out-dir", default=None)
    a = p.parse_args(argv)
    return [Path(f) for f in a.merge], Path(a.out_dir) if a.out_dir else None


def require_disjoint(labels: list[Any]) -> None:
    """Refuse to merge runs that hold the same case twice (`labels`: one per case)."""
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise SystemExit(f"the runs overlap: {twice}")


def load_runs(files: Iterable[Path]) -> list[dict[str, Any]]:
    """The result JSONs of runs to merge (`--merge`), in the order given."""
    return [json.loads(Path(f).read_text()) for f in files]


def require_same(runs: list[dict[str, Any]], keys: Iterable[str]) -> None:
    """Refuse to merge runs that differ in any of `keys` (data, settings, quick-ness)."""
    for key in keys:
        values = {json.dumps(r[key], sort_keys=True) for r in runs}
        if len(values) > 1:
            raise SystemExit(f"cannot merge runs that differ in {key!r}: {sorted(values)}")


def load_note(load: dict[str, float] | None) -> str:
    if not load:
        return "Load average not recorded for this run"
    busy = max(load["start"], load["end"]) > 1.5 * load["cores"]
    return (f"1-minute load average {load['start']:.1f} at start, {load['end']:.1f} at the end, on {load['cores']} "
            f"cores ({'shared with other jobs: wall-clock times are inflated' if busy else 'no heavy concurrent jobs'})")


def machine() -> dict[str, Any]:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"}
    try:
        info["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                        cwd=project_root(), check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["commit"] = "unknown"
    info["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    return info


def parse_variant(spec: str, known: Iterable[str]) -> tuple[str, dict[str, Any]]:
    """`method:key=value,key=value` → (method, params); values are parsed as YAML scalars. A bare
    `method` gives (method, {}). A benchmark reports a variant under the spec itself."""
    import yaml

    method, _, rest = spec.partition(":")
    if method not in set(known):
        raise ValueError(f"unknown method in variant {spec!r}")
    params = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in rest.split(",") if kv)}
    return method, params


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of a model's state (names and bytes), first 16 hex digits: which weights a report measured, so two
    reports on "the same" cached model can be told apart (CPU training is not bit-identical across thread counts)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=0))


def fmt(values: Iterable[float], digits: int = 3) -> str:
    m, s = mean_std(values)
    return "n/a" if np.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any], markdown: str, out_dir: Path | None = None) -> Path:
    """docs/benchmarks/<name>.json (+ .md); the machine and commit are added to both."""
    out_dir = Path(out_dir or OUT_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"protocol": name, "machine": machine(), **payload}
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2, sort_keys=True, default=float) + "\n")
    _write_markdown(name, payload["machine"], markdown, out_dir)
    return out_dir / f"{name}.json"


def _write_markdown(name: str, m: dict[str, Any], markdown: str, out_dir: Path) -> None:
    header = (f"# Benchmark `{name}`\n\nMachine: {m['platform']}, {m['cpu_count']} CPUs, device {m['device']}, "
              f"torch {m['torch']}; commit `{m['commit']}`; {m['date']}.\n\n")
    (out_dir / f"{name}.md").write_text(header + markdown.rstrip() + "\n")


def rerender(name: str, markdown_fn, out_dir: Path | None = None) -> Path:
    """Rewrite docs/benchmarks/<name>.md from its JSON (after a change to the report's text only:
    the numbers and the machine/commit of the run stay those recorded in the JSON)."""
    out_dir = Path(out_dir or OUT_DIR)
    payload = json.loads((out_dir / f"{name}.json").read_text())
    _write_markdown(name, payload["machine"], markdown_fn(payload), out_dir)
    return out_dir / f"{name}.md"
