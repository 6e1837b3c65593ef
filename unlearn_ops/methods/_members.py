"""Any method on a sharded classifier: mapped over its members (the one place that does it).

A whole-class deletion, or a method that serves no item request (a class or concept method),
changes every member: each member predicts every class, and the ensemble averages them all, so a
member left alone would keep the class alive. An item deletion changes only the members whose
shard held a forgotten sample, each shown its own part of the forget set and its own retained
shard; the others stay bit-identical. A sample of the shared pool reached every member through
the warm start, so forgetting one changes every member. Exact retraining of the members is `sharded_retrain`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods.base import ITEM_KINDS, UnlearnResult
from unlearn_ops.models.sharded import POOL, ShardedEnsemble
from unlearn_ops.sharding import with_member_results

EVERY, HOLDERS = "every member", "the members whose shard held the forget set"


def member_splits(model: ShardedEnsemble, splits: Splits, member: int, whole: bool) -> Splits:
    """What member `member` is shown: its retained shard; all of the forget set for a whole-class
    or concept change, else the forgotten samples of its own shard."""
    mine = set(model.state().map.member_ids(member))
    retain = splits.retain.where([sid in mine for sid in splits.retain.ids])
    forget = splits.forget if whole else splits.forget.where([sid in mine for sid in splits.forget.ids])
    return Splits(forget, retain, splits.test, splits.nonmember, splits.num_classes)


def per_member(name: str, module: ModuleType, cfg: Any, model: ShardedEnsemble, splits: Splits,
               device: str) -> UnlearnResult:
    """Run `module.unlearn` on the members the deletion concerns; the new ensemble, with each
    member's details and log."""
    touched = model.state().map.removed(splits.retain.ids)
    whole = splits.is_class_deletion or not set(module.REQUEST_KINDS) & set(ITEM_KINDS) or POOL in touched
    targets = list(range(model.shards)) if whole else sorted(touched)
    results = {i: module.unlearn(model.members[i], member_splits(model, splits, i, whole), cfg, device=device)
               for i in targets}
    new = with_member_results(model, {i: r.model for i, r in results.items()}, splits.retain.ids)
    untouched = [i for i in range(model.shards) if i not in results]
    summary = (f"applied to {EVERY if whole else HOLDERS} of {model.shards}: members {targets or 'none'}"
               + (f"; members {untouched} unchanged" if untouched else ""))
    details = {"applied_to": EVERY if whole else HOLDERS, "members": targets, "untouched": untouched,
               "summary": summary, "per_member": {str(i): r.details for i, r in results.items()}}
    log = [f"member {i}: {line}" for i, r in results.items() for line in r.log]
    return UnlearnResult(new, name, details=details, log=log)
