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
Where the batch fails a *power* gate (`POWER_GATES`: e.g. 18 samples < `forget_set_size` 100) no
population test can judge the forget set — a retrained model's MIA AUC on 18 samples is noise — so
an exact method's privacy gates are measured and reported there but do not decide (`no_power`);
what vouches for it is its construction (tests/methods/test_sharded_retrain.py, test_retrain.py).

A gate may also carry a `power_margin`: before an approximate method is certified, that gate must
reject the model before unlearning (the champion) by at least the margin on the same forget set,
or the gates have no power there (`power`; docs/verification.md, "Power check"). Gates on metrics
of the batch alone (`BATCH_METRICS`) are checked before any method runs (`precheck`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class GateResult:
    metric: str
    value: float | None
    min: float | None
    max: float | None
    passed: bool
    utility: bool = False    # a utility gate (UTILITY_GATES), not a privacy gate
    decisive: bool = True    # whether it decides the verdict (`check`: not for every gate of an exact method)

    def shortfall(self) -> str:
        """The failure in a few words, e.g. "forget_set_size 18 < 100", "retain_rougeL_drop 0.0932 > 0.02"."""
        if self.value is None:
            return f"{self.metric} missing"
        shown = f"{self.value:g}" if float(self.value).is_integer() else f"{self.value:.3g}"
        if self.min is not None and self.value < self.min:
            return f"{self.metric} {shown} < {self.min:g}"
        return f"{self.metric} {shown} > {self.max:g}"

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

    @property
    def regressions(self) -> list[str]:
        """The utility gates a passing (exact) method failed: what it is promoted with, flagged."""
        return [g.shortfall() for g in self.gates if not g.passed and g.utility] if self.passed else []

    def summary(self) -> str:
        if not self.gates:
            return "no gates configured"
        return "PASS" if self.passed else "FAIL: " + "; ".join(g.describe() for g in self.gates if not g.passed)

    @property
    def no_power(self) -> list[str]:
        """The power gates the batch failed, for an exact method: why its privacy gates did not decide."""
        return [g.shortfall() for g in self.gates if not g.passed and g.metric in POWER_GATES and not g.decisive]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed, "regressions": self.regressions,
                "no_power": self.no_power, "gates": [asdict(g) for g in self.gates]}


# Gates on whether the population tests *can* judge (statistical power), not on whether the model
# forgot: e.g. `forget_set_size` — on a few samples no attack tells a no-op from a retrain
# (docs/benchmarks/calibrate_gates.md). An exact method needs no such evidence.
POWER_GATES = frozenset({"forget_set_size"})
# Metrics that depend on the batch alone (no model): a gate on one is decided before any method runs.
BATCH_METRICS = frozenset({"forget_set_size"})
BOUNDS = frozenset({"min", "max", "power_margin"})

# Utility gates: the candidate against the previous champion on what the model keeps doing, per
# family — classifiers and text (`retained_test_accuracy_drop` for a class deletion,
# `test_accuracy_drop` for items), GANs (`fid_change`), language models (`retain_rougeL_drop`,
# `perplexity_change`). Every other gate is a privacy gate (did it forget?) or a power gate.
UTILITY_GATES = frozenset({"retained_test_accuracy_drop", "test_accuracy_drop", "fid_change",
                           "retain_rougeL_drop", "perplexity_change"})


def for_method(cfg: Mapping[str, Mapping[str, float]], exact: bool) -> dict[str, Mapping[str, float]]:
    """The gates `cfg` as they stop a method before it runs (`precheck`): power gates dropped for
    exact methods, which run whatever the batch's size."""
    return {k: v for k, v in cfg.items() if not (exact and k in POWER_GATES)}


def check(metrics: Mapping[str, float], cfg: Mapping[str, Mapping[str, float]], exact: bool = False) -> Verdict:
    """Every gate of `cfg` on `metrics`. Passed: all gates, or for an `exact` method its privacy
    gates (a failed utility gate is a `regression`) — and none at all where the batch fails a power
    gate (`no_power`: the privacy gates cannot judge so small a forget set)."""
    results = []
    for metric, bounds in cfg.items():
        _check_bounds(metric, bounds)
        value = _value(metrics, metric)
        lo, hi = bounds.get("min"), bounds.get("max")
        ok = value is not None and (lo is None or value >= lo) and (hi is None or value <= hi)
        results.append(GateResult(metric, value, lo, hi, ok, utility=metric in UTILITY_GATES))
    if exact:
        powerless = any(not r.passed for r in results if r.metric in POWER_GATES)
        results = [replace(r, decisive=not (r.utility or r.metric in POWER_GATES or powerless)) for r in results]
    return Verdict(all(r.passed for r in results if r.decisive), tuple(results))


def _value(metrics: Mapping[str, float], metric: str) -> float | None:
    """The metric's value; None when it is missing or NaN (which no gate lets pass)."""
    raw = metrics.get(metric)
    return None if raw is None or (isinstance(raw, float) and math.isnan(raw)) else float(raw)


def _check_bounds(metric: str, bounds: Mapping[str, float]) -> None:
    unknown = set(bounds) - BOUNDS
    if unknown or not {"min", "max"} & set(bounds):
        raise ValueError(f"gate {metric!r}: give min and/or max (and optionally power_margin), not {sorted(bounds)}")
    margin = bounds.get("power_margin")
    if margin is not None and not (isinstance(margin, int | float) and margin >= 0):
        raise ValueError(f"gate {metric!r}: power_margin must be a number >= 0, not {margin!r}")


def precheck(gates: Mapping[str, Mapping[str, Mapping[str, float]]], *, exact: bool, serves: Sequence[str],
             kinds: Sequence[str], batch: Mapping[str, Mapping[str, float]]) -> str | None:
    """Why a method cannot pass this batch whatever model it would make, or None when it may.

    `gates`: request kind → that kind's gates; `serves`: the request kinds the method serves (its
    module's `REQUEST_KINDS`); `batch`: request kind → the batch-only metrics (`BATCH_METRICS`) of
    the part of the forget set that kind is judged on. A method that does not serve every kind of
    the batch, or a batch-only gate that fails (as it applies to an exact or approximate method),
    rules the method out: running it would spend the time and could never pass."""
    missing = [k for k in sorted(set(kinds)) if k not in serves]
    if missing:
        return f"serves {', '.join(serves)} requests, not {', '.join(missing)}"
    for kind in sorted(set(kinds)):
        cfg = {m: b for m, b in for_method(gates.get(kind, {}), exact).items() if m in BATCH_METRICS}
        failed = [g for g in check(batch.get(kind, {}), cfg).gates if not g.passed]
        if failed:
            return failed[0].shortfall()
    return None


@dataclass(frozen=True)
class Power:
    """Whether the gates carrying a `power_margin` reject a model by that margin: `evidence` has one
    line per such gate, e.g. "forget_accuracy_z 1.88 < 5 (= 3 + margin 2)"."""

    has_power: bool
    evidence: tuple[str, ...]


def _margin_line(metric: str, value: float | None, bounds: Mapping[str, float]) -> tuple[bool, str]:
    """Whether `value` lies beyond the gate's bound by its margin, and that comparison as text,
    e.g. "forget_accuracy_z 1.88 < 5 (= 3 + margin 2)"."""
    m, lo, hi = bounds["power_margin"], bounds.get("min"), bounds.get("max")
    sides = []  # (rejected by the margin, text if so, text if not)
    if hi is not None:
        hit = value is not None and value >= hi + m
        sides.append((hit, f"≥ {hi + m:g} (= {hi:g} + margin {m:g})", f"< {hi + m:g} (= {hi:g} + margin {m:g})"))
    if lo is not None:
        hit = value is not None and value <= lo - m
        sides.append((hit, f"≤ {lo - m:g} (= {lo:g} − margin {m:g})", f"> {lo - m:g} (= {lo:g} − margin {m:g})"))
    rejected = any(hit for hit, _, _ in sides)
    shown = "missing" if value is None else f"{value:.2f}"
    text = " and ".join(yes if hit else no for hit, yes, no in sides if hit == rejected)
    return rejected, f"{metric} {shown} {text}"


def power(metrics: Mapping[str, float], cfg: Mapping[str, Mapping[str, float]]) -> Power | None:
    """Do `cfg`'s gates reject `metrics` (the champion's, measured as its own candidate) by their
    `power_margin`? At least one such gate must, or these gates cannot tell a method that forgot
    from one that did nothing on this forget set. None when no gate of `cfg` carries a margin (the
    kind is not power-checked). A missing or NaN value rejects nothing."""
    lines, rejected = [], False
    for metric, bounds in cfg.items():
        _check_bounds(metric, bounds)
        if "power_margin" not in bounds:
            continue
        hit, line = _margin_line(metric, _value(metrics, metric), bounds)
        rejected |= hit
        lines.append(line)
    return Power(rejected, tuple(lines)) if lines else None
