"""The registry's contract: every method declares EXACT and REQUEST_KINDS, checks its Config on
construction, and `is_exact` reads the declaration (no default can hide a missing one)."""

from __future__ import annotations

import dataclasses
import types

import pytest

from tests.methods.contract import check_declarations
from unlearn_ops import methods
from unlearn_ops.methods import METHODS, is_exact
from unlearn_ops.methods.base import ALL_KINDS, make_config
from unlearn_ops.requests import KINDS


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_declares_exact_and_request_kinds(name):
    check_declarations(name)
    assert is_exact(name) is METHODS[name].EXACT


def test_exact_methods_serve_every_request_kind():
    """An exact method ends every policy chain: it must take whatever the chain was given."""
    exact = [n for n in METHODS if is_exact(n)]
    assert {"retrain", "gan_retrain", "lm_retrain", "text_retrain"} <= set(exact)
    for name in exact:
        assert set(METHODS[name].REQUEST_KINDS) == set(KINDS), name


def test_base_kinds_are_the_requests_kinds():
    assert set(ALL_KINDS) == set(KINDS)


def test_is_exact_has_no_default(monkeypatch):
    bare = types.ModuleType("unlearn_ops.methods.bare")
    monkeypatch.setitem(METHODS, "bare", bare)
    with pytest.raises(AttributeError, match="EXACT"):
        methods.is_exact("bare")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_config_checks_itself_on_construction(name):
    """Defaults are valid; every Config with a setting besides `seed` validates in __post_init__."""
    config = METHODS[name].Config
    make_config(config, {})
    settings = {f.name for f in dataclasses.fields(config)} - {"seed"}
    if settings:
        assert "__post_init__" in {k for c in config.__mro__ for k in vars(c)}, f"{name}.Config has no __post_init__"
