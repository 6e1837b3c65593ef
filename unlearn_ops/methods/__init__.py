"""The METHODS registry: one explicit dict, name → module with `Config`, `unlearn`, `EXACT` and
`REQUEST_KINDS` (the contract of `methods/base.py`).

One name per method everywhere: module `methods/<name>.py` (or package `methods/<name>/`), key
`<name>` here, section `unlearn.<name>` in params.yaml, page `docs/methods/<name>.md`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from torch import nn

from unlearn_ops.data.splits import Splits
from unlearn_ops.methods import (
    cascaded_gan,
    concept_poisoning,
    finetune,
    gan_retrain,
    grad_ascent,
    grad_diff,
    lm_retrain,
    lm_token_poisoning,
    logit_suppression,
    neg_grad_plus,
    neuron_perturbation,
    noop,
    npo,
    random_label,
    retrain,
    salun,
    scrub,
    sharded_retrain,
    ssd,
    text_retrain,
)
from unlearn_ops.methods._members import per_member
from unlearn_ops.methods.base import UnlearnResult, make_config
from unlearn_ops.models.sharded import ShardedEnsemble

METHODS: dict[str, ModuleType] = {
    "retrain": retrain,
    "finetune": finetune,
    "noop": noop,
    "neg_grad_plus": neg_grad_plus,
    "random_label": random_label,
    "salun": salun,
    "scrub": scrub,
    "ssd": ssd,
    "logit_suppression": logit_suppression,
    "neuron_perturbation": neuron_perturbation,
    "concept_poisoning": concept_poisoning,
    "cascaded_gan": cascaded_gan,
    "gan_retrain": gan_retrain,
    "text_retrain": text_retrain,   # exact for text classifiers (frozen encoder + head)
    "sharded_retrain": sharded_retrain,  # exact for sharded classifiers (SISA): only the members that held the data
    # language models (CausalLM only; issue 8)
    "lm_token_poisoning": lm_token_poisoning,
    "grad_ascent": grad_ascent,
    "grad_diff": grad_diff,
    "npo": npo,
    "lm_retrain": lm_retrain,
}

# Methods that never make it into a production policy (test canaries).
TEST_ONLY = frozenset({"noop"})
# Methods that work on a whole sharded model; every other method is mapped over its members.
ENSEMBLE_METHODS = frozenset({"sharded_retrain"})


def is_exact(name: str) -> bool:
    """Whether `name` is exact unlearning (its module's `EXACT`: retraining without the data)."""
    return get_method(name).EXACT


def get_method(name: str) -> ModuleType:
    if name not in METHODS:
        raise KeyError(f"unknown unlearning method {name!r}; registered: {sorted(METHODS)}")
    return METHODS[name]


def method_params(name: str, overrides: Mapping[str, Any] | None, build: Mapping[str, Any] | None) -> dict[str, Any]:
    """The settings `name` runs with on a model: for an exact method, the schedule of the model's
    build section (its module's `schedule_from_build`; `build` None = none given, Config defaults),
    then `overrides` (params.yaml `unlearn.<name>`) on top."""
    module = get_method(name)
    schedule = module.schedule_from_build(build) if module.EXACT and build is not None else {}
    return {**schedule, **dict(overrides or {})}


def run_method(name: str, model: nn.Module, splits: Splits, params: dict[str, Any] | None = None,
               device: str = "auto") -> UnlearnResult:
    """Build the method's Config from `params` (unknown keys rejected), run it, time it. On a
    sharded model a method is mapped over its members (`methods/_members.py`), except
    `ENSEMBLE_METHODS`."""
    module = get_method(name)
    cfg = make_config(module.Config, params)
    start = time.perf_counter()
    if isinstance(model, ShardedEnsemble) and name not in ENSEMBLE_METHODS:
        result = per_member(name, module, cfg, model, splits, device)
    else:
        result = module.unlearn(model, splits, cfg, device=device)
    result.seconds = time.perf_counter() - start
    result.method = name
    return result


__all__ = ["ENSEMBLE_METHODS", "METHODS", "TEST_ONLY", "UnlearnResult", "get_method", "is_exact", "method_params", "run_method"]
