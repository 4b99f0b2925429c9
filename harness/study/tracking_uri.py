"""The tracking URI, checked before anything is written: :func:`check_tracking_uri` (a URI MLflow
can use as a store), :func:`check_reachable` (and, for an http(s) tracking server, one that
answers its health check, quickly; a SQLite file that is another program's database is
refused), :func:`http_credentials` (the user and password of an http(s) URI, sent as basic
auth) and the check that an existing store is MLflow's, for a tracker that must not create one.

The tracker that logs to the store is :mod:`harness.study.tracking`.
"""

from __future__ import annotations

import base64
import os
import re
import urllib.error
import urllib.request
from urllib.parse import unquote

from harness.errors import HarnessError, db_url, redact_url, split_userinfo
from harness.files import refuse_foreign_sqlite, sqlite_path, store_tables

__all__ = ["HTTP_DEFAULTS", "TRACKING_SCHEMES", "TrackingError", "check_reachable", "check_tracking_uri",
           "http_credentials"]


class TrackingError(HarnessError):
    """The tracking store cannot be reached or written."""


#: MLflow's HTTP client retries a request 7 times with a backoff factor of 2 and waits 120 s
#: for each answer: minutes before a dead server is reported. These apply unless set.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
#: the schemes of a tracking URI (a database's may name its driver: postgresql+psycopg2)
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "file")


def check_tracking_uri(tracking_uri: str) -> None:
    """Refuse a tracking URI MLflow cannot use as a store, before anything is written."""
    shown = redact_url(tracking_uri)
    if tracking_uri == "databricks":
        return
    m = re.match(r"([A-Za-z][A-Za-z0-9.+-]*)://(.*)\Z", tracking_uri, re.DOTALL)
    if not m:
        raise TrackingError(f"MLflow tracking URI {shown!r}: expected a URI such as sqlite:///path/mlflow.db, "
                            "http://host:5000 or postgresql://user@host/db")
    scheme, rest = m.group(1).lower(), m.group(2)
    base, _, driver = scheme.partition("+")
    if base not in TRACKING_SCHEMES or (driver and base not in ("postgresql", "mysql", "mssql")):
        raise TrackingError(f"MLflow tracking URI {shown!r}: unknown scheme {scheme!r} (expected "
                            f"{', '.join(TRACKING_SCHEMES[:-1])}, or file with MLFLOW_ALLOW_FILE_STORE=true)")
    if base == "file" and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("1", "true"):
        raise TrackingError(f"MLflow tracking URI {shown!r}: MLflow refuses its file store unless "
                            "MLFLOW_ALLOW_FILE_STORE=true; use sqlite:///path/mlflow.db")
    if base == "sqlite":
        path = rest[1:].split("?")[0] if rest.startswith("/") else ""
        if not path or path == ":memory:":
            raise TrackingError(f"MLflow tracking URI {shown!r}: expected sqlite:///path/to/mlflow.db "
                                "(an in-memory database keeps nothing)")
    if base in ("http", "https"):
        where = split_userinfo(tracking_uri)[0][len(scheme) + 3:]
        if not re.match(r"(\[[^\]]+\]|[^/?#:@\s]+)(:\d+)?([/?#]\S*)?\Z", where):
            raise TrackingError(f"MLflow tracking URI {shown!r}: expected {scheme}://[user:password@]host[:port]")


def http_credentials(tracking_uri: str) -> tuple[str, str | None, str | None]:
    """``(uri without user info, user, password)`` of an http(s) tracking URI, percent-decoded
    (``http://user:pa%40ss@host`` has the password ``pa@ss``)."""
    bare, user, password = split_userinfo(tracking_uri)
    return bare, None if user is None else unquote(user), None if password is None else unquote(password)


def check_reachable(tracking_uri: str, timeout: float = 10.0, *, probe_database: bool = True) -> None:
    """A tracking URI MLflow can use (:func:`check_tracking_uri`; a SQLite file that is another
    program's database, or that cannot be made where it is named, is refused); an http(s)
    tracking server must also answer its health check, and a database server (PostgreSQL,
    MySQL, ...) take a connection, quickly: MLflow's own client would retry for minutes, and the
    caller would have written its Optuna storage by then (``probe_database`` False: the caller
    reads the database's tables next, which connects anyway). The URI's user info is sent as
    HTTP basic auth, as MLflow sends it."""
    check_tracking_uri(tracking_uri)
    shown = redact_url(tracking_uri)
    if tracking_uri.startswith("sqlite:///"):  # before anything is written: never another program's database
        refuse_foreign_sqlite(sqlite_path(tracking_uri), "experiments", f"MLflow tracking store {shown}",
                              "an MLflow tracking store", TrackingError)
    if not tracking_uri.lower().startswith(("http://", "https://")):
        if probe_database and not tracking_uri.startswith(("sqlite:", "file:", "databricks")) and "://" in tracking_uri:
            _database_tables(db_url(tracking_uri), timeout)
        return
    bare, user, password = http_credentials(tracking_uri)
    request = urllib.request.Request(bare.rstrip("/") + "/health")
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            if r.status != 200:
                raise TrackingError(f"MLflow tracking server {shown}: health check answered {r.status}")
    except urllib.error.HTTPError as exc:
        hint = " (wrong or missing user and password?)" if exc.code in (401, 403) else ""
        raise TrackingError(f"MLflow tracking server {shown}: health check answered {exc.code}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = redact_url(str(getattr(exc, "reason", exc)))
        raise TrackingError(f"MLflow tracking server {shown} does not answer ({reason})") from None


def _check_mlflow_store(uri: str) -> None:
    """An MLflow store exists at database ``uri``: looked at without writing (MLflow would add
    its tables to a user's unrelated database, or create an empty store)."""
    shown = redact_url(uri)
    if uri.startswith("sqlite:///"):
        path = sqlite_path(uri)
        if not path.is_file():
            raise TrackingError(f"MLflow tracking store {shown}: no such file")
        tables = store_tables(path, f"MLflow tracking store {shown}", TrackingError)
    else:
        tables = _database_tables(uri)
    missing = {"experiments", "runs", "alembic_version"} - tables
    if missing:
        raise TrackingError(f"MLflow tracking store {shown}: not an MLflow tracking store (no table "
                            f"{', '.join(sorted(missing))}); left as it is")


def _database_tables(uri: str, timeout: float = 10.0) -> set[str]:
    """The table names of the database server's store at ``uri`` (a SQLAlchemy URL), read
    without writing; :class:`TrackingError` (one line, the password masked) when it cannot be
    reached within ``timeout`` seconds or refuses the connection."""
    import sqlalchemy

    shown = redact_url(uri)
    args = {"connect_timeout": int(timeout)} if uri.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args)
        try:
            return set(sqlalchemy.inspect(engine).get_table_names())
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - an unreachable database is the user's to fix
        detail = redact_url(str(exc).splitlines()[0]) if str(exc) else ""
        raise TrackingError(f"MLflow tracking store {shown}: cannot be used ({type(exc).__name__}: {detail})"
                            ) from None
