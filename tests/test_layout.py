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


def _lint_imports():
    spec = importlib.util.spec_from_file_location("ci_lint_imports", ROOT / ".ci" / "lint_imports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lint_imports


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
