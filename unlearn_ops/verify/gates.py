"""Verification gates: thresholds from params.yaml applied to a metrics dict.

Config shape (one block per request kind):

    gates:
      class:
        forget_accuracy: {max: 0.02}
        retained_test_accuracy_drop: {max: 0.02}

Every gate names a metric and a `min` and/or `max`. A metric that is missing or NaN fails its
gate (never silently passes). The verdict names every failed gate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class GateResult:
    metric: str
    value: float | None
    min: float | None
    max: float | None
    passed: bool

    def describe(self) -> str:
        bound = " and ".join(b for b in (f">= {self.min}" if self.min is not None else "",
                                         f"<= {self.max}" if self.max is not None else "") if b)
        shown = "missing" if self.value is None else f"{self.value:.4f}"
        return f"{self.metric} = {shown} (needs {bound}): {'pass' if self.passed else 'FAIL'}"


@dataclass(frozen=True)
class Verdict:
    passed: bool
    gates: tuple[GateResult, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> list[str]:
        return [g.metric for g in self.gates if not g.passed]

    def summary(self) -> str:
        if not self.gates:
            return "no gates configured"
        return "PASS" if self.passed else "FAIL: " + "; ".join(g.describe() for g in self.gates if not g.passed)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed, "gates": [asdict(g) for g in self.gates]}


# Gates on whether the population tests *can* judge (statistical power), not on whether the model
# forgot: e.g. `forget_set_size` — on a few samples no attack tells a no-op from a retrain
# (docs/benchmarks/calibrate_gates.md). An exact method needs no such evidence.
POWER_GATES = frozenset({"forget_set_size"})


def for_method(cfg: Mapping[str, Mapping[str, float]], exact: bool) -> dict[str, Mapping[str, float]]:
    """The gates `cfg` as they apply to a method: power gates dropped for exact methods."""
    return {k: v for k, v in cfg.items() if not (exact and k in POWER_GATES)}


def check(metrics: Mapping[str, float], cfg: Mapping[str, Mapping[str, float]]) -> Verdict:
    results = []
    for metric, bounds in cfg.items():
        unknown = set(bounds) - {"min", "max"}
        if unknown or not bounds:
            raise ValueError(f"gate {metric!r}: give min and/or max, not {sorted(bounds)}")
        raw = metrics.get(metric)
        value = None if raw is None or (isinstance(raw, float) and math.isnan(raw)) else float(raw)
        lo, hi = bounds.get("min"), bounds.get("max")
        ok = value is not None and (lo is None or value >= lo) and (hi is None or value <= hi)
        results.append(GateResult(metric, value, lo, hi, ok))
    return Verdict(all(r.passed for r in results), tuple(results))
