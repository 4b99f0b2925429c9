"""MLflow tracking: one experiment per study, one parent run per stage, one child run per trial.

Everything goes through ``MlflowClient`` with explicit run ids (no global active run), so
several worker processes can log to one experiment, and metrics go in batches.

A stage's parent run is opened (created, or re-opened as RUNNING on a re-run: never a
duplicate) and closed only by ``harness run`` (``harness.study.run_study``, in the main
process, after its workers end): FINISHED when the stage completes, FAILED when the run
raises, KILLED on Ctrl-C. Standalone ``harness worker`` processes find the parent and log
their child runs under it, but never close it.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from harness.errors import HarnessError, redact_url
from harness.schema import (
    EVALUATE,
    REPORT_ARTIFACTS,
    REPORT_SUFFIXES,
    T_CELL,
    T_PARENT,
    T_PARENT_RUN,
    T_STAGE,
    T_STUDY,
)

__all__ = ["Tracker", "TrackingError", "check_reachable", "flatten"]


class TrackingError(HarnessError):
    """The tracking store cannot be reached or written."""


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    """Nested mapping -> {"a.b": "value"} with values as strings (MLflow params)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return out


def check_reachable(tracking_uri: str, timeout: float = 10.0) -> None:
    """An http(s) tracking server must answer its health check, quickly (MLflow's own client
    would retry for minutes)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout) as r:
            if r.status != 200:
                raise TrackingError(f"MLflow tracking server {redact_url(tracking_uri)}: health check answered {r.status}")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(f"MLflow tracking server {redact_url(tracking_uri)} does not answer ({reason})") from None


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str, *, create: bool = True) -> None:
        for name in ("mlflow", "alembic"):  # table creation and migrations are not news
            logging.getLogger(name).setLevel(logging.WARNING)

        self.uri = tracking_uri
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client = MlflowClient(tracking_uri=tracking_uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None and not create:
                raise TrackingError(f"MLflow tracking store {tracking_uri}: no experiment named {experiment!r}")
            if exp is None:
                artifacts = None
                if tracking_uri.startswith("sqlite:///"):
                    artifacts = (Path(tracking_uri[len("sqlite:///"):]).parent / "artifacts").resolve().as_uri()
                try:
                    self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)
                except mlflow.exceptions.MlflowException:  # another worker created it first
                    self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
            else:
                self.experiment_id = exp.experiment_id
        except HarnessError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to reach the store is the user's to fix
            raise TrackingError(f"MLflow tracking store {redact_url(tracking_uri)}: cannot be used ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''})") from None

    # ------------------------------------------------------------------ runs
    def parent_run(self, study: str, stage: str, *, reopen: bool = False) -> str:
        """The parent run of ``stage``, created once and found again on a re-run; with
        ``reopen`` a closed one is set back to RUNNING (``harness run`` re-opens it)."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{T_STUDY}` = '{study}' and tags.`{T_STAGE}` = '{stage}' "
                          f"and tags.`{T_PARENT}` = '1'",
            max_results=1,
        )
        if runs:
            if reopen and runs[0].info.status != "RUNNING":
                self.client.update_run(runs[0].info.run_id, status="RUNNING")
            return runs[0].info.run_id
        run = self.client.create_run(self.experiment_id, run_name=f"{study}/{stage}", tags={
            T_STUDY: study, T_STAGE: stage, T_PARENT: "1"})
        return run.info.run_id

    def child_run(self, parent_id: str, name: str, *, study: str, stage: str, params: dict[str, Any],
                  tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=name, tags={
            T_PARENT_RUN: parent_id, T_STUDY: study, T_STAGE: stage, T_PARENT: "0", **tags})
        flat = {k: v[:6000] for k, v in flatten(params).items()}
        items = [Param(k, v) for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run.info.run_id, params=items[i:i + 100])
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None) -> None:
        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i:i + 500])

    def log_series(self, run_id: str, key: str, values: dict[int, float]) -> None:
        """One metric ``key`` at several steps (``{step: value}``), e.g. accuracy against resolution."""
        ts = int(time.time() * 1000)
        items = [Metric(key, float(v), ts, int(step)) for step, v in sorted(values.items())]
        for i in range(0, len(items), 500):
            self.client.log_batch(run_id, metrics=items[i:i + 500])

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Parameters (nested mappings flattened, values cut to MLflow's 6000 characters); the
        keys the run already has are left alone (MLflow parameters cannot change)."""
        have = self.client.get_run(run_id).data.params
        items = [Param(k, v[:6000]) for k, v in flatten(params).items() if k not in have]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_files(self, run_id: str, paths: list[Path], artifact_path: str | None = None) -> None:
        """Files as artifacts of the run (under ``artifact_path``)."""
        for path in paths:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def log_report(self, study: str, folder: Path) -> str:
        """The report files of ``folder`` (``report.html``, ``report.md``, the CSVs and the
        figures) as artifacts of the study's evaluate parent run, under ``report/``; returns the run id."""
        run_id = self.parent_run(study, EVALUATE)
        folder = Path(folder)
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix in REPORT_SUFFIXES:
                sub = path.parent.relative_to(folder).as_posix()
                self.client.log_artifact(run_id, str(path), REPORT_ARTIFACTS + ("" if sub == "." else f"/{sub}"))
        return run_id

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_text(self, run_id: str, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            self.client.log_artifact(run_id, str(path))

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def status(self, run_id: str) -> str:
        """The run's status: RUNNING, FINISHED, FAILED, KILLED."""
        return self.client.get_run(run_id).info.status

    def runs(self, study: str, stage: str | None = None, status: str | None = None, cell: str | None = None) -> list:
        """Child runs of a study (optionally of one stage, one status, one cell)."""
        f = f"tags.`{T_STUDY}` = '{study}' and tags.`{T_PARENT}` != '1'"
        if stage:
            f += f" and tags.`{T_STAGE}` = '{stage}'"
        if cell:
            f += f" and tags.`{T_CELL}` = '{cell}'"
        if status:
            f += f" and attributes.status = '{status}'"
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=f, max_results=1000, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out
