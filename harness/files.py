"""Small file-system helpers shared by the study and the stores: an exclusive file lock and a
read-only look at the tables of a SQLite file."""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
from collections.abc import Iterator
from pathlib import Path

__all__ = ["exclusive_lock", "foreign_sqlite", "sqlite_tables"]


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created, with its folder, when missing): the
    processes of one machine (or of one shared folder whose file system supports it) take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sqlite_tables(path: Path) -> set[str]:
    """The table names of the SQLite file at ``path``, read without writing (opened read-only:
    never creates the file, never adds a table). Raises ``sqlite3.Error`` for a file that is
    not a SQLite database."""
    con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        return {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
    finally:
        con.close()


def foreign_sqlite(path: Path, marker: str) -> list[str]:
    """The tables of the SQLite file at ``path`` when it holds tables but not ``marker`` (the
    table that says the file is the store expected: another program's database, which Optuna or
    MLflow would otherwise fill with their own tables); empty when the file is missing, empty, or
    the expected store. Read-only. Raises ``sqlite3.Error`` for a file that is not SQLite."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    tables = sqlite_tables(path)
    return [] if not tables or marker in tables else sorted(tables)
