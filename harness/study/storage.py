"""The Optuna side of a study: the storage, the stage studies, the queue of cells.

- :func:`open_storage` opens (and, for SQLite, creates) the storage; with a heartbeat every
  running trial records one, and a trial silent for three intervals is failed as stale;
- :func:`open_studies` creates or loads the stage studies, pinned to the spec's content hash;
- the evaluate stage is a queue: :func:`enqueue_cells` adds every cell that has no completed,
  waiting or running trial (and has failed at most ``max_retries`` times, interruptions not
  counted: :func:`counts_as_try`); :func:`taken`
  tells a worker that someone else owns the cell it popped;
- heartbeats and the reaper of dead workers' trials are :mod:`harness.study.heartbeats`.

A cell's trial carries the cell as its ``cell`` parameter (``Cell.key``, what the queue
reads), as the real parameters ``encoding`` (label), ``train_resolution`` and ``seed`` (what
optuna-dashboard plots; :func:`cell_distributions` are the distributions a worker asks with)
and as user attributes (``Cell.params()``). Every stage study names its objective
(``Study.set_metric_names``): ``test_acc_at_train_res`` for evaluate, ``val_acc`` for tune.
"""

from __future__ import annotations

import json
import uuid
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.config import StudySpec
from harness.errors import HarnessError, db_url, redact_url
from harness.files import refuse_foreign_sqlite, sqlite_path, store_tables
from harness.schema import (
    EVALUATE,
    O_CELL,
    OBJECTIVE_EVALUATE,
    OBJECTIVE_TUNE,
    P_ENCODING,
    P_SEED,
    P_TRAIN_RESOLUTION,
    T_FAIL_REASON,
    T_STAGE,
    T_STORAGE,
    T_STORAGE_ID,
    T_STUDY,
    T_TRIAL_NUMBER,
    TUNE,
    U_RUN_CLOSED,
    U_SPEC,
    U_SPEC_DIGEST,
    U_SPURIOUS,
    Cell,
)
from harness.spec import SpecError
from harness.study.heartbeats import REAPED_REASON, Heartbeat, reap_stale, reaped  # their home before the split
from harness.study.tracking import Tracker

__all__ = [
    "Heartbeat",
    "INTERRUPTED",
    "REAPED_REASON",
    "StorageError",
    "check_one_storage",
    "check_pinned",
    "cell_distributions",
    "cell_params",
    "counts_as_try",
    "enqueue_cells",
    "fail_reason",
    "failed_tries",
    "failures",
    "open_storage",
    "open_studies",
    "reap_stale",
    "reaped",
    "repair_runs",
    "storage_identity",
    "study_names",
    "taken",
    "trial_cell",
]

#: a random id given to the evaluate study when it is created: which storage a study's MLflow runs came from
U_STORAGE_ID = "harness.storage_id"


class StorageError(HarnessError):
    """The Optuna storage cannot be reached or used."""


def open_storage(url: str, heartbeat: int | None = None, *, create: bool = True) -> optuna.storages.RDBStorage:
    """The Optuna storage at ``url``; with ``heartbeat`` (seconds) every running trial records a
    heartbeat, and a trial silent for three intervals is failed as stale (its worker died).
    With ``create=False`` (``status``, ``worker``) the storage must exist: nothing is created,
    no file and no table. A password holding ``@`` or spaces is passed on as written."""
    kwargs: dict[str, Any] = {}
    shown = redact_url(url)
    if heartbeat:
        kwargs.update(heartbeat_interval=heartbeat, grace_period=3 * heartbeat)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        # the harness records heartbeats itself around ask/tell (see Heartbeat)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    if url.startswith("sqlite:///"):
        path = sqlite_path(url)
        if not create:
            _check_sqlite_storage(path, shown)
        else:
            # never Optuna's tables in another program's database (an MLflow store named by mistake)
            refuse_foreign_sqlite(path, "studies", f"Optuna storage {shown}", "an Optuna storage", StorageError)
            path.parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    else:
        url = db_url(url)  # a password holding '@': percent-encoded for SQLAlchemy
        try:
            import sqlalchemy.engine

            sqlalchemy.engine.make_url(url)
        except Exception:  # noqa: BLE001 - SQLAlchemy's message would quote a piece of the password
            raise StorageError(f"Optuna storage {shown}: not a database URL (expected "
                               "dialect://user:password@host:port/database; percent-encode a '?' or '#' "
                               "in the password)") from None
        if url.startswith(("postgresql://", "postgresql+psycopg2://")) and "connect_timeout=" not in url:
            kwargs["engine_kwargs"] = {"connect_args": {"connect_timeout": 10}}  # a silent host: not forever
    try:
        if not create and not url.startswith("sqlite:///"):
            import sqlalchemy

            engine = sqlalchemy.create_engine(url, **kwargs.get("engine_kwargs", {}))
            try:
                if not sqlalchemy.inspect(engine).has_table("studies"):
                    raise StorageError(f"Optuna storage {shown}: holds no Optuna study: "
                                       "create it with `harness run` first")
            finally:
                engine.dispose()
            kwargs["skip_table_creation"] = True
        return optuna.storages.RDBStorage(url, **kwargs)
    except HarnessError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unreachable or invalid storage is the user's to fix
        detail = redact_url(str(exc).splitlines()[0]) if str(exc) else ""
        hint = ""
        if isinstance(exc, ImportError) and url.startswith("postgres"):
            hint = " (install the PostgreSQL driver: pip install -e '.[postgres]')"
        raise StorageError(f"Optuna storage {shown}: cannot be used ({type(exc).__name__}: {detail}){hint}"
                           ) from None


def _check_sqlite_storage(path: Path, shown: str) -> None:
    """An Optuna storage exists in SQLite file ``path``: looked at read-only, nothing created."""
    if not path.is_file():
        raise StorageError(f"Optuna storage {shown}: no such file: create it with `harness run` first")
    tables = store_tables(path, f"Optuna storage {shown}", StorageError)
    if "studies" not in tables:
        raise StorageError(f"Optuna storage {shown}: holds no Optuna study (no table 'studies'); left as it is: "
                           "create it with `harness run` first")


def study_names(spec: StudySpec) -> dict[str, str]:
    """Stage key -> Optuna study name: the evaluate stage, and one tune study per
    (encoding, train resolution)."""
    names = {EVALUATE: f"{spec.name}/{EVALUATE}"}
    if spec.tune:
        for e in spec.encodings:
            for r in spec.train_resolutions:
                names[f"{TUNE}/{e.label}/r{r}"] = f"{spec.name}/{TUNE}/{e.label}/r{r}"
    return names


def open_studies(spec: StudySpec, storage, *, create: bool = True) -> dict[str, optuna.Study]:
    """Create (or, with ``create=False``, only load) the stage studies, pinned to the spec's
    content hash: a different spec under the same name is refused, naming what differs."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)} if not create else set()
    studies = {}
    for key, name in study_names(spec).items():
        sampler = None
        if key.startswith(TUNE):
            sampler = optuna.samplers.TPESampler(seed=spec.tune.seed, n_startup_trials=max(2, spec.tune.trials // 3))
        if not create and name not in existing:
            raise SpecError(f"{spec.source}: study {name!r} does not exist in storage "
                            f"{redact_url(spec.storage_url())}: create it with `harness run` first")
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                    sampler=sampler, pruner=_pruner(spec))
        check_pinned(spec, study)
        if study.user_attrs.get(U_SPEC_DIGEST) != spec.digest():
            # a new study, or one pinned before evaluation keys left the hash: (re-)pinned to this spec
            study.set_user_attr(U_SPEC_DIGEST, spec.digest())
            study.set_user_attr(U_SPEC, json.dumps(spec.resolved, default=str))
        if key == EVALUATE and create and U_STORAGE_ID not in study.user_attrs:  # see storage_identity
            study.set_user_attr(U_STORAGE_ID, uuid.uuid4().hex)
        if create and study.metric_names is None:
            with warnings.catch_warnings():  # experimental in some Optuna versions
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([OBJECTIVE_TUNE if key.startswith(TUNE) else OBJECTIVE_EVALUATE])
        studies[key] = study
    return studies


def check_pinned(spec: StudySpec, study: optuna.Study) -> None:
    """Refuse ``spec`` for a study pinned to another spec's content hash, naming the keys that
    differ (``run``, ``worker``, ``status`` and ``evaluate`` alike, through :func:`open_studies`).
    A study pinned to no spec, or to this spec's hash from before evaluation keys left it, passes."""
    pinned = study.user_attrs.get(U_SPEC_DIGEST)
    if pinned is not None and pinned not in (spec.digest(), spec.digest(legacy=True)):
        diff = spec.differs_in(json.loads(study.user_attrs.get(U_SPEC, "{}")))
        raise SpecError(f"{spec.source}: study {study.study_name!r} already exists in this storage with a different "
                        f"spec (differs in: {', '.join(diff) or 'content'}); use another study name or storage")


def storage_identity(study: optuna.Study) -> str | None:
    """The random id the evaluate ``study`` was given when it was created (None for an older study):
    the same study name in two storages has two ids."""
    return study.user_attrs.get(U_STORAGE_ID)


def _pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    if spec.tune and spec.tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


# ------------------------------------------------------------------------------ the queue of cells
#: how the recorded reason of a trial failed by its own worker's interruption begins
INTERRUPTED = "interrupted: "


def trial_cell(t: FrozenTrial) -> Cell | None:
    """The cell a trial of the evaluate stage works on (None for a spurious trial)."""
    a = t.user_attrs
    if "encoding" not in a or a.get(U_SPURIOUS):
        return None
    return Cell.from_params(a)


def cell_params(cell: Cell) -> dict[str, Any]:
    """The Optuna parameters of a cell's trial: the queue's ``cell`` key and the real parameters."""
    return {O_CELL: cell.key, **cell.params()}


def cell_distributions(cells: list[Cell]) -> dict[str, optuna.distributions.BaseDistribution]:
    """The distributions an evaluate trial is asked with: one categorical per parameter of
    :func:`cell_params`, over the study's cells (an enqueued trial gets its cell's values)."""
    cat = optuna.distributions.CategoricalDistribution
    return {O_CELL: cat([c.key for c in cells]),
            P_ENCODING: cat(list(dict.fromkeys(c.encoding for c in cells))),
            P_TRAIN_RESOLUTION: cat(sorted({c.train_resolution for c in cells})),
            P_SEED: cat(sorted({c.seed for c in cells}))}


def enqueue_cells(study: optuna.Study, cells: list[Cell], max_retries: int) -> int:
    """Enqueue every cell that has no completed, waiting or running trial and has failed at
    most ``max_retries`` times (:func:`counts_as_try`); return how many were enqueued."""
    trials = study.get_trials(deepcopy=False)
    busy = {trial_cell(t) for t in trials if t.state in (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)}
    failures = failed_tries(trials)
    added = 0
    for cell in cells:
        if cell not in busy and failures[cell] <= max_retries:
            study.enqueue_trial(cell_params(cell), user_attrs=cell.params())
            added += 1
    return added


def taken(study: optuna.Study, number: int, cell: Cell) -> bool:
    """Whether ``cell`` is completed, or run by a trial numbered below ``number``."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if t.number != number and trial_cell(t) == cell and (t.state == TrialState.COMPLETE or t.number < number):
            return True
    return False


def failures(study: optuna.Study, cell: Cell) -> list[FrozenTrial]:
    """The failed trials of ``cell``, oldest first."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)) if trial_cell(t) == cell]


def counts_as_try(t: FrozenTrial) -> bool:
    """Whether a trial is one of its cell's failed tries (1 + ``max_retries`` in all): a failure of
    the cell (an error, a diverged loss, a worker that died or was reaped), not its worker's
    interruption (Ctrl-C, SIGTERM: a stopped or preempted job), after which the cell resumes from
    its checkpoint however often the study was stopped."""
    return t.state == TrialState.FAIL and not fail_reason(t).startswith(INTERRUPTED)


def failed_tries(trials: list[FrozenTrial]) -> Counter:
    """How many failed tries (:func:`counts_as_try`) each cell has among ``trials``."""
    return Counter(trial_cell(t) for t in trials if counts_as_try(t))


def fail_reason(t: FrozenTrial) -> str:
    """Why a trial failed, as recorded: by its worker (a diverged loss, an error, an interruption)
    or by the worker that reaped it (its heartbeat went stale). A trial failed before reasons were
    recorded: reaped when its own worker did not close its run, else the worker's interruption."""
    reason = t.user_attrs.get(T_FAIL_REASON)
    if reason:
        return reason
    return "worker died or interrupted" if t.user_attrs.get(U_RUN_CLOSED) else REAPED_REASON


def check_one_storage(spec: StudySpec, studies: dict[str, optuna.Study], tracker: Tracker) -> None:
    """Refuse a study whose MLflow experiment already holds its runs from another Optuna storage
    (the same study name run against two storages but one tracking store would train every cell
    again into the one experiment). The parent runs record the storage's id (and its redacted URL)."""
    mine = storage_identity(studies[EVALUATE])
    if not mine:
        return
    for run in tracker.client.search_runs(
            [tracker.experiment_id], filter_string=f"tags.`{T_STORAGE_ID}` != ''", max_results=50):
        tags = run.data.tags
        if tags.get(T_STUDY) == spec.name and tags.get(T_STORAGE_ID) not in (None, "", mine):
            raise SpecError(
                f"{spec.source}: MLflow experiment {spec.name!r} at {redact_url(spec.tracking())} already holds "
                f"the runs of study {spec.name!r} from another Optuna storage ({tags.get(T_STORAGE, '?')}); this "
                f"run's storage is {redact_url(spec.storage_url())}: use another study name (or tracking store), "
                "or the storage the study was run with")


def repair_runs(spec: StudySpec, studies: dict[str, optuna.Study], tracker: Tracker) -> int:
    """Close the study's child runs left RUNNING whose trial is not running (their worker was
    stopped before it could close them: a second Ctrl-C, a kill during clean-up): KILLED, or
    FAILED with the trial's reason when it has one. The runs of running trials are left to
    their workers (or to :func:`reap_stale` once their heartbeat goes stale); runs without a
    trial (``harness train``) are left alone. Returns how many runs were closed."""
    by_key: dict[str, dict[int, FrozenTrial]] = {}
    closed = 0
    for run in tracker.runs(spec.name, status="RUNNING"):
        tags, params = run.data.tags, run.data.params
        number = tags.get(T_TRIAL_NUMBER)
        stage = tags.get(T_STAGE)
        key = EVALUATE if stage == EVALUATE else (
            f"{TUNE}/{params.get(P_ENCODING)}/r{params.get(P_TRAIN_RESOLUTION)}" if stage == TUNE else None)
        if key not in studies or number is None or not number.isdigit():
            continue
        if key not in by_key:
            by_key[key] = {t.number: t for t in studies[key].get_trials(deepcopy=False)}
        trial = by_key[key].get(int(number))
        if trial is not None and trial.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        reason = trial.user_attrs.get(T_FAIL_REASON) if trial is not None else None
        if trial is not None and trial.state == TrialState.COMPLETE:
            reason = "its trial completed under another run"  # never expected: closed, not counted
        interrupted = reason is None or reason.startswith("interrupted")
        if tracker.status(run.info.run_id) != "RUNNING":  # closed meanwhile by its own worker
            continue
        tracker.set_tags(run.info.run_id, {T_FAIL_REASON: reason or "interrupted: closed by a later run of the study"})
        tracker.end(run.info.run_id, "KILLED" if interrupted else "FAILED")
        closed += 1
    return closed
