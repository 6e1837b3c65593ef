"""Verification gates: thresholds from params.yaml applied to a metrics dict.

Config shape (one block per request kind):

    gates:
      class:
        forget_accuracy: {max: 0.02}
        retained_test_accuracy_drop: {max: 0.02}

Every gate names a metric and a `min` and/or `max`. A metric that is missing or NaN fails its
gate (never silently passes). The verdict names every failed gate.

Gates are of two kinds, told apart by their metric (`UTILITY_GATES`, the one place): *privacy*
gates ask whether the model forgot, *utility* gates how much worse it got at what it keeps
doing. An approximate method must pass both. An exact method (retraining without the data) has
forgotten by construction: it passes on its privacy gates, and a failed utility gate is a
regression it is promoted with and reported, never a reason to keep the data in the served model.
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
    utility: bool = False    # a utility gate (UTILITY_GATES), not a privacy gate

    def describe(self) -> str:
        bound = " and ".join(b for b in (f">= {self.min}" if self.min is not None else "",
                                         f"<= {self.max}" if self.max is not None else "") if b)
        shown = "missing" if self.value is None else f"{self.value:.4f}"
        return f"{self.metric} = {shown} (needs {bound}): {'pass' if self.passed else 'FAIL'}"

    def shortfall(self) -> str:
        """How a failed gate missed, e.g. `retain_rougeL_drop 0.093 > 0.02`."""
        if self.value is None:
            return f"{self.metric} missing"
        if self.max is not None and self.value > self.max:
            return f"{self.metric} {self.value:.3f} > {self.max:g}"
        return f"{self.metric} {self.value:.3f} < {self.min:g}"


@dataclass(frozen=True)
class Verdict:
    passed: bool
    gates: tuple[GateResult, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> list[str]:
        return [g.metric for g in self.gates if not g.passed]

    @property
    def regressions(self) -> list[str]:
        """The utility gates a passing (exact) method failed: what it is promoted with, flagged."""
        return [g.shortfall() for g in self.gates if not g.passed and g.utility] if self.passed else []

    def summary(self) -> str:
        if not self.gates:
            return "no gates configured"
        return "PASS" if self.passed else "FAIL: " + "; ".join(g.describe() for g in self.gates if not g.passed)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed, "regressions": self.regressions,
                "gates": [asdict(g) for g in self.gates]}


# Gates on whether the population tests *can* judge (statistical power), not on whether the model
# forgot: e.g. `forget_set_size` — on a few samples no attack tells a no-op from a retrain
# (docs/benchmarks/calibrate_gates.md). An exact method needs no such evidence.
POWER_GATES = frozenset({"forget_set_size"})

# Utility gates: the candidate against the previous champion on what the model keeps doing, per
# family — classifiers and text (`retained_test_accuracy_drop` for a class deletion,
# `test_accuracy_drop` for items), GANs (`fid_change`), language models (`retain_rougeL_drop`,
# `perplexity_change`). Every other gate is a privacy gate (did it forget?) or a power gate.
UTILITY_GATES = frozenset({"retained_test_accuracy_drop", "test_accuracy_drop", "fid_change",
                           "retain_rougeL_drop", "perplexity_change"})


def for_method(cfg: Mapping[str, Mapping[str, float]], exact: bool) -> dict[str, Mapping[str, float]]:
    """The gates `cfg` as they apply to a method: power gates dropped for exact methods."""
    return {k: v for k, v in cfg.items() if not (exact and k in POWER_GATES)}


def check(metrics: Mapping[str, float], cfg: Mapping[str, Mapping[str, float]], exact: bool = False) -> Verdict:
    """Every gate of `cfg` on `metrics`. Passed: all gates, or for an `exact` method all but the
    utility gates (those it fails are its `regressions`)."""
    results = []
    for metric, bounds in cfg.items():
        unknown = set(bounds) - {"min", "max"}
        if unknown or not bounds:
            raise ValueError(f"gate {metric!r}: give min and/or max, not {sorted(bounds)}")
        raw = metrics.get(metric)
        value = None if raw is None or (isinstance(raw, float) and math.isnan(raw)) else float(raw)
        lo, hi = bounds.get("min"), bounds.get("max")
        ok = value is not None and (lo is None or value >= lo) and (hi is None or value <= hi)
        results.append(GateResult(metric, value, lo, hi, ok, utility=metric in UTILITY_GATES))
    decisive = [r for r in results if not (exact and r.utility)]
    return Verdict(all(r.passed for r in decisive), tuple(results))
