"""The package layout (issue #23): the modules that moved into subpackages keep their old import
paths, and the layers of ``[tool.importlinter]`` hold and catch an upward import.

The old paths are listed here as they were before the move (the flat ``harness/`` of 30
modules), independently of ``harness._moved``; each must give the very module at its new path,
so a plugin, a ``mock.patch`` or ``from harness.report_stats import x`` sees what the code sees.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# old import path -> new one, written from the layout before the move
OLD_PATHS = {
    "harness.spec": "harness.spec",
    "harness.spec_sources": "harness.spec.sources",
    "harness.spec_memory": "harness.spec.memory",
    "harness.presets": "harness.spec.presets",
    "harness.design": "harness.spec.design",
    "harness.study": "harness.study",
    "harness.storage": "harness.study.storage",
    "harness.worker": "harness.study.worker",
    "harness.trial": "harness.study.trial",
    "harness.evaluate": "harness.study.evaluate",
    "harness.tracking": "harness.study.tracking",
    "harness.train": "harness.training.train",
    "harness.checkpoint": "harness.training.checkpoint",
    "harness.stopwatch": "harness.training.stopwatch",
    "harness.progress": "harness.training.progress",
    "harness.report": "harness.report",
    "harness.report_pages": "harness.report.pages",
    "harness.report_stats": "harness.report.stats",
    "harness.report_time": "harness.report.timing",
    "harness.report_answer": "harness.report.answer",
    "harness.comparisons": "harness.report.comparisons",
    "harness.selection": "harness.report.selection",
    "harness.analysis": "harness.report.analysis",
    "harness.figures": "harness.report.figures",
    "harness.figures.plotting": "harness.report.figures.plotting",
    "harness.figures.conformance": "harness.report.figures.conformance",
    "harness.figures.cost": "harness.report.figures.cost",
    "harness.show": "harness.cli.show",
    "harness.cli": "harness.cli",
    "harness.kept": "harness.study.kept",  # on main while the layout was made: moved at the merge
    "harness.report_curves": "harness.report.curves",
}

# names read through an old path by the docs, the examples, the tests or plugins
OLD_NAMES = [
    ("harness.figures", "FIGURES"), ("harness.figures", "ReportFigure"), ("harness.figures", "register_figure"),
    ("harness.figures.plotting", "save"), ("harness.report_stats", "BOOTSTRAP_SEED"),
    ("harness.train", "TrialFailed"), ("harness.train", "train_model"), ("harness.study", "run_study"),
    ("harness.study", "failed_cells"), ("harness.tracking", "Tracker"), ("harness.spec", "load_spec"),
    ("harness.presets", "load_preset"), ("harness.comparisons", "holm"), ("harness.cli", "main"),
    ("harness.cli", "build_parser"), ("harness.checkpoint", "load_checkpoint"),
]


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_an_old_import_path_is_the_moved_module(old):
    new = importlib.import_module(OLD_PATHS[old])
    assert importlib.import_module(old) is new
    parent, _, leaf = old.rpartition(".")
    assert getattr(importlib.import_module(parent), leaf) is new  # `from harness import report_stats`
    assert new.__spec__.name == new.__name__ == OLD_PATHS[old]  # its own spec, not the alias's


@pytest.mark.parametrize(("module", "name"), OLD_NAMES)
def test_a_name_read_through_an_old_path_is_the_same_object(module, name):
    new = importlib.import_module(OLD_PATHS[module])
    assert getattr(importlib.import_module(module), name) is getattr(new, name)


def test_a_patch_through_an_old_path_is_seen_by_the_code(monkeypatch):
    import harness.study.trial as trial

    marker = object()
    monkeypatch.setattr("harness.trial.train_model", marker)
    assert trial.train_model is marker


def test_a_figure_module_is_loaded_once_by_either_path():
    """``harness.figures.cost`` must not be a second copy of the module (it would register again)."""
    code = ("import sys, harness.figures.cost, harness.report.figures.cost as b, harness.figures.cost as a;"
            "assert a is b; print(sorted(m for m in sys.modules if m.endswith('.cost')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['harness.figures.cost', 'harness.report.figures.cost']"


def _ci_lint_imports():
    """``.ci/lint_imports.py`` (not a package module) loaded from its file."""
    spec = importlib.util.spec_from_file_location("ci_lint_imports", ROOT / ".ci" / "lint_imports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _lint_imports():
    return _ci_lint_imports().lint_imports


def _checkout_copy(tmp_path: Path) -> Path:
    """The parts of the checkout that lint-imports reads, copied."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("harness", "encodings", "models"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=skip)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


needs_import_linter = pytest.mark.skipif(shutil.which("lint-imports", path=str(Path(sys.executable).parent)) is None
                                         and shutil.which("lint-imports") is None,
                                         reason="import-linter not installed (pip install -e '.[test]')")


@needs_import_linter
def test_the_layers_hold():
    result = _lint_imports()(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


@needs_import_linter
@pytest.mark.parametrize(("module", "upward"), [
    ("harness/spec/memory.py", "harness.study.stages"),  # spec below study
    ("models/vit.py", "harness.training.train"),  # the model below the trainer
    ("encodings/base.py", "harness.spec"),  # the encodings below the spec loader
])
def test_an_upward_import_breaks_the_layers_naming_the_contract(tmp_path, module, upward):
    """Even a lazy one, inside a function (import-linter reads every import statement)."""
    checkout = _checkout_copy(tmp_path)
    with open(checkout / module, "a") as f:
        f.write(f"\n\ndef _upward():\n    import {upward}  # noqa: PLC0415\n")
    result = _lint_imports()(checkout)
    assert result.returncode == 1, result.stdout + result.stderr
    out = " ".join(result.stdout.split())
    assert "harness layers (cli > report, bench > study" in out and "BROKEN" in out
    importer = module.removesuffix(".py").replace("/", ".")
    importer = importer if importer.startswith("harness.") else "harness." + importer
    assert f"{importer} -> {upward}" in out


@needs_import_linter
def test_a_new_module_outside_the_layers_breaks_the_contract(tmp_path):
    """The contract is exhaustive: a new top-level module must be given a layer."""
    checkout = _checkout_copy(tmp_path)
    (checkout / "harness" / "stray.py").write_text('"""A module no layer names."""\n')
    result = _lint_imports()(checkout)
    assert result.returncode == 1
    assert "harness.stray" in result.stdout


# ------------------------------------------------------------------------------ import cycles
def _package_modules(tmp: Path) -> dict[str, Path]:
    """Every module of the package as the wheel lays it out (``.ci/lint_imports.py``'s stage:
    ``encodings/`` and ``models/`` inside ``harness/``), staged under ``tmp``."""
    package = _ci_lint_imports().stage(ROOT, tmp)
    found = {}
    for path in package.rglob("*.py"):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports: every import statement, at the top,
    in an ``if``, ``try``, ``with`` or class statement, or inside a function (run when it is
    called: a cycle all the same, as grimp and import-linter count it), except those under ``if
    TYPE_CHECKING:`` (never run). ``from a import b`` is the module ``a.b`` when there is one,
    else ``a`` (as grimp and import-linter count it)."""
    import ast

    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(module: str | None, level: int) -> str:
        if not level:
            return module or ""
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[:len(base) - (level - 1)]
        return ".".join([*base, module] if module else base)

    def visit(body: list) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = resolve(node.module, node.level)
                for a in node.names:
                    found.add(f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source)
            elif isinstance(node, ast.If):
                test = node.test
                if not (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
                        or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.AST):  # any other statement: the statements it holds
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                for case in getattr(node, "cases", []):
                    visit(case.body)

    visit(ast.parse(path.read_text(), str(path)).body)
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set(), "c": {"b"}}) == []


def test_no_import_cycle(tmp_path):
    """No two modules of the package import each other, directly or through others, whether
    the import runs when a module is imported or inside a function (issue #23: ``harness/figures``
    and ``harness/report.py`` did; ``data.base`` and ``data.cache``, and ``data.embedded`` and
    ``data.rendered``, did inside functions). Imports for type checks only are left out. The
    check itself finds a cycle that one more import would add, at the top or in a function."""
    modules = _package_modules(tmp_path)
    graph = {name: _imports(path, name, modules) for name, path in modules.items()}
    assert "harness.report.figures" in graph["harness.report"]  # the finder sees the package's imports
    assert "harness.data.cache" in graph["harness.data.base"]  # and those inside functions
    assert "harness.data.rendered" in graph["harness.data.embedded"]
    assert _cycles(graph) == []
    graph["harness.report.figures"].add("harness.report")  # what figures/__init__ imports for type checks only
    assert _cycles(graph) == [["harness.report", "harness.report.figures"]]
