"""The conformance kit, run over every registered encoding: the nine built-ins and three
test plugins (registered by file path, by module:attr and by entry point)."""

import pytest

from harness.conformance import CHECKS
from harness.encodings import known_names
from tests.plugins import register_all

PLUGINS = register_all()
BUILTINS = ["alibi2d", "learned", "liere", "none", "rope1d", "rope_axial", "rope_golden", "rope_mixed", "sincos2d"]


def test_registry_holds_builtins_and_plugins():
    assert set(BUILTINS) | set(PLUGINS) <= set(known_names())


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", BUILTINS + PLUGINS)
def test_conformance(name, check):
    check(name)
