"""Real servers on loopback for the scale-out tests: PostgreSQL (Debian's package, started
from a fresh data folder) and an MLflow tracking server with a PostgreSQL backend."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):  # the test set-up installs it
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], capture_output=True, env=env, timeout=900)
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as the `postgres` user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@contextmanager
def postgres_server(databases=("optuna", "mlflow")):
    """Yield a URL prefix postgresql://harness:secret@127.0.0.1:PORT/ with the given databases."""
    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (.ci/run installs Debian's postgresql package)")
        pytest.skip("PostgreSQL is not installed here (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    os.chmod(root, 0o777)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data, port = root / "data", free_port()
    pwfile = root / "pw"
    pwfile.write_text("secret\n")
    os.chmod(pwfile, 0o644)
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "harness", "-A", "md5",
                                 f"--pwfile={pwfile}"]), check=True, capture_output=True, timeout=120)
    server = subprocess.Popen(_as_postgres([str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root),
                                            "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {**os.environ, "PGPASSWORD": "secret"}
    try:
        deadline = time.time() + 60
        while subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                             capture_output=True).returncode != 0:
            assert time.time() < deadline and server.poll() is None, "PostgreSQL did not start"
            time.sleep(0.2)
        for db in databases:
            subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "harness", db],
                           env=env, check=True, capture_output=True, timeout=60)
        yield f"postgresql://harness:secret@127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path):
    """An `mlflow server` on loopback with the given backend store; yield its URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
                             "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        stop(proc)


def wait_healthy(url: str, proc: subprocess.Popen, headers: dict[str, str] | None = None,
                 timeout: float = 120) -> None:
    """Wait until the MLflow server ``proc`` at ``url`` answers its health check (with ``headers``)."""
    import urllib.request

    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(urllib.request.Request(url + "/health", headers=headers or {}),
                                        timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        assert time.time() < deadline and proc.poll() is None, "the MLflow server did not start"
        time.sleep(0.3)


def stop(proc: subprocess.Popen) -> None:
    """Terminate a server process (killed when it does not end within 30 s)."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
