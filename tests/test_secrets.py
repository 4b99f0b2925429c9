"""Secrets never leak (issue 14): URLs are redacted by parsing them (user info up to the last
``@``, password query parameters, URLs inside messages), connections use the real URL, and a
real run against credential-bearing stores writes and prints no password anywhere.

The end-to-end tests run the real commands against a local MLflow server behind HTTP basic auth
and (when installed) a real PostgreSQL whose password holds a space, an ``@`` and a ``:``, then
grep every output stream and every file written (output, reports, the stores, the artifacts)."""

from __future__ import annotations

import base64
import http.server
import os
import subprocess
import sys
import textwrap
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.errors import db_url, redact_url, scrub, split_userinfo
from harness.spec import load_spec
from harness.tracking import TrackingError, check_reachable, flatten
from tests.helpers import SMOKE, TINY, cli, harness



# ------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize("url, shown", [
    ("postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:pa ss@wo:rd@h:5432/db", "postgresql://u:***@h:5432/db"),  # '@', ' ' and ':' in it
    ("http://al ice:tr@ck pa:ss@127.0.0.1:5000", "http://al ice:***@127.0.0.1:5000"),
    ("postgresql://u@h/db?password=pa ss@wo:rd", "postgresql://u@h/db?password=***"),
    ("postgresql://h/db?sslmode=require&PASSWD=x1y2z3&user=u", "postgresql://h/db?sslmode=require&PASSWD=***&user=u"),
    ("mysql://h/db?pwd=abc", "mysql://h/db?pwd=***"),
    ("http://u:pw@host/x?email=a@b", "http://u:***@host/x?email=a@b"),
    ("http://u:p/w@host/db", "http://u:***@host/db"),
    ("mysql://u:p%40ss@h/db", "mysql://u:***@h/db"),
    ("sqlite:////tmp/a@b/x.db", "sqlite:////tmp/a@b/x.db"),  # no user info: a path left alone
    ("http://host:5000", "http://host:5000"),
])
def test_redact_url_parses_the_url(url, shown):
    assert redact_url(url) == shown


def test_urls_inside_messages_are_redacted():
    msg = ("Optuna storage postgresql://u:pa ss@wo:rd@127.0.0.1:5432/optuna: cannot be used "
           "(OperationalError: see http://bob:t0ps3cret@mlflow:5000/x and sqlite:////a@b/c.db)")
    out = redact_url(msg)
    assert out == ("Optuna storage postgresql://u:***@127.0.0.1:5432/optuna: cannot be used "
                   "(OperationalError: see http://bob:***@mlflow:5000/x and sqlite:////a@b/c.db)")
    assert redact_url("refused: http://h/db?user=u&password=abcd9: bad") == \
        "refused: http://h/db?user=u&password=*** bad"
    # a password seen once is hidden wherever a message quotes it (even cut from its URL)
    redact_url("postgresql://u:Zq9 x@Wv@h/db")
    assert scrub('could not translate host name "Zq9 x@Wv" to address') == \
        'could not translate host name "***" to address'


def test_connections_get_the_real_credentials():
    assert split_userinfo("http://al ice:tr@ck pa:ss@127.0.0.1:5000/") == ("http://127.0.0.1:5000/", "al ice",
                                                                          "tr@ck pa:ss")
    from sqlalchemy.engine import make_url

    url = make_url(db_url("postgresql://harness:pa ss@wo:rd@127.0.0.1:5432/optuna"))
    assert (url.username, url.password, url.host, url.port, url.database) == \
        ("harness", "pa ss@wo:rd", "127.0.0.1", 5432, "optuna")
    url = make_url(db_url("postgresql://harness@127.0.0.1:5432/optuna?password=pa ss@wo:rd"))
    assert url.host == "127.0.0.1" and url.query["password"] == "pa ss@wo:rd"


def test_resolved_spec_carries_redacted_urls_and_the_digest_ignores_them():
    a = load_spec(SMOKE, ["storage=postgresql://alice:hun ter@2@db.example:5432/optuna",
                          "tracking_uri=http://bob:pa@55 x@mlflow.example:5000"])
    b = load_spec(SMOKE, ["storage=postgresql://alice:other@db.example:5432/optuna?password=zz9y8x",
                          "tracking_uri=http://bob:else@mlflow.example:5000"])
    assert a.storage_url() == "postgresql://alice:hun ter@2@db.example:5432/optuna"  # what connects keeps it
    assert a.tracking() == "http://bob:pa@55 x@mlflow.example:5000"
    logged = " ".join(flatten(a.resolved).values()) + " ".join(flatten(b.resolved).values())
    for secret in ("hun ter", "ter@2", "pa@55", "55 x", "other", "zz9y8x", "else"):
        assert secret not in logged
    assert a.resolved["storage"] == "postgresql://alice:***@db.example:5432/optuna"
    assert a.resolved["tracking_uri"] == "http://bob:***@mlflow.example:5000"
    assert a.digest() == b.digest()  # operational keys: not part of what is computed


# ------------------------------------------------------------------------------ servers
@contextmanager
def health_server(user: str, password: str):
    """A tiny http server answering /health only to ``user:password`` (HTTP basic auth)."""
    want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            ok = self.headers.get("Authorization") == want
            self.send_response(200 if ok and self.path == "/health" else 401 if not ok else 404)
            self.end_headers()
            self.wfile.write(b"OK" if ok else b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def test_check_reachable_sends_basic_auth():
    with health_server("al ice", "tr@ck pa:ss") as port:
        check_reachable(f"http://al ice:tr@ck pa:ss@127.0.0.1:{port}")  # was: "Name or service not known"
        check_reachable(f"http://al%20ice:tr%40ck%20pa%3Ass@127.0.0.1:{port}/")  # percent-encoded alike
        with pytest.raises(TrackingError, match="answered 401") as err:
            check_reachable(f"http://al ice:wr@ng pw@127.0.0.1:{port}")
        assert "wr@ng" not in str(err.value) and "ng pw" not in str(err.value)


_AUTH_MLFLOW = textwrap.dedent('''
    import base64, os, sys
    port, backend, artifacts, user, password = sys.argv[1:6]
    os.environ.update({"_MLFLOW_SERVER_FILE_STORE": backend, "_MLFLOW_SERVER_ARTIFACT_ROOT": "mlflow-artifacts:/",
                       "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true", "_MLFLOW_SERVER_ARTIFACT_DESTINATION": artifacts})
    from mlflow.server import app
    from werkzeug.serving import make_server
    want = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def guarded(environ, start_response):
        if environ.get("HTTP_AUTHORIZATION") != want:
            start_response("401 Unauthorized", [("WWW-Authenticate", "Basic"), ("Content-Length", "0")])
            return [b""]
        return app.wsgi_app(environ, start_response)

    make_server("127.0.0.1", int(port), guarded, threaded=True).serve_forever()
''')


@contextmanager
def mlflow_behind_basic_auth(root: Path, user: str, password: str):
    """An MLflow tracking server (SQLite store, proxied artifacts, all under ``root``) that
    answers only requests with HTTP basic auth ``user:password``; yields its port."""
    from tests.servers import free_port, stop, wait_healthy

    port = free_port()
    script = root / "auth_mlflow.py"
    script.write_text(_AUTH_MLFLOW)
    proc = subprocess.Popen([sys.executable, str(script), str(port), f"sqlite:///{root / 'mlflow.db'}",
                             str(root / "artifacts"), user, password],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, {"Authorization": f"Basic {token}"})
        yield port
    finally:
        stop(proc)


def _leaks(secrets: list[str], texts: dict[str, str], folders: list[Path]) -> list[str]:
    """Where any of ``secrets`` (as written, or percent-encoded) turns up: in ``texts`` (name ->
    text) or in the bytes of any file under ``folders``."""
    from urllib.parse import quote

    forms = {f for s in secrets for f in (s, quote(s, safe=""), quote(s))}
    found = [f"{name}: {f!r}" for name, text in texts.items() for f in forms if f in text]
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path}: {f!r}" for f in forms if f.encode() in data]
    return found


# ------------------------------------------------------------------------------ end to end
TRACK_USER, TRACK_PASSWORD = "al ice", "tr@ck pa:ss"
TRACK_SECRETS = [TRACK_PASSWORD, "tr@ck", "ck pa", "pa:ss"]


def test_run_report_train_with_a_basic_auth_tracking_server_leak_nothing(tmp_path, capsys, monkeypatch):
    """`run` (with its report), `report`, `train` and their errors, against an MLflow server
    behind basic auth whose password holds '@', ' ' and ':': accepted, and no password anywhere."""
    server_root, work = tmp_path / "server", tmp_path / "work"
    server_root.mkdir(), work.mkdir()
    with mlflow_behind_basic_auth(server_root, TRACK_USER, TRACK_PASSWORD) as port:
        uri = f"http://{TRACK_USER}:{TRACK_PASSWORD}@127.0.0.1:{port}"
        out = ["--set", f"output={work / 'runs'}"]
        streams = {}
        r = harness(work, "run", str(SMOKE), *out, *TINY, "--tracking-uri", uri)
        streams["run"] = r.stdout + r.stderr
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"mlflow ui --backend-store-uri http://{TRACK_USER}:***@127.0.0.1:{port}" in r.stdout
        r = cli(work, capsys, monkeypatch, "report", "--experiment", "nope", "--tracking-uri", uri)  # unknown
        streams["report unknown"] = r.stdout + r.stderr
        assert r.returncode == 2 and "no experiment named 'nope'" in r.stderr and ":***@" in r.stderr, r.stderr
        r = harness(work, "train", "--encoding", "none", "--spec", str(SMOKE), *out, *TINY, "--tracking-uri", uri)
        streams["train"] = r.stdout + r.stderr
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"--backend-store-uri http://{TRACK_USER}:***@127.0.0.1:{port}" in r.stdout
        r = cli(work, capsys, monkeypatch, "run", str(SMOKE), *out, *TINY, "--tracking-uri",
                uri.replace("pa:ss", "pa:sz"))
        streams["run, wrong password"] = r.stdout + r.stderr
        assert r.returncode == 2 and "answered 401" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        leaks = _leaks(TRACK_SECRETS + ["pa:sz"], streams, [work, server_root])
        assert not leaks, leaks
        assert (server_root / "artifacts").is_dir() and (work / "reports" / "smoke" / "report.html").is_file()


def _psql(bindir: Path, port: int, sql: str) -> None:
    env = {**os.environ, "PGPASSWORD": "secret"}
    subprocess.run([str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "harness", "-d", "optuna",
                    "-c", sql], env=env, check=True, capture_output=True, timeout=60)


def test_postgres_password_with_space_at_and_query_form_leaks_nothing(tmp_path, capsys, monkeypatch):
    """A full run on PostgreSQL whose password holds ' ', '@' and ':', given as ?password= and as
    user info; then `status`, and error lines with a wrong password: no password anywhere
    (outputs, spec.resolved.json, MLflow params and artifacts, the report, the Optuna tables)."""
    from tests.servers import _pg_bin, postgres_server

    password = "pa ss@wo:rd"
    with postgres_server(databases=("optuna", "empty")) as pg:
        port = int(pg.rsplit(":", 1)[1].strip("/"))
        bindir = _pg_bin()
        _psql(bindir, port, f"ALTER USER harness PASSWORD '{password}'")
        as_query = f"postgresql://harness@127.0.0.1:{port}/optuna?password={password}"
        as_userinfo = f"postgresql://harness:{password}@127.0.0.1:{port}/optuna"
        work = tmp_path / "work"
        work.mkdir()
        out = ["--set", f"output={work / 'runs'}"]
        streams = {}
        r = harness(work, "run", str(SMOKE), *out, *TINY, "--storage", as_query)
        streams["run"] = r.stdout + r.stderr
        assert r.returncode == 0, r.stderr[-3000:]
        r = harness(work, "status", str(SMOKE), *out, *TINY, "--storage", as_userinfo)
        streams["status"] = r.stdout + r.stderr
        assert r.returncode == 0 and "1 done" in r.stdout, r.stderr[-3000:]
        resolved = (work / "runs" / "smoke" / "spec.resolved.json").read_text()
        assert f"127.0.0.1:{port}/optuna?password=***" in resolved
        wrong = "wr ong@pw:x"
        for name, url in [("status, wrong password", as_userinfo.replace(password, wrong)),
                          ("worker, wrong query password", as_query.replace(password, wrong))]:
            r = cli(work, capsys, monkeypatch, name.split(",")[0], str(SMOKE), *out, *TINY, "--storage", url)
            streams[name] = r.stdout + r.stderr
            assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (name, r.stderr)
            assert "Traceback" not in r.stderr
        # status on an empty database: refused, no Optuna table created there
        empty = as_query.replace("/optuna?", "/empty?")
        r = cli(work, capsys, monkeypatch, "status", str(SMOKE), *out, *TINY, "--storage", empty)
        streams["status, empty"] = r.stdout + r.stderr
        assert r.returncode == 2 and "create it with `harness run` first" in r.stderr, r.stderr
        env = {**os.environ, "PGPASSWORD": password}
        dump = subprocess.run([str(bindir / "pg_dump"), "-h", "127.0.0.1", "-p", str(port), "-U", "harness", "optuna"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert dump.returncode == 0, dump.stderr
        streams["optuna tables (pg_dump)"] = dump.stdout
        tables = subprocess.run([str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "harness", "-d",
                                 "empty", "-Atc", "select count(*) from pg_tables where schemaname = 'public'"],
                                env=env, capture_output=True, text=True, timeout=60)
        assert tables.stdout.strip() == "0", tables
    leaks = _leaks([password, "pa ss", "wo:rd", "ss@wo", wrong, "wr ong", "ong@pw"], streams, [work])
    assert not leaks, leaks
    assert (work / "reports" / "smoke" / "report.html").is_file()
