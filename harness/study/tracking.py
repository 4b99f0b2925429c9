"""MLflow tracking: one experiment per study, one parent run per stage, one child run per trial.

Everything goes through ``MlflowClient`` with explicit run ids (no global active run), so
several worker processes can log to one experiment, and metrics go in batches.

A stage's parent run is opened (created, or re-opened as RUNNING on a re-run: never a
duplicate) and closed only by ``harness run`` (``harness.study.stages.run_study``, in the main
process, after its workers end): FINISHED when the stage completes, FAILED when the run
raises, KILLED on Ctrl-C. Standalone ``harness worker`` processes find the parent and log
their child runs under it, but never close it.

The checks of a tracking URI and :class:`TrackingError` are :mod:`harness.study.tracking_uri`;
this module re-exports them (their home before the split).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from harness.errors import HarnessError, db_url, os_reason, redact_url
from harness.files import sqlite_path
from harness.study.kept import Kept, KeptModelError, one_line
from harness.study.tracking_uri import (  # their home before the split
    HTTP_DEFAULTS,
    TRACKING_SCHEMES,
    TrackingError,
    _check_mlflow_store,
    check_reachable,
    check_tracking_uri,
    http_credentials,
)
from harness.schema import (
    EVALUATE,
    MODEL_ARTIFACTS,
    MODEL_META,
    MODEL_WEIGHTS,
    REPORT_ARTIFACTS,
    REPORT_SUFFIXES,
    T_CELL,
    T_PARENT,
    T_PARENT_RUN,
    T_STAGE,
    T_NOTE,
    T_KEPT_AS,
    T_STUDY,
    X_KIND,
    X_KIND_TRAINING,
)

__all__ = ["KeptModelError", "Tracker", "TrackingError", "check_reachable", "check_tracking_uri", "flatten"]


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


def _quoted(value: str) -> str | None:
    """``value`` as a string literal of an MLflow filter, or None when it holds both quotes
    (MLflow's filter strings have no escape)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return None


def _tag_is(key: str, value: str) -> tuple[str, bool]:
    """The filter clause "tag ``key`` is ``value``", and whether what it finds must be checked
    again (a value with both quotes is matched with LIKE, each quote or backslash as ``_``)."""
    literal = _quoted(value)
    if literal is not None:
        return f"tags.`{key}` = {literal}", False
    pattern = re.sub(r"""['"\\]""", "_", value)
    return f"tags.`{key}` LIKE '{pattern}'", True


def report_note(folder: Path, experiment_id: str, run_id: str) -> str:
    """The evaluate parent run's description (MLflow's ``mlflow.note.content``, Markdown shown on
    the run's page): the report's headline (``report.md`` up to its first section) and a link to
    ``report/report.html`` in the run's artifacts, which MLflow's artifact viewer shows, figures
    (PNG artifacts) inline."""
    md = Path(folder) / "report.md"
    text = md.read_text(encoding="utf-8") if md.is_file() else ""
    headline = text.split("\n## ")[0].strip()[:4000]  # a tag holds 5000 characters: the link stays
    page = f"{REPORT_ARTIFACTS}/report.html"
    link = f"#/experiments/{experiment_id}/runs/{run_id}/artifacts/{page}"
    note = f"{headline}\n\nThe full report: [{page}]({link}) (this run's artifacts; figures beside it)."
    return note


class Tracker:
    def __init__(self, tracking_uri: str, experiment: str, *, create: bool = True) -> None:
        """The MLflow experiment ``experiment`` at ``tracking_uri``, created when missing; with
        ``create=False`` the store and the experiment must exist (nothing is created or written).
        An http(s) URI's user info goes to MLflow as MLFLOW_TRACKING_USERNAME/PASSWORD."""
        for name in ("mlflow", "alembic"):  # table creation and migrations are not news
            logging.getLogger(name).setLevel(logging.WARNING)

        self.uri = tracking_uri
        shown = redact_url(tracking_uri)
        # a bad URI or a dead server: one line, not minutes of retries (an existing store's tables are read below)
        check_reachable(tracking_uri, probe_database=create)
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per error, no bars
        client_uri = tracking_uri
        if tracking_uri.lower().startswith(("http://", "https://")):
            client_uri, user, password = http_credentials(tracking_uri)
            if user is not None:  # how MLflow sends basic auth (it would not take the URI's user info off)
                os.environ["MLFLOW_TRACKING_USERNAME"] = user
                os.environ["MLFLOW_TRACKING_PASSWORD"] = password or ""
        elif not tracking_uri.startswith(("sqlite:", "file:", "databricks")):
            client_uri = db_url(tracking_uri)  # a password holding '@': percent-encoded for SQLAlchemy
        if not create and not tracking_uri.lower().startswith(("http://", "https://", "databricks", "file:")):
            _check_mlflow_store(client_uri)
        elif tracking_uri.startswith("sqlite:///"):  # check_reachable refused another program's database
            sqlite_path(tracking_uri).parent.mkdir(parents=True, exist_ok=True)
        self.client_uri = client_uri  # what MLflow's own functions are given (no user info in it)
        try:
            self.client = MlflowClient(tracking_uri=client_uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None and not create:
                raise TrackingError(f"MLflow tracking store {shown}: no experiment named {experiment!r}")
            if exp is None:
                artifacts = None
                if tracking_uri.startswith("sqlite:///"):
                    artifacts = (sqlite_path(tracking_uri).parent / "artifacts").resolve().as_uri()
                try:
                    self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts,
                                                                       tags={X_KIND: X_KIND_TRAINING})
                except mlflow.exceptions.MlflowException:  # another worker created it first
                    exp = self.client.get_experiment_by_name(experiment)
                    self.experiment_id = exp.experiment_id
            else:
                self.experiment_id = exp.experiment_id
            if create and exp is not None:  # an experiment written before it was tagged (or by hand)
                self.mark_training(exp)
        except HarnessError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to reach the store is the user's to fix
            detail = redact_url(str(exc).splitlines()[0]) if str(exc) else ""
            raise TrackingError(f"MLflow tracking store {shown}: cannot be used ({type(exc).__name__}: {detail})"
                                ) from None

    def mark_training(self, exp=None) -> None:
        """Tag the experiment as model training (:data:`harness.schema.X_KIND`), so that MLflow's
        UI opens it on its runs table; nothing is written when the tag is there already.
        ``run`` (through a creating tracker) and ``evaluate`` call it on existing experiments."""
        exp = exp or self.client.get_experiment(self.experiment_id)
        if exp.tags.get(X_KIND) != X_KIND_TRAINING:
            self.client.set_experiment_tag(self.experiment_id, X_KIND, X_KIND_TRAINING)

    def runs_page(self) -> str:
        """The MLflow UI's page of the experiment's runs table: at the tracking server for an
        http(s) URI, else at ``mlflow ui``'s default address. MLflow 3.17's UI opens an experiment
        on the page of its global workflow type (the sidebar's "GenAI | Model training" switch,
        GenAI unless picked), not on :data:`~harness.schema.X_KIND`: ``workflowType`` picks it.
        Sorted by its default (start time) the table folds every cell's run under its parent;
        sorted by run name (``orderByKey``) it lists each cell's run, with its Dataset and Models."""
        base = "http://127.0.0.1:5000"
        if self.uri.lower().startswith(("http://", "https://")):
            base = redact_url(http_credentials(self.uri)[0]).rstrip("/")
        return (f"{base}/#/experiments/{self.experiment_id}/runs?workflowType=machine_learning"
                "&orderByKey=tags.%60mlflow.runName%60&orderByAsc=true")

    # ------------------------------------------------------------------ runs
    def parent_run(self, study: str, stage: str, *, reopen: bool = False) -> str:
        """The parent run of ``stage``, created once and found again on a re-run; with
        ``reopen`` a closed one is set back to RUNNING (``harness run`` re-opens it)."""
        found = self.find_parent(study, stage)
        if found:
            if reopen and found.info.status != "RUNNING":
                self.client.update_run(found.info.run_id, status="RUNNING")
            return found.info.run_id
        run = self.client.create_run(self.experiment_id, run_name=f"{study}/{stage}", tags={
            T_STUDY: study, T_STAGE: stage, T_PARENT: "1"})
        return run.info.run_id

    def find_parent(self, study: str, stage: str):
        """The parent run of ``stage`` (an MLflow ``Run``), or None when there is none yet."""
        (study_is, again), (stage_is, again_stage) = _tag_is(T_STUDY, study), _tag_is(T_STAGE, stage)
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"{study_is} and {stage_is} and tags.`{T_PARENT}` = '1'",
            max_results=1000 if again or again_stage else 1,
        )
        return next((r for r in runs if r.data.tags.get(T_STUDY) == study and r.data.tags.get(T_STAGE) == stage), None)

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
        try:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and path.suffix in REPORT_SUFFIXES:
                    sub = path.parent.relative_to(folder).as_posix()
                    self.client.log_artifact(run_id, str(path), REPORT_ARTIFACTS + ("" if sub == "." else f"/{sub}"))
        except OSError as exc:  # a full disk under the artifact store: one line; the report folder stands
            raise TrackingError(f"the report could not be logged to MLflow run {run_id} ({os_reason(exc)}); the report "
                                f"itself is complete in {folder}") from None
        self.set_tags(run_id, {T_NOTE: report_note(folder, self.experiment_id, run_id)})
        return run_id

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_text(self, run_id: str, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(text, encoding="utf-8")
            self.client.log_artifact(run_id, str(path))

    def log_dataset(self, run_id: str, name: str, options: dict[str, Any], *, resolution: int,
                    regimes: list[str]) -> str:
        """The run's dataset as MLflow inputs (``mlflow.data``; the runs table's Dataset column): one
        input per split (context ``train``, ``val``, ``test``), each a one-row frame naming the dataset,
        its options' digest, the split's size (``num_<split>`` of the options, when it has one), the
        training resolution and the test regimes: it describes the images, it does not hold them; the
        options ride in the source. Input digests: ``<options digest>-<split>``. Returns the options' digest."""
        import hashlib
        import warnings

        import pandas as pd
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.entities import DatasetInput, InputTag

        canon = json.dumps(options, sort_keys=True, default=str)
        digest = hashlib.sha256(canon.encode()).hexdigest()[:8]
        source = CodeDatasetSource(tags={"harness.dataset": name, "harness.dataset_options": canon[:4000]})
        inputs = []
        for split in ("train", "val", "test"):
            size = options.get(f"num_{split}")
            frame = pd.DataFrame([{"dataset": name, "options_digest": digest, "split": split,
                                   "examples": -1 if size is None else int(size), "train_resolution": int(resolution),
                                   "regimes": ",".join(regimes)}])
            # one digest per split: MLflow keeps one input per (name, digest), whatever its context
            with warnings.catch_warnings():  # "integer columns cannot hold missing values": none are missing
                warnings.simplefilter("ignore", UserWarning)  # (said when the schema is inferred: both calls)
                ds = mlflow.data.from_pandas(frame, source=source, name=name, digest=f"{digest}-{split}")
                entity = ds._to_mlflow_entity()
            inputs.append(DatasetInput(entity, tags=[InputTag("mlflow.data.context", split)]))
        for attempt in range(3):  # workers adding one new dataset at once: MLflow reads, then inserts, so on a
            try:  # database store one meets the other's row (a unique violation); the next try finds it and links it
                self.client.log_inputs(run_id, datasets=inputs)
                break
            except mlflow.exceptions.MlflowException as exc:
                if attempt == 2 or not re.search(r"IntegrityError|UniqueViolation|UNIQUE constraint", str(exc)):
                    raise
                time.sleep(0.2 * (attempt + 1))
        return digest

    def log_model(self, run_id: str, state_dict: dict, meta: dict[str, Any], example) -> str:
        """A trained model as the run's logged model ``model`` in MLflow's PyTorch flavour
        (:mod:`harness.study.kept`: the ``torch.export`` graph and ``model.json``; ``example``, a batch of
        images at the training size, is its input example). Returns where it is: ``models:/<id>``.
        A model the flavour cannot save (``torch.export`` cannot trace a plugin's Python) is kept
        in the previous format, the run's ``model/weights.pt`` and ``model/model.json``, with the
        reason in the run's tag :data:`~harness.schema.T_KEPT_AS` and a warning."""
        from mlflow.entities import LoggedModelOutput, LoggedModelStatus
        from mlflow.models import Model

        from harness.study import kept

        logged = self.client.create_logged_model(self.experiment_id, name=MODEL_ARTIFACTS, source_run_id=run_id)
        mlflow_model = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id,
                             model_id=logged.model_id)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / MODEL_ARTIFACTS
            try:
                kept.save(folder, state_dict, meta, example, mlflow_model)
            except Exception as exc:  # noqa: BLE001 - an untraceable model is kept as its weights
                # deleted, not left FAILED: MLflow would look into it for the run's "model/" artifacts
                self.client.delete_logged_model(logged.model_id)
                if isinstance(exc, OSError):  # a full disk: the run fails
                    raise
                why = f"the PyTorch flavour could not save it ({one_line(exc)})"
                print(f"warning: run {run_id}: model kept as {MODEL_ARTIFACTS}/{MODEL_WEIGHTS}: {why}",
                      file=sys.stderr, flush=True)
                kept.save_weights(Path(tmp) / "weights", state_dict, meta)
                self.client.log_artifacts(run_id, str(Path(tmp) / "weights"), MODEL_ARTIFACTS)
                self.set_tags(run_id, {T_KEPT_AS: f"{MODEL_ARTIFACTS}/{MODEL_WEIGHTS}: {why}"})
                return f"runs:/{run_id}/{MODEL_ARTIFACTS}"
            self.client.log_model_artifacts(logged.model_id, str(folder))
        self.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        return f"models:/{logged.model_id}"

    def kept_model(self, run_id: str):
        """The run's logged model ``model`` (an MLflow ``LoggedModel``, READY), or None (a run of
        an earlier version, or a model kept as weights)."""
        from mlflow.entities import LoggedModelStatus

        outputs = self.client.get_run(run_id).outputs
        for out in (outputs.model_outputs if outputs else None) or []:
            logged = self.client.get_logged_model(out.model_id)
            if logged.name == MODEL_ARTIFACTS and logged.status == LoggedModelStatus.READY:
                return logged
        return None

    def load_model(self, run_id: str, dst: Path) -> Kept | None:
        """The :class:`~harness.study.kept.Kept` ``(state, meta, weights)`` of the model a run kept,
        downloaded under ``dst`` (``weights`` names the file the state came from): its logged
        model, loaded through ``mlflow.pytorch.load_model`` (:func:`harness.study.kept.read`), or the
        previous format's ``model/`` artifacts; None when the run kept no model (trained before
        models were kept). A kept model that cannot be read raises :class:`KeptModelError`."""
        import mlflow.artifacts

        from harness.study import kept

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per cell is noise
        dst = Path(dst)
        dst.mkdir(parents=True, exist_ok=True)
        logged = self.kept_model(run_id)
        if logged is not None:
            return kept.read(Path(mlflow.artifacts.download_artifacts(
                artifact_uri=logged.artifact_location, dst_path=str(dst), tracking_uri=self.client_uri)))
        names = {Path(f.path).name for f in self.client.list_artifacts(run_id, MODEL_ARTIFACTS)}
        if not {MODEL_WEIGHTS, MODEL_META} <= names:
            return None
        return kept.read_weights(Path(self.client.download_artifacts(run_id, MODEL_ARTIFACTS, str(dst))))

    def end(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def status(self, run_id: str) -> str:
        """The run's status: RUNNING, FINISHED, FAILED, KILLED."""
        return self.client.get_run(run_id).info.status

    def runs(self, study: str, stage: str | None = None, status: str | None = None, cell: str | None = None) -> list:
        """Child runs of a study (optionally of one stage, one status, one cell)."""
        wanted = {T_STUDY: study, T_STAGE: stage, T_CELL: cell}
        clauses = [_tag_is(key, value)[0] for key, value in wanted.items() if value]
        clauses.insert(1, f"tags.`{T_PARENT}` != '1'")
        if status:
            clauses.append(f"attributes.status = {_quoted(status)}")
        f = " and ".join(clauses)
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=f, max_results=1000, page_token=token)
            out.extend(r for r in page if all(r.data.tags.get(k) == v for k, v in wanted.items() if v))
            token = page.token
            if not token:
                return out
