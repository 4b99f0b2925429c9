"""Fast answers to mistakes (issue #20): a study spec is read and checked without importing
torch, MLflow or Optuna, and the torch-free declarations of the built-in encodings
(``harness.encodings._catalog``) say what their classes say.

The import checks run in a fresh interpreter and read ``sys.modules`` (never a timer); the
declarations are compared with the classes on every fact a spec reads: names and modules,
option fields with their types, bounds and defaults, what building says of good and bad options
at assorted model dimensions (the same words), the head-dim rule, hooks, policies.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
import textwrap
import types
import typing
from pathlib import Path

import pytest

from harness.config import ModelDims
from harness.encodings import ENCODINGS
from harness.encodings._catalog import BUILTINS, check_encoding
from harness.errors import HarnessError
from harness.registry import Registry, RegistryError

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted((ROOT / "studies").glob("*.yaml"))
#: what a spec check must never import (pandas: a second, like the others; only reports need it)
HEAVY = ("torch", "mlflow", "optuna", "pandas")


# ------------------------------------------------------------------------------ no heavy imports
CHECK_SPEC = textwrap.dedent('''
    import contextlib, io, json, sys
    spec, extra = sys.argv[1], json.loads(sys.argv[2])
    HEAVY = {heavy!r}
    seen = {{}}

    def note(step):
        seen[step] = [m for m in HEAVY if m in sys.modules]

    from harness.cli import main
    from harness.spec import load_spec
    note("import")
    load_spec(spec, extra)
    note("load_spec")
    sets = [arg for value in extra for arg in ("--set", value)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["run", spec, "--dry-run", *sets])
    note("dry_run")
    dry = (rc, out.getvalue().strip().splitlines()[-1], err.getvalue())
    errors = {{}}
    for command in (["run", spec], ["worker", spec, "--storage", "sqlite:///nowhere.db"], ["status", spec],
                    ["evaluate", spec], ["report", spec]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            rc = main([*command, *sets, "--set", "train.batch_size=0"])
        note(command[0])
        errors[command[0]] = (rc, err.getvalue())
    print(json.dumps({{"seen": seen, "dry": dry, "errors": errors}}))
''').format(heavy=HEAVY)


def _overrides(spec: Path, tmp_path: Path) -> list[str]:
    """A dataset read from a folder gets an existing (empty) one: the spec then checks out."""
    from harness.spec_sources import read_spec

    raw, _ = read_spec(spec)
    return [f"dataset.root={tmp_path}"] if "root" in (raw.get("dataset") or {}) else []


@pytest.mark.parametrize("spec", STUDIES, ids=[p.stem for p in STUDIES])
def test_checking_a_study_imports_no_torch_mlflow_optuna(spec, tmp_path):
    extra = _overrides(spec, tmp_path)
    r = subprocess.run([sys.executable, "-c", CHECK_SPEC, str(spec), json.dumps(extra)], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["seen"] == {step: [] for step in got["seen"]}, got["seen"]
    rc, last, err = got["dry"]
    from harness.spec import load_spec

    assert rc == 0 and last == f"{len(load_spec(spec, extra).cells())} cells", (rc, last, err)
    assert "Traceback" not in err
    for command, (rc, err) in got["errors"].items():  # the CLI contract: exit 2, one line
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, (command, rc, err)
        assert lines[0].startswith("error: ") and "key 'train.batch_size': expected an integer >= 1, got 0" in lines[0]
    assert not list(tmp_path.iterdir()), "a checked spec wrote something"


def test_an_unknown_encoding_is_named_without_torch(tmp_path):
    """The names the built-in files register are declared: an unknown one (and the known ones
    it lists) needs none of them imported."""
    code = textwrap.dedent(f'''
        import sys
        from harness.spec import SpecError, load_spec
        try:
            load_spec({str(ROOT / "studies" / "smoke.yaml")!r}, ["encodings=[rope_axail]"])
        except SpecError as exc:
            print(exc)
        print([m for m in {HEAVY!r} if m in sys.modules])
    ''')
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    message, modules = r.stdout.strip().splitlines()
    assert "unknown encoding 'rope_axail'; did you mean 'rope_axial'?" in message, r.stdout + r.stderr
    assert "rope_dinov3" in message and "string" in message  # the known ones, listed
    assert modules == "[]"


# ------------------------------------------------------------------------------ declarations = classes
#: model dimensions that exercise every rule: head dims 8, 12, 6, 8, 16 (multiples of 2, 4, 8 or
#: not), a model dim not divisible by 4, one not divisible by the heads, depths 1 to 4 (cpe's
#: blocks), training grids on both sides of rope_golden's ``auto`` switch (10 patches), 1 x 3
DIMS = [
    ModelDims(dim=32, depth=2, heads=4, train_rows=8, train_cols=8),
    ModelDims(dim=24, depth=3, heads=2, train_rows=14, train_cols=14),
    ModelDims(dim=18, depth=1, heads=3, train_rows=1, train_cols=3),
    ModelDims(dim=30, depth=2, heads=4, train_rows=2, train_cols=2),
    ModelDims(dim=16, depth=4, heads=1, train_rows=11, train_cols=9),
]


def _values(tp: typing.Any, default: typing.Any) -> list:
    """Good and bad values for an option of annotation ``tp``: the boundaries of the usual
    bounds, each choice of a Literal, and values of the wrong type."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    wrong = ["x", None, [1]]
    if origin is typing.Literal:
        return [*args, "nope", 3, None]
    if origin in (typing.Union, types.UnionType):
        return [v for a in args if a is not type(None) for v in _values(a, default)] + [None]
    if tp is bool:
        return [True, False, 0, 1, "yes", None]
    if tp is int:
        return [default, -2, -1, 0, 1, 2, 3, 4, 5, 8, 16, 2.0, True, *wrong]
    if tp is float:
        return [default, -1.0, 0, 0.0, 0.5, 1, 1.0, 2.0, 8.0, 100.0, 1e4, float("inf"), float("nan"), True, *wrong]
    if origin is tuple:
        return [default, (), (0,), (-1,), (-2,), (1,), (3,), (-1, 0), (0, 0), (0, 1, 2), [0, 1], (0.5,), ("a",), 3, "0"]
    raise AssertionError(f"no values for {tp!r}: add them here")


def _outcome(fn) -> str:
    try:
        fn()
    except HarnessError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def _batteries(options_cls: type) -> list[dict]:
    """Every option alone at each of its values, every pair of options at a few values each,
    and unknown keys (one near a real name)."""
    hints = typing.get_type_hints(options_cls)
    fields = [f for f in dataclasses.fields(options_cls)]
    values = {f.name: _values(hints[f.name], f.default) for f in fields}
    out: list[dict] = [{}, {"bogus": 1}]
    out += [{f.name + "s": 1} for f in fields[:1]]
    out += [{name: v} for name, vs in values.items() for v in vs]
    for a, b in itertools.combinations(values, 2):
        out += [{a: x, b: y} for x in values[a][:5] for y in values[b][:5]]
    return out


@pytest.mark.parametrize("declared", BUILTINS, ids=[d.name for d in BUILTINS])
def test_a_declaration_says_what_its_class_says(declared):
    cls = ENCODINGS.get(declared.name)
    assert cls.__module__ == f"harness.encodings.{declared.module}"
    # the options: the same fields, types, defaults and bounds
    ours, theirs = declared.Options, cls.Options

    def fields(options_cls):
        hints = typing.get_type_hints(options_cls)
        return [(f.name, hints[f.name], f.default, f.default_factory, f.init, dict(f.metadata))
                for f in dataclasses.fields(options_cls)]

    assert fields(ours) == fields(theirs)
    assert hasattr(ours, "validate") == hasattr(theirs, "validate")
    # the facts a spec and a listing read
    assert declared.head_dim_multiple == cls.head_dim_multiple
    assert dataclasses.replace(cls.describe(), description="") == declared.describe()
    # what building says, word for word, of good and bad options at each model size
    said = set()
    for dims in DIMS:
        for options in _batteries(theirs):
            real = _outcome(lambda: cls(dims, **options))
            assert _outcome(lambda: declared.check(dims, options)) == real, (dims, options, real)
            said.add(real)
    # the batteries reach both sides of the rules: built, and refused for an option's value
    assert "ok" in said and (not dataclasses.fields(theirs) or any("got" in x and "model dim" not in x
                                                                   for x in said)), said


def test_every_declared_name_is_what_its_module_registers_and_nothing_else():
    ENCODINGS.load_builtins()
    by_module: dict[str, set[str]] = {}
    for name, cls in ENCODINGS.items(entry_points=False):
        if ENCODINGS.source(name) == "built-in":
            by_module.setdefault(cls.__module__.rpartition(".")[2], set()).add(name)
    for d in BUILTINS:
        assert by_module[d.module] == {x.name for x in BUILTINS if x.module == d.module}, d.module


def test_check_encoding_builds_what_is_not_declared(tmp_path):
    """A plugin (or a new file of encodings/) has no declaration: it is built, and whatever its
    class refuses is refused."""
    from harness.registry import load_plugin

    path = tmp_path / "picky_pe.py"
    path.write_text(textwrap.dedent('''
        from harness.encodings import EncodingConfigError, PositionalEncoding, register_encoding


        @register_encoding("picky_pe")
        class Picky(PositionalEncoding):
            """Refuses more than two heads in its constructor."""

            def __init__(self, dims, **options):
                super().__init__(dims, **options)
                if dims.heads > 2:
                    raise EncodingConfigError("encoding 'picky_pe': at most 2 heads")
    '''))
    load_plugin(str(path))
    check_encoding("picky_pe", DIMS[1])
    with pytest.raises(HarnessError, match="at most 2 heads"):
        check_encoding("picky_pe", DIMS[0])


# ------------------------------------------------------------------------------ datasets: the classes themselves
DATASET_FACTS = textwrap.dedent('''
    import dataclasses, json, sys, typing
    if sys.argv[1] == "with_pixels":  # every module of harness.data, the torch ones too
        import harness.data.rendered, harness.data.shapes, harness.data.vision  # noqa: F401
    from harness.data import DATASETS
    facts = {{}}
    for name, cls in DATASETS.items(entry_points=False):
        hints = typing.get_type_hints(cls.Options)
        facts[name] = dict(module=cls.__module__, regimes=list(cls.regimes), note=cls.regime_note,
                           in_chans=cls.in_chans, options=[[f.name, repr(hints[f.name]), None if f.default is
                                                            dataclasses.MISSING else repr(f.default)]
                                                           for f in dataclasses.fields(cls.Options)])
    print(json.dumps(dict(facts=facts, heavy=[m for m in {heavy!r} if m in sys.modules])))
''').format(heavy=HEAVY)


def test_the_datasets_a_spec_sees_without_torch_are_all_the_built_ins_and_build_as_declared(tmp_path):
    """A built-in dataset's class and options import no torch (its pixels do, when built): the
    registry seen without torch holds every built-in, each with the same options, regimes and
    channels as when the pixel modules are loaded; a built instance has the channels its class
    declares."""
    seen = {}
    for mode in ("plain", "with_pixels"):
        r = subprocess.run([sys.executable, "-c", DATASET_FACTS, mode], capture_output=True, text=True,
                           cwd=tmp_path, timeout=120)
        assert r.returncode == 0, r.stderr[-3000:]
        seen[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["plain"]["heavy"] == []
    assert seen["plain"]["facts"] == seen["with_pixels"]["facts"]
    assert {"rendered", "cifar10", "cifar100", "imagefolder"} <= set(seen["plain"]["facts"])
    from harness.data import DATASETS, build_dataset
    from harness.data.conformance import example

    for name, facts in seen["plain"]["facts"].items():
        folder = tmp_path / name
        folder.mkdir()
        options = example(name, folder)
        data = build_dataset(name, **{f.name: getattr(options, f.name) for f in dataclasses.fields(options)})
        assert (data.in_chans, list(data.regimes)) == (facts["in_chans"], facts["regimes"]), name
        assert type(options) is DATASETS.get(name).Options


# ------------------------------------------------------------------------------ the registry's declarations
def _package(tmp_path: Path, name: str, modules: dict[str, str]) -> None:
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for module, registered in modules.items():
        (pkg / f"{module}.py").write_text(
            "from harness.registry import registries\n\n\n"
            f"@registries()['declaredwidget'].register({registered!r})\nclass W:\n    pass\n")


WIDGETS: Registry = Registry("declaredwidget")


def test_declared_names_answer_without_importing_and_a_new_file_still_counts(tmp_path, monkeypatch):
    """``in`` and ``names`` answer from the declarations while every module is declared; a
    module without a declaration (a file dropped in) is imported to find its names."""
    monkeypatch.syspath_prepend(str(tmp_path))
    _package(tmp_path, "wpkg_declared", {"one": "one", "two": "two"})
    monkeypatch.setattr(WIDGETS, "builtins", "wpkg_declared")
    monkeypatch.setattr(WIDGETS, "declared", {"one": "one", "two": "two"})
    monkeypatch.setattr(WIDGETS, "_entries", {})
    monkeypatch.setattr(WIDGETS, "_sources", {})
    monkeypatch.setattr(WIDGETS, "_covered", None)
    monkeypatch.setattr(WIDGETS, "_builtins_loaded", False)
    assert "one" in WIDGETS and "three" not in WIDGETS and WIDGETS.names() == ["one", "two"]
    assert "wpkg_declared.one" not in sys.modules and "wpkg_declared.two" not in sys.modules
    with pytest.raises(RegistryError, match=r"unknown declaredwidget 'on'; did you mean 'one'\?"):
        WIDGETS.get("on")
    assert "wpkg_declared.one" not in sys.modules
    # another module taking a declared name is refused, as if the built-ins had been imported
    with pytest.raises(RegistryError, match="'two' is already registered by wpkg_declared.two:W"):
        WIDGETS.register("two")(type("Other", (), {"__module__": "elsewhere"}))
    assert WIDGETS.get("one").__module__ == "wpkg_declared.one"

    _package(tmp_path, "wpkg_new_file", {"one": "one", "three": "three"})
    monkeypatch.setattr(WIDGETS, "builtins", "wpkg_new_file")
    monkeypatch.setattr(WIDGETS, "declared", {"one": "one"})
    monkeypatch.setattr(WIDGETS, "_entries", {})
    monkeypatch.setattr(WIDGETS, "_sources", {})
    monkeypatch.setattr(WIDGETS, "_covered", None)
    monkeypatch.setattr(WIDGETS, "_builtins_loaded", False)
    assert "three" in WIDGETS and WIDGETS.names() == ["one", "three"]
    assert WIDGETS.get("three").__module__ == "wpkg_new_file.three"
