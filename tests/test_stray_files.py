"""Nothing written before an error, nowhere it must not be, and no endless wait (issue 14):
a bad tracking URI, `status`/`worker` on a study that does not exist, `report` on a database
that is not an MLflow store, labels with quotes in MLflow filters, `report --baseline` for an
encoding the study lacks, a tracking server that does not answer, a grid no figure can show."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from pathlib import Path

import pytest

from harness.tracking import HTTP_DEFAULTS, Tracker, TrackingError, check_tracking_uri

from tests.helpers import SMOKE, TINY, cli, harness, one_line_error


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def user_database(path: Path) -> str:
    """A user's own SQLite database (nothing to do with the harness); returns its digest."""
    con = sqlite3.connect(path)
    con.execute("create table recipes (name text, stars int)")
    con.execute("insert into recipes values ('soup', 5)")
    con.commit()
    con.close()
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ tracking URIs
@pytest.mark.parametrize("uri, words", [
    ("foo://bar", ["unknown scheme 'foo'"]),
    ("nonsense path", ["expected a URI"]),
    ("sqlite://", ["in-memory"]),
    ("http://", ["expected http://"]),
])
def test_a_bad_tracking_uri_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, uri, words):
    before = files_under(tmp_path)
    r = cli(tmp_path, capsys, monkeypatch, "run", str(SMOKE), "--set", f"output={tmp_path / 'runs'}", *TINY,
            "--tracking-uri", uri)
    one_line_error(r, "MLflow tracking URI", *words)
    assert files_under(tmp_path) == before  # no optuna.db, no mlruns/, no runs/


def test_check_tracking_uri_accepts_the_stores_mlflow_takes():
    for uri in ("sqlite:///runs/x/mlflow.db", "sqlite:////abs/mlflow.db", "http://h:5000", "https://u:p@h/",
                "postgresql://u:p@h:5432/db", "postgresql+psycopg2://h/db", "mysql://h/db", "databricks"):
        check_tracking_uri(uri)
    for uri in ("sqlite+x:///a.db", "http+x://h", "file:///tmp/mlruns", "sqlite:///:memory:", "http://h:port"):
        with pytest.raises(TrackingError):
            check_tracking_uri(uri)


def test_mlflow_http_waits_are_bounded(tmp_path, monkeypatch):
    for key in HTTP_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # what the user sets is kept
    Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "e")
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7"
    assert int(os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 3


def test_report_and_train_against_a_closed_port_answer_at_once(tmp_path, capsys, monkeypatch):
    from tests.servers import free_port

    uri = f"http://127.0.0.1:{free_port()}"
    for args in (["report", "--experiment", "smoke", "--tracking-uri", uri],
                 ["train", "--encoding", "none", "--spec", str(SMOKE), "--set", f"output={tmp_path / 'runs'}",
                  *TINY, "--tracking-uri", uri]):
        start = time.monotonic()
        r = cli(tmp_path, capsys, monkeypatch, *args)  # hung for minutes in MLflow's retries before
        one_line_error(r, "does not answer")
        assert time.monotonic() - start < 45
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()


def test_show_refuses_a_grid_no_figure_can_show(tmp_path, capsys, monkeypatch):
    start = time.monotonic()
    r = cli(tmp_path, capsys, monkeypatch, "show", "sincos2d", "--grid", "1000x1000", "--out", str(tmp_path / "fig"))
    assert time.monotonic() - start < 30
    one_line_error(r, "1000x1000", "32")
    assert not (tmp_path / "fig").exists()


# ------------------------------------------------------------------------------ storages
@pytest.mark.parametrize("command", ["status", "worker"])
def test_status_and_worker_create_no_storage(tmp_path, capsys, monkeypatch, command):
    missing = tmp_path / "nothing" / "optuna.db"
    r = cli(tmp_path, capsys, monkeypatch, command, str(SMOKE), "--set", f"output={tmp_path / 'runs'}", "--storage",
                f"sqlite:///{missing}")
    one_line_error(r, str(missing))
    assert not missing.exists() and not missing.parent.exists()
    mine = tmp_path / "mine.db"
    digest = user_database(mine)
    r = cli(tmp_path, capsys, monkeypatch, command, str(SMOKE), "--set", f"output={tmp_path / 'runs'}",
            "--storage", f"sqlite:///{mine}")
    one_line_error(r, str(mine))
    assert hashlib.sha256(mine.read_bytes()).hexdigest() == digest  # a user's database is left as it is
    assert not (tmp_path / "runs").exists()


def test_a_store_another_process_keeps_locked_is_named_locked_not_foreign(tmp_path, capsys, monkeypatch):
    """A study's SQLite store that another process keeps locked (as a worker paused mid-write does,
    held here by an exclusive transaction): one line naming the store and the lock, not "not an
    SQLite database"; the store is left as it is, and usable once the lock is released."""
    import harness.files

    monkeypatch.setattr(harness.files, "SQLITE_WAIT_S", 0.2)  # the wait for the lock; 30 s by default
    out = ["--set", f"output={tmp_path / 'runs'}"]
    r = cli(tmp_path, capsys, monkeypatch, "run", str(SMOKE), *out, *TINY, "--workers", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    stores = {name: tmp_path / "runs" / "smoke" / f"{name}.db" for name in ("optuna", "mlflow")}
    storage = ["--storage", f"sqlite:///{stores['optuna']}"]
    for name, words, commands in (("optuna", ["Optuna storage"], ["status", "worker"]),
                                  ("mlflow", ["MLflow tracking store"], ["worker", "run"])):
        holder = sqlite3.connect(stores[name], isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            digest = hashlib.sha256(stores[name].read_bytes()).hexdigest()
            for command in commands:
                r = cli(tmp_path, capsys, monkeypatch, command, str(SMOKE), *out, *TINY,
                        *(storage if command != "run" else ["--workers", "0"]))
                one_line_error(r, *words, str(stores[name]), "locked by another process", "database is locked")
                assert "not an SQLite database" not in r.stderr
            assert hashlib.sha256(stores[name].read_bytes()).hexdigest() == digest
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    r = cli(tmp_path, capsys, monkeypatch, "status", str(SMOKE), *out, *TINY, *storage)
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli(tmp_path, capsys, monkeypatch, "run", str(SMOKE), *out, *TINY, "--workers", "0")  # the lock released
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("command", ["run", "train"])
def test_run_and_train_never_give_another_programs_database_their_tables(tmp_path, capsys, monkeypatch, command):
    """A user's own SQLite file, or the other store of the study, named as the Optuna storage
    or the MLflow tracking store: refused before anything is written, the file left as it is."""
    mine = tmp_path / "mine.db"
    digest = user_database(mine)
    out = ["--set", f"output={tmp_path / 'runs'}"]
    args = ["run", str(SMOKE), *out, *TINY, "--workers", "0"] if command == "run" else \
        ["train", "--spec", str(SMOKE), "--encoding", "none", *out, "--set", "train.epochs=1"]
    r = cli(tmp_path, capsys, monkeypatch, *args, "--tracking-uri", f"sqlite:///{mine}")
    one_line_error(r, "MLflow tracking store", str(mine), "not an MLflow tracking store", "(tables recipes)")
    if command == "run":
        r = cli(tmp_path, capsys, monkeypatch, *args, "--storage", f"sqlite:///{mine}")
        one_line_error(r, "Optuna storage", str(mine), "not an Optuna storage", "(tables recipes)")
        same = tmp_path / "both.db"
        r = cli(tmp_path, capsys, monkeypatch, *args, "--storage", f"sqlite:///{same}", "--tracking-uri",
                f"sqlite:///{same}")
        one_line_error(r, str(same), "same SQLite file")
        assert not same.exists()
    assert hashlib.sha256(mine.read_bytes()).hexdigest() == digest
    assert not (tmp_path / "runs").exists()
    if command == "run":  # a study's own stores, swapped: neither is given the other's tables
        r = cli(tmp_path, capsys, monkeypatch, "run", str(SMOKE), *out, *TINY, "--workers", "0")
        assert r.returncode == 0, r.stderr[-2000:]
        stores = {name: tmp_path / "runs" / "smoke" / f"{name}.db" for name in ("optuna", "mlflow")}
        digests = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in stores.items()}
        r = cli(tmp_path, capsys, monkeypatch, "run", str(SMOKE), *out, *TINY, "--workers", "0",
                "--storage", f"sqlite:///{stores['mlflow']}", "--tracking-uri", f"sqlite:///{tmp_path / 'new.db'}")
        one_line_error(r, "Optuna storage", "not an Optuna storage")
        r = cli(tmp_path, capsys, monkeypatch, "run", str(SMOKE), *out, *TINY, "--workers", "0",
                "--tracking-uri", f"sqlite:///{stores['optuna']}", "--storage", f"sqlite:///{tmp_path / 'new.db'}")
        one_line_error(r, "MLflow tracking store", "not an MLflow tracking store")
        assert {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in stores.items()} == digests
        assert not (tmp_path / "new.db").exists()


def test_report_never_touches_a_database_that_is_not_an_mlflow_store(tmp_path, capsys, monkeypatch):
    mine = tmp_path / "mine.db"
    digest = user_database(mine)
    r = cli(tmp_path, capsys, monkeypatch, "report", "--experiment", "smoke", "--tracking-uri", f"sqlite:///{mine}",
                "--out", str(tmp_path / "rep"))
    one_line_error(r, str(mine), "not an MLflow tracking store")
    assert hashlib.sha256(mine.read_bytes()).hexdigest() == digest
    missing = tmp_path / "none.db"
    r = cli(tmp_path, capsys, monkeypatch, "report", "--experiment", "smoke", "--tracking-uri", f"sqlite:///{missing}")
    one_line_error(r, str(missing))
    assert not missing.exists() and not (tmp_path / "rep").exists() and not (tmp_path / "reports").exists()


# ------------------------------------------------------------------------------ filters
def test_quotes_in_filter_values(tmp_path):
    from harness.schema import T_CELL, T_PARENT, T_PARENT_RUN, T_STAGE, T_STUDY

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for label in ["it's", 'say "hi"', "both ' and \"", "back\\slash_%"]:  # was: a traceback from the filter
        tracker = Tracker(uri, label)
        parent = tracker.parent_run(label, "evaluate")
        assert tracker.parent_run(label, "evaluate") == parent  # found again, not duplicated
        assert tracker.parent_run(label + "x", "evaluate") != parent
        for cell in (label, label + "x", "plain"):
            run = tracker.client.create_run(tracker.experiment_id, tags={
                T_STUDY: label, T_STAGE: "evaluate", T_PARENT: "0", T_PARENT_RUN: parent, T_CELL: cell})
            tracker.end(run.info.run_id)
        assert len(tracker.runs(label)) == 3
        found = tracker.runs(label, "evaluate", status="FINISHED", cell=label)
        assert [r.data.tags[T_CELL] for r in found] == [label], label


# ------------------------------------------------------------------------------ report --baseline
def test_report_baseline_must_be_an_encoding_of_the_study(tmp_path, capsys, monkeypatch):
    out = ["--set", f"output={tmp_path / 'runs'}"]
    r = harness(tmp_path, "run", str(SMOKE), *out, *TINY, "--no-report")
    assert r.returncode == 0, r.stderr[-3000:]
    r = cli(tmp_path, capsys, monkeypatch, "report", str(SMOKE), *out, *TINY, "--baseline", "nope",
            "--out", str(tmp_path / "rep"))
    one_line_error(r, "'nope'", "none")
    assert not (tmp_path / "rep").exists()
