"""Small file-system helpers shared by the study and the stores: an exclusive file lock, the file
a ``sqlite:///`` URL names, and a read-only look at the tables of a SQLite file (and why it failed)."""

from __future__ import annotations

import contextlib
import fcntl
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

__all__ = ["SQLITE_WAIT_S", "exclusive_lock", "refuse_foreign_sqlite", "sqlite_path", "sqlite_tables",
           "store_tables"]


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


#: seconds a read-only look at an SQLite file waits for another process's write lock: a healthy
#: writer holds it for milliseconds; one held longer belongs to a process paused or stuck mid-write
SQLITE_WAIT_S = 30.0


def sqlite_tables(path: Path) -> set[str]:
    """The table names of the SQLite file at ``path``, read without writing (opened read-only:
    never creates the file, never adds a table). Raises ``sqlite3.Error`` for a file that is
    not a SQLite database, or that another process keeps locked (:func:`store_tables` says which)."""
    con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=SQLITE_WAIT_S)
    try:
        return {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
    finally:
        con.close()


def store_tables(path: Path, store: str, error: type[Exception]) -> set[str]:
    """:func:`sqlite_tables` of a store's file, or ``error`` (one line, starting with ``store``)
    saying why it could not be read: another process held its lock past :data:`SQLITE_WAIT_S` (a
    worker paused, e.g. by Ctrl-Z or SIGSTOP, or stuck while writing), or it is not SQLite at all
    (left as it is)."""
    try:
        return sqlite_tables(path)
    except sqlite3.Error as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise error(f"{store}: locked by another process for over {SQLITE_WAIT_S:g} s ({exc}): a process "
                        "paused or stuck while writing to it holds the lock; let it continue or stop it, then run "
                        "again") from None
        raise error(f"{store}: not an SQLite database ({exc}); left as it is") from None


def sqlite_path(url: str) -> Path:
    """The file a ``sqlite:///`` URL names (its query dropped, percent-decoded)."""
    return Path(unquote(url[len("sqlite:///"):].split("?")[0]))


def refuse_foreign_sqlite(path: Path, marker: str, store: str, kind: str, error: type[Exception]) -> None:
    """Raise ``error`` (one line, starting with ``store``) when the existing SQLite file at
    ``path`` is not SQLite, or holds tables but not ``marker``, the table that says it is
    ``kind``: another program's database, which Optuna or MLflow would otherwise fill with their
    own tables; or when the file cannot be made there: ``path`` is a folder, or a file stands
    where one of its folders would be. A missing or empty file passes (the store creates it).
    Read-only."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{store}: {path} is a folder, not a database file")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise error(f"{store}: {folder} is a file, not a folder: the database {path} cannot be made there")
    if not path.is_file() or path.stat().st_size == 0:
        return
    tables = sorted(store_tables(path, store, error))
    if tables and marker not in tables:
        raise error(f"{store}: not {kind} but another database (tables {', '.join(tables[:5])}"
                    f"{', ...' if len(tables) > 5 else ''}); left as it is: name a new file or {kind}")
