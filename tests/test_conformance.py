"""The conformance kit, run over every registered encoding: the built-ins (the files of
encodings/) and three test plugins (registered by file path, by module:attr and by entry point).
No list of names here: a new encoding is picked up by the registry and runs every check."""

from pathlib import Path

import pytest

from harness.conformance import CHECKS
from harness.encodings import ENCODINGS
from tests.plugins import register_all

PLUGINS = register_all()
ENCODINGS_DIR = Path(__file__).resolve().parents[1] / "encodings"


def test_registry_holds_every_encoding_file_and_the_plugins():
    """Every public module of encodings/ (but the base) registers exactly one built-in, and
    the three plugins are registered too."""
    files = {p.stem for p in ENCODINGS_DIR.glob("*.py") if not p.stem.startswith("_") and p.stem != "base"}
    builtins = {name: cls.__module__.rpartition(".")[2] for name, cls in ENCODINGS.items()
                if ENCODINGS.source(name) == "built-in"}
    assert sorted(builtins.values()) == sorted(files)
    assert set(PLUGINS) <= set(ENCODINGS.names()) and not set(PLUGINS) & set(builtins)


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", ENCODINGS.names())
def test_conformance(name, check):
    check(name)
