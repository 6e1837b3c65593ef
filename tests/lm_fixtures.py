"""A tiny facts world and a tiny Llama trained on it, built once per test session (seconds).

Shared by the LM tests through `tiny_lm_bundle()` (lru-cached) so that every module reuses the
same trained model; each module exposes it as a session fixture `tiny_lm`. Not a conftest:
tests/conftest.py holds the shared fixtures, and these are only needed by the language-model tests.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tests.conftest import fixture_seed, session_dir
from unlearn_ops.data.facts import FactsWorld, build_facts_store, texts
from unlearn_ops.data.splits import Splits
from unlearn_ops.data.store import SampleStore
from unlearn_ops.lm_training import LMTrainConfig, fit_lm
from unlearn_ops.models.lm import CausalLM, save_lm, tiny_llama, tiny_tokenizer

TINY_WORLD = {"n_people": 6, "holdout_fraction": 0.15, "seed": 0}   # 5 members (40 QA) + 1 held out (8 QA)
# A tiny model with a frozen random head barely learns, so unlike SmolLM2 it trains its (untied) head.
TINY_TRAIN = LMTrainConfig(epochs=30, lr=1e-2, batch_size=16, train_head=True, seed=fixture_seed(), device="cpu")
TINY_RETRAIN = {"epochs": 30, "lr": 1e-2, "batch_size": 16, "train_head": True, "lr_decay": "none", "general_texts": 0}  # lm_retrain, the build's schedule


@dataclass(frozen=True)
class TinyLM:
    root: Path
    world: FactsWorld
    store: SampleStore
    base: CausalLM        # untrained tiny Llama (the "pretrained checkpoint"), also saved at base_dir
    base_dir: Path
    model: CausalLM       # fine-tuned on all member QA pairs (the "original" model)
    splits: Splits        # forget = the first member person


@lru_cache(maxsize=1)
def tiny_lm_bundle() -> TinyLM:
    root = session_dir("unlearn-lm-tests-")
    world = FactsWorld(**TINY_WORLD)
    store = build_facts_store(root / "facts", world)
    corpus = [it.text for it in world.items] + [q for it in world.items for q in it.paraphrased_questions]
    corpus += [a for it in world.items for a in (it.paraphrased_answer, *it.perturbed_answers)]
    tok = tiny_tokenizer(corpus, vocab_size=1000)
    base = tiny_llama(tok, layers=3, hidden=48, trainable_blocks=2, seed=fixture_seed())
    base_dir = save_lm(base, root / "base")
    model = fit_lm(copy.deepcopy(base), texts(store.part(store.active_ids()).x), TINY_TRAIN)
    splits = store.splits(store.subject_ids(world.members[0].subject_id))
    return TinyLM(root, world, store, base, base_dir, model, splits)

