"""Griffe extension: the API reference finds ``harness.encodings`` and ``harness.models``.

The package maps two folders at the repository root into ``harness`` (pyproject's
``package-dir``: ``encodings/`` is installed as ``harness.encodings``, ``models/`` as
``harness.models``, since ``encodings`` is also a standard-library package). Griffe, which
mkdocstrings uses to read the sources without importing them, looks for subpackages inside
the ``harness/`` folder only; this extension adds each mapped subpackage that it did not find,
from the folder Python's import system names for it (an editable install's mapping or a
wheel's real subfolder alike). Nothing is imported but ``harness`` itself (torch-free).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import griffe

#: the subpackages of ``harness`` that live outside the ``harness/`` folder in a source tree
MAPPED = ("encodings", "models")


class PackageLayout(griffe.Extension):
    """Load each of :data:`MAPPED` into the ``harness`` package as Griffe loads it."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name != "harness":
            return
        for name in MAPPED:
            if name in pkg.members:  # a wheel's layout: griffe found it in harness/
                continue
            spec = importlib.util.find_spec(f"harness.{name}")
            if spec is None or not spec.submodule_search_locations:
                continue
            folder = Path(list(spec.submodule_search_locations)[0])
            sub = loader._load_module(name, folder / "__init__.py", submodules=False, parent=pkg)
            pkg.set_member(name, sub)
            for path in sorted(folder.glob("*.py")):
                if path.stem != "__init__":
                    sub.set_member(path.stem, loader._load_module(path.stem, path, submodules=False, parent=sub))
