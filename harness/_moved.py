"""The modules that moved into subpackages (issue #23), still importable by their old paths.

``import harness.report_stats``, ``from harness import train`` or ``mock.patch("harness.trial.x")``
give the moved module itself (the same object, so a patch through either path is seen by
both). The aliases are an import hook rather than a small module left at each old path:
git's rename detection carries a branch's edits of an old file over to its new place only
when the old path is gone, and a file left there would take those edits instead.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

# old import path -> where the module lives now
MOVED: dict[str, str] = {
    "harness.spec_sources": "harness.spec.sources",
    "harness.spec_memory": "harness.spec.memory",
    "harness.presets": "harness.spec.presets",
    "harness.design": "harness.spec.design",
    "harness.storage": "harness.study.storage",
    "harness.worker": "harness.study.worker",
    "harness.trial": "harness.study.trial",
    "harness.evaluate": "harness.study.evaluate",
    "harness.tracking": "harness.study.tracking",
    "harness.train": "harness.training.train",
    "harness.checkpoint": "harness.training.checkpoint",
    "harness.stopwatch": "harness.training.stopwatch",
    "harness.progress": "harness.training.progress",
    "harness.report_pages": "harness.report.pages",
    "harness.report_stats": "harness.report.stats",
    "harness.report_time": "harness.report.timing",
    "harness.report_answer": "harness.report.answer",
    "harness.comparisons": "harness.report.comparisons",
    "harness.selection": "harness.report.selection",
    "harness.analysis": "harness.report.analysis",
    "harness.show": "harness.cli.show",
    "harness.kept": "harness.study.kept",
    "harness.report_curves": "harness.report.curves",
}

# old package -> where it lives now; its modules move with it (harness.figures.plotting, ...)
MOVED_PACKAGES: dict[str, str] = {
    "harness.figures": "harness.report.figures",
}


def new_name(old: str) -> str | None:
    """Where the module of old import path ``old`` lives now; None if it did not move."""
    if old in MOVED:
        return MOVED[old]
    for package, moved in MOVED_PACKAGES.items():
        if old == package or old.startswith(package + "."):
            return moved + old[len(package):]
    return None


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path of :data:`MOVED` and loads it as the module at its new path."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if new_name(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}  # moved module -> its own spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(new_name(spec.name))
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the alias's spec on the moved module: give it its own back
        module.__spec__ = self._specs[module.__name__]


def install() -> None:
    """Put the alias finder first on ``sys.meta_path`` (once): first, so that a module of a moved
    package (``harness.figures.plotting``) is the moved one, not a second copy loaded from the
    package's folder."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Alias())
