"""The Optuna side of a study: the storage, the stage studies, the queue of cells, heartbeats.

- :func:`open_storage` opens (and, for SQLite, creates) the storage; with a heartbeat every
  running trial records one, and a trial silent for three intervals is failed as stale;
- :func:`open_studies` creates or loads the stage studies, pinned to the spec's content hash;
- the evaluate stage is a queue: :func:`enqueue_cells` adds every cell that has no completed,
  waiting or running trial (and has failed at most ``max_retries`` times); :func:`taken`
  tells a worker that someone else owns the cell it popped;
- :class:`Heartbeat` beats for a trial from a thread; :func:`reap_stale` fails the trials of
  dead workers and closes their MLflow runs.

A cell's trial carries the cell as its ``cell`` parameter (``Cell.key``, what the queue
reads), as the real parameters ``encoding`` (label), ``train_resolution`` and ``seed`` (what
optuna-dashboard plots; :func:`cell_distributions` are the distributions a worker asks with)
and as user attributes (``Cell.params()``). Every stage study names its objective
(``Study.set_metric_names``): ``test_acc_at_train_res`` for evaluate, ``val_acc`` for tune.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.config import StudySpec
from harness.errors import HarnessError, redact_url
from harness.schema import (
    EVALUATE,
    O_CELL,
    OBJECTIVE_EVALUATE,
    OBJECTIVE_TUNE,
    P_ENCODING,
    P_SEED,
    P_TRAIN_RESOLUTION,
    T_FAIL_REASON,
    TUNE,
    U_MLFLOW_RUN,
    U_RUN_CLOSED,
    U_SPEC,
    U_SPEC_DIGEST,
    U_SPURIOUS,
    Cell,
)
from harness.spec import SpecError
from harness.tracking import Tracker

__all__ = [
    "Heartbeat",
    "StorageError",
    "cell_distributions",
    "cell_params",
    "enqueue_cells",
    "fail_reason",
    "failures",
    "open_storage",
    "open_studies",
    "reap_stale",
    "study_names",
    "taken",
    "trial_cell",
]

class StorageError(HarnessError):
    """The Optuna storage cannot be reached or used."""


def open_storage(url: str, heartbeat: int | None = None) -> optuna.storages.RDBStorage:
    """The Optuna storage at ``url``; with ``heartbeat`` (seconds) every running trial records a
    heartbeat, and a trial silent for three intervals is failed as stale (its worker died)."""
    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs.update(heartbeat_interval=heartbeat, grace_period=3 * heartbeat)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        # the harness records heartbeats itself around ask/tell (see Heartbeat)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    try:
        return optuna.storages.RDBStorage(url, **kwargs)
    except Exception as exc:  # noqa: BLE001 - an unreachable or invalid storage is the user's to fix
        detail = redact_url(str(exc).splitlines()[0]) if str(exc) else ""
        hint = ""
        if isinstance(exc, ImportError) and url.startswith("postgres"):
            hint = " (install the PostgreSQL driver: pip install -e '.[postgres]')"
        raise StorageError(f"Optuna storage {redact_url(url)}: cannot be used ({type(exc).__name__}: {detail}){hint}"
                           ) from None


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
        pinned = study.user_attrs.get(U_SPEC_DIGEST)
        if pinned is None:
            study.set_user_attr(U_SPEC_DIGEST, spec.digest())
            study.set_user_attr(U_SPEC, json.dumps(spec.resolved, default=str))
        elif pinned != spec.digest():
            diff = spec.differs_in(json.loads(study.user_attrs.get(U_SPEC, "{}")))
            raise SpecError(f"{spec.source}: study {name!r} already exists in this storage with a different spec "
                               f"(differs in: {', '.join(diff) or 'content'}); use another study name or storage")
        if create and study.metric_names is None:
            with warnings.catch_warnings():  # experimental in some Optuna versions
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([OBJECTIVE_TUNE if key.startswith(TUNE) else OBJECTIVE_EVALUATE])
        studies[key] = study
    return studies


def _pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    if spec.tune and spec.tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


# ------------------------------------------------------------------------------ the queue of cells
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
    most ``max_retries`` times; return how many were enqueued."""
    trials = study.get_trials(deepcopy=False)
    busy = {trial_cell(t) for t in trials if t.state in (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)}
    failures = Counter(trial_cell(t) for t in trials if t.state == TrialState.FAIL)
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


def fail_reason(t: FrozenTrial) -> str:
    return t.user_attrs.get(T_FAIL_REASON, "worker died or interrupted")


# ------------------------------------------------------------------------------ heartbeats
class Heartbeat:
    """Records a running trial's heartbeat in the storage from a thread while it trains."""

    def __init__(self, storage, study: optuna.Study, trial_number: int) -> None:
        interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
        self._stop = threading.Event()
        self._thread = None
        if interval:
            study_id = storage.get_study_id_from_name(study.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial_number)

            def beat() -> None:
                while True:
                    storage.record_heartbeat(trial_id)
                    if self._stop.wait(interval):
                        return

            self._thread = threading.Thread(target=beat, name="harness-heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def reap_stale(study: optuna.Study, tracker: Tracker) -> None:
    """Fail the trials whose worker died (no heartbeat), and close their MLflow runs as FAILED."""
    optuna.storages.fail_stale_trials(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = t.user_attrs.get(U_MLFLOW_RUN)
        if run_id and not t.user_attrs.get(U_RUN_CLOSED):  # only the trials of dead workers
            if tracker.status(run_id) == "RUNNING":
                tracker.set_tags(run_id, {T_FAIL_REASON: "the worker stopped sending heartbeats (killed?)"})
                tracker.end(run_id, "FAILED")
