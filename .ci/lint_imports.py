"""``lint-imports`` (import-linter) on the package as a wheel lays it out.

The folders ``encodings/`` and ``models/`` are installed as ``harness.encodings`` and
``harness.models`` (pyproject's package-dir), so the import graph of ``harness/`` alone lacks
them. This copies ``harness/``, ``encodings/`` and ``models/`` of a checkout into one temporary
``harness`` package, as the wheel does, and runs ``lint-imports`` on it with the checkout's
``[tool.importlinter]`` contracts. Exit status: ``lint-imports``'s (0: every contract kept).

Usage: ``python .ci/lint_imports.py [CHECKOUT]`` (default: the checkout holding this file).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def stage(checkout: Path, dest: Path) -> Path:
    """Copy the checkout's package into ``dest/harness`` as the wheel lays it out; returns it."""
    package = dest / "harness"
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(checkout / "harness", package, ignore=skip)
    for folder in ("encodings", "models"):
        shutil.copytree(checkout / folder, package / folder, ignore=skip)
    return package


def lint_imports(checkout: Path) -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` on a staged copy of ``checkout``; its output is captured."""
    command = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if command is None:
        raise SystemExit("lint_imports: lint-imports not found (pip install -e '.[test]')")
    with tempfile.TemporaryDirectory(prefix="lint-imports-") as tmp:
        stage(checkout, Path(tmp))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")])))
        return subprocess.run([command, str(checkout / "pyproject.toml"), "--no-cache"],
                              cwd=tmp, env=env, capture_output=True, text=True, check=False)


def main(argv: list[str]) -> int:
    checkout = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent
    result = lint_imports(checkout)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
