"""The LM build flow on a tiny Llama: store → (cached) base → fine-tune → MLflow `champion`, idempotent."""

from pathlib import Path

import mlflow
import pytest

from tests.lm_fixtures import TinyLM, tiny_lm_bundle

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="session")
def tiny_lm() -> TinyLM:
    return tiny_lm_bundle()   # built once per session (lru-cached), shared by the LM test modules


def test_build_llm_registers_champion_and_is_idempotent(tiny_lm, tmp_path, mlflow_tmp, monkeypatch):
    from flows.build_llm import build_llm, llm_register
    from flows.params import load_params
    from tasks.registry import version_by_alias
    from unlearn_ops.models.lm import load_lm

    params = load_params()
    monkeypatch.setenv("UNLEARN_PROJECT_DIR", str(tmp_path))
    overrides = {"n_people": 6, "store_dir": str(tmp_path / "store"), "base_dir": str(tiny_lm.base_dir),
                 "model_dir": str(tmp_path / "model"), "trainable_blocks": 2, "model_name": "tiny-facts",
                 "train": {"epochs": 2, "lr": 1e-2, "batch_size": 8, "seed": 0, "device": "cpu"},
                 "eval_every": 8, "max_new_tokens": 8, "ppl_snippets": 0, "min_fact_recall": 0.0}
    version = build_llm(params=params, overrides=overrides)
    mv = version_by_alias("tiny-facts", "champion")
    assert mv is not None and str(mv.version) == version and mv.tags["kind"] == "causal-lm"
    assert llm_register(params=params, overrides=overrides) == version                 # same weights: no new version
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/tiny-facts/{version}", dst_path=str(tmp_path / "dl"))
    # MLflow keeps the artifact under the source folder's name: find it by the LM's own metadata file
    (meta,) = Path(local).glob("artifacts/**/unlearn_lm.json")
    model = load_lm(meta.parent)
    assert model.trainable_blocks == 2
    pyfunc = mlflow.pyfunc.load_model("models:/tiny-facts@champion")
    answers = pyfunc.predict(["Where was somebody born?"], params={"max_new_tokens": 4})
    assert len(answers) == 1 and isinstance(answers[0], str)

    # `unlearn audit lm-facts`: the served pyfunc asked every question, counted as the gates count
    from tasks.lm_facts import format_served_facts, served_facts
    from unlearn_ops.data.facts import prompt_text, world_of_store
    from unlearn_ops.data.store import SampleStore
    from unlearn_ops.models.lm import generate
    from unlearn_ops.verify.lm import contains_fact

    world = world_of_store(SampleStore(tmp_path / "store"))
    person = world.members[0]
    facts = served_facts("tiny-facts", tmp_path / "store", person.subject_id, max_new_tokens=8)
    mine = [it for it in world.items if it.subject_id == person.subject_id]
    direct = generate(load_lm(tmp_path / "model"), [prompt_text(it.question) for it in mine], 8)
    assert [a["answer"] for a in facts["subject_answers"]] == direct
    assert facts["subject_facts"]["stated"] == sum(contains_fact(a, it.facts) for a, it in zip(direct, mine, strict=True))
    assert (facts["subject_facts"]["asked"], facts["other_members"]["asked"], facts["never_seen"]["asked"]) == (8, 32, 8)
    assert f"{person.subject_id} ({person.name})" in format_served_facts(facts, 0.9)
    with pytest.raises(ValueError, match="not a person"):
        served_facts("tiny-facts", tmp_path / "store", "person-999")


def test_build_refuses_a_model_that_did_not_learn(tiny_lm, tmp_path, monkeypatch):
    from flows.build_llm import llm_import, llm_train
    from flows.params import load_params

    params = load_params()
    monkeypatch.setenv("UNLEARN_PROJECT_DIR", str(tmp_path))
    overrides = {"n_people": 6, "store_dir": str(tmp_path / "store"), "base_dir": str(tiny_lm.base_dir),
                 "model_dir": str(tmp_path / "model"), "trainable_blocks": 2,
                 "train": {"epochs": 1, "lr": 1e-6, "batch_size": 8, "device": "cpu"},
                 "eval_every": 8, "max_new_tokens": 8, "ppl_snippets": 0, "min_fact_recall": 0.99}
    llm_import(params=params, overrides=overrides)
    with pytest.raises(RuntimeError, match="did not learn"):
        llm_train(params=params, overrides=overrides)
    assert not (tmp_path / "model").exists()


def test_lm_retrain_with_nothing_forgotten_is_the_build_weight_for_weight(tiny_lm, tmp_path, monkeypatch):
    """The exact fallback repeats the build: same base checkpoint, same member QA pairs in the same
    order, the schedule read from the same `llm` section (`schedule_from_build`), same seed. With
    nothing forgotten it must return the built model itself, bit for bit (one process, one thread
    count) — so a retrained model that differs from the champion differs by the forgotten data alone."""
    import torch

    from flows.build_llm import llm_import, llm_params, llm_train
    from flows.params import load_params
    from unlearn_ops.data.store import SampleStore
    from unlearn_ops.methods import method_params, run_method
    from unlearn_ops.models.lm import load_lm

    params = load_params()
    monkeypatch.setenv("UNLEARN_PROJECT_DIR", str(tmp_path))
    overrides = {"n_people": 6, "store_dir": str(tmp_path / "store"), "base_dir": str(tiny_lm.base_dir),
                 "model_dir": str(tmp_path / "model"), "trainable_blocks": 2,
                 "train": {**params["llm"]["train"], "epochs": 2, "lr": 1e-2, "device": "cpu"},
                 "eval_every": 8, "max_new_tokens": 4, "ppl_snippets": 0, "min_fact_recall": 0.0}
    llm_import(params=params, overrides=overrides)
    llm_train(params=params, overrides=overrides)
    built = load_lm(tmp_path / "model")
    store = SampleStore(tmp_path / "store")
    settings = method_params("lm_retrain", None, llm_params(params, overrides))
    assert settings["base_dir"] == str(tiny_lm.base_dir) and settings["epochs"] == 2
    retrained = run_method("lm_retrain", built, store.splits([]), settings, device="cpu").model
    pairs = list(zip(built.state_dict().items(), retrained.state_dict().items(), strict=True))
    assert all(ka == kb and torch.equal(a, b) for (ka, a), (kb, b) in pairs)
    # and the person's data is what it depends on: without the first member the weights move
    person = store.subject_ids(store.index.loc[store.active_ids()[0], "subject_id"])
    without = run_method("lm_retrain", built, store.splits(person), settings, device="cpu").model
    assert not all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), without.state_dict().values(),
                                                        strict=True))
