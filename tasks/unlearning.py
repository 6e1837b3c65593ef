"""Unlearning and verification tasks. They pass paths and small values, never live models, so
Prefect can record results and retry; GPU work carries the `gpu` tag (a concurrency limit on that
tag serialises jobs on a shared card). The model's family (unlearn_ops/families.py) decides how
it is loaded, saved, measured and pictured."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from tasks.batch import ERROR, NO_POWER, NOT_APPLICABLE, SKIPPED, UNLEARNED, Attempt, PowerCheck, jsonable
from unlearn_ops.data.store import SampleStore
from unlearn_ops.families import family
from unlearn_ops.methods import get_method, is_exact, run_method
from unlearn_ops.methods.base import NotApplicable
from unlearn_ops.progress import section
from unlearn_ops.verify.gates import precheck
from unlearn_ops.verify.production import (
    Evaluation,
    Settings,
    Verification,
    batch_metrics,
    power_check,
    power_gates,
)


def cannot_pass(method: str, store_dir: str, forget_ids: list[str], item_ids: list[str], classes: list[int],
                kinds: list[str], gates: dict[str, dict], power: Callable[[], PowerCheck]) -> Attempt | None:
    """The attempt of a method that need not run, or None: run it. `skipped` when the batch alone
    rules it out (a request kind it does not serve, a failing batch-only gate such as
    `forget_set_size`); `no_power` when it is approximate and the gates do not reject the champion
    itself by their margin on this forget set. `power()` gives the batch's power check (computed
    once, on first need)."""
    exact = is_exact(method)
    batch = batch_metrics(SampleStore(store_dir).labels(forget_ids), forget_ids, classes, set(item_ids), kinds)
    reason = precheck(gates, exact=exact, serves=get_method(method).REQUEST_KINDS, kinds=kinds, batch=batch)
    if reason is not None:
        return Attempt(method, SKIPPED, reason=reason)
    if exact or not power_gates(gates, kinds):
        return None
    check = power()
    return None if check.has_power else Attempt(method, NO_POWER, reason=check.sentence())


@task(name="unlearn", tags=["gpu"], cache_policy=NO_CACHE)
def unlearn_task(champion_dir: str, store_dir: str, forget_ids: list[str], family_name: str, method: str,
                 params: dict[str, Any], device: str, out_dir: str) -> Attempt:
    """Run one method on the champion. A method that does not apply (`NotApplicable`) is a quiet
    `not_applicable` attempt; any other exception is a bug, logged at ERROR with its traceback and
    recorded as an `error` attempt, so the chain still goes on to the next method."""
    fam = family(family_name)
    model, spec = fam.load(champion_dir)
    splits = SampleStore(store_dir).splits(forget_ids)
    try:
        with section(f"unlearn {method}"):
            result = run_method(method, model, splits, params, device=device)
    except NotApplicable as e:
        return Attempt(method, NOT_APPLICABLE, reason=str(e))
    except Exception as e:
        get_run_logger().error("unlearning method `%s` raised %s: the chain moves on to the next method",
                               method, type(e).__name__, exc_info=True)
        return Attempt(method, ERROR, reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    fam.save(result.model.cpu(), spec, out_dir)
    return Attempt(method, UNLEARNED, seconds=result.seconds, model_dir=out_dir, details=jsonable(result.details),
                   log=result.log[-20:], settings=jsonable(params))


@task(name="verify", cache_policy=NO_CACHE)
def verify_task(champion_dir: str, candidate_dir: str, store_dir: str, forget_ids: list[str], classes: list[int],
                item_ids: list[str], kinds: list[str], family_name: str, gates: dict[str, dict], method: str,
                settings: Settings) -> Verification:
    """Production metrics per request kind, checked against that kind's gates (as they apply to
    `method`: an exact method skips the statistical-power gates). `gates` is the family's section
    of params.yaml; the report's PNGs go to `<candidate_dir>/report`."""
    fam = family(family_name)
    store = SampleStore(store_dir)
    e = Evaluation(champion=fam.load(champion_dir)[0], candidate=fam.load(candidate_dir)[0],
                   splits=fam.splits(store, forget_ids, settings), store=store, classes=classes,
                   item_ids=set(item_ids), settings=settings)
    with section(f"verify {method}"):
        return fam.verify(e, gates, kinds, exact=is_exact(method), report_dir=f"{candidate_dir}/report")


@task(name="power-check", tags=["gpu"], cache_policy=NO_CACHE)
def power_task(champion_dir: str, store_dir: str, forget_ids: list[str], classes: list[int], item_ids: list[str],
               kinds: list[str], family_name: str, gates: dict[str, dict], settings: Settings) -> PowerCheck:
    """The champion measured as its own candidate on this forget set (the production metrics, no
    report), and whether the gates reject it by their power margins: one verification's cost, once
    per batch (docs/verification.md, "Power check")."""
    start = time.perf_counter()
    fam = family(family_name)
    store = SampleStore(store_dir)
    champion = fam.load(champion_dir)[0]
    with section("power check"):
        metrics = fam.measure(Evaluation(champion=champion, candidate=champion,
                                         splits=fam.splits(store, forget_ids, settings), store=store,
                                         classes=classes, item_ids=set(item_ids), settings=settings))
    checks = power_check(metrics, gates, kinds)
    return PowerCheck(all(c.has_power for c in checks.values()), {k: list(c.evidence) for k, c in checks.items()},
                      jsonable(metrics), round(time.perf_counter() - start, 2))
