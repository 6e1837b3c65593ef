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
