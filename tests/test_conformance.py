"""The conformance kit, run over every registered encoding: the built-ins (the files of
encodings/) and three test plugins (registered by file path, by module:attr and by entry point).
No list of names here: a new encoding is picked up by the registry and runs every check."""

from pathlib import Path

import pytest
import torch

from harness.conformance import CHECKS, check_cls_untouched
from harness.encodings import ENCODINGS, get_encoding
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


# ------------------------------------------------------------------------------ the cls check itself
def _as_kit_sees(monkeypatch, cls):
    """Let the kit's cls check look up ``cls`` under its registered name, without registering it."""
    import harness.conformance as kit
    monkeypatch.setattr(kit, "get_encoding", lambda name: cls)
    monkeypatch.setattr(kit, "build_encoding", lambda name, dims, options=None: cls(dims))


def _learned_string():
    """``string`` with a learned-looking S (P != I), so that the cls token is really turned."""
    base = get_encoding("string")

    class Learned(base):
        def __init__(self, dims, **options):
            super().__init__(dims, **options)
            with torch.no_grad():
                self.skew.copy_(torch.randn(self.skew.shape, generator=torch.Generator().manual_seed(0)))
    return Learned


def _learned_cpb():
    base = get_encoding("cpb")

    class Learned(base):
        def __init__(self, dims, **options):
            super().__init__(dims, **options)
            with torch.no_grad():
                self.cpb_cls.copy_(torch.randn(self.cpb_cls.shape, generator=torch.Generator().manual_seed(0)))
    return Learned


@pytest.mark.parametrize("make", [_learned_string, _learned_cpb], ids=["string", "cpb"])
def test_cls_check_accepts_a_cls_token_without_position_and_only_when_declared(monkeypatch, make):
    learned = make()
    _as_kit_sees(monkeypatch, learned)
    check_cls_untouched(learned.name)
    strict = type("Strict", (learned,), {"cls_untouched": True})
    _as_kit_sees(monkeypatch, strict)
    with pytest.raises(AssertionError, match="declare cls_untouched = False"):
        check_cls_untouched(strict.name)


def test_cls_check_catches_a_cls_token_with_a_position(monkeypatch):
    """With ``cls_untouched = False`` the cls token's q, k and bias entries must still not depend
    on the grid: a cls q turned by the grid's size, a cls bias row that varies over the patches
    and a cls corner that depends on the grid each fail."""
    string, cpb = _learned_string(), _learned_cpb()

    def turned_by_size(self, q, k, grid, state, layer):
        q2, k2 = string.qk(self, q, k, grid, state, layer)
        return torch.cat([q2[:, :, :1] * grid.rows, q2[:, :, 1:]], 2), k2

    def varying_row(self, grid, state, layer):
        bias = cpb.attn_bias(self, grid, state, layer).clone()
        bias[:, 0, 1:] += torch.arange(grid.num_patches)
        return bias

    def corner_by_offset(self, grid, state, layer):
        bias = cpb.attn_bias(self, grid, state, layer).clone()
        bias[:, 0, 0] += grid.offset[0]
        return bias

    for base, hook, fn, message in ((string, "qk", turned_by_size, "cls token's q differ"),
                                    (cpb, "attn_bias", varying_row, "varies over the patches"),
                                    (cpb, "attn_bias", corner_by_offset, "cls token's bias entries differ")):
        broken = type("Broken", (base,), {hook: fn})
        _as_kit_sees(monkeypatch, broken)
        with pytest.raises(AssertionError, match=message):
            check_cls_untouched(broken.name)
