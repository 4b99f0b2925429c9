"""Optuna studies: the optional tune stage and the evaluate stage, on one shared storage.

- evaluate: one trial per cell (encoding, train resolution, seed), enqueued when the study
  is created; workers pop waiting trials until none is left. A re-run enqueues only the cells
  that have no completed, waiting or running trial, so finished cells are never trained
  again, and an interrupted cell continues from its checkpoint.
- tune (optional): per (encoding, train resolution), the same number of trials of a seeded
  TPE sampler over the spec's search space, scored on the validation split, pruned on the
  per-epoch validation accuracy; the best parameters go to the evaluate stage.

The storage and the queue of cells are ``harness.storage``; one trial is ``harness.trial``.
Every trial is an MLflow child run under its stage's parent run. Only :func:`run_study`
(``harness run``, in its main process, after its workers end) closes the parent runs:
FINISHED with the stage's summary metrics, FAILED when the run raises, KILLED on Ctrl-C; it
re-opens them (RUNNING) on a re-run and logs the resolved spec on them (parameters and the
``spec.resolved.json`` artifact). :func:`run_worker` (``harness worker``) never closes a
parent: with ``--workers 0`` the parents stay RUNNING until a later ``harness run`` of the
study (which finds nothing left to train) closes them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing as mp
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from harness.config import StudySpec, TuneConfig
from harness.errors import HarnessError
from harness.schema import (
    EVALUATE,
    O_CELL,
    STAGE_CELLS,
    STAGE_CELLS_DONE,
    STAGE_CELLS_FAILED,
    STAGE_TRIALS_COMPLETE,
    STAGE_TRIALS_FAILED,
    STAGE_TRIALS_PRUNED,
    SPEC_ARTIFACT,
    T_FAIL_REASON,
    TUNE,
    U_ENCODING_NAME,
    U_ENCODING_OPTIONS,
    U_RETRY_OF,
    U_RUN_CLOSED,
    U_SPURIOUS,
    U_WORKER,
    Cell,
)
from harness.spec import SpecError, load_spec
from harness.storage import (
    Heartbeat,
    StorageError,
    cell_distributions,
    enqueue_cells,
    fail_reason,
    failures,
    open_storage,
    open_studies,
    reap_stale,
    study_names,
    taken,
    trial_cell,
)
from harness.tracking import Tracker, check_reachable
from harness.trial import TrialError, dataset_of, train_one, worker_id

__all__ = ["StorageError", "run_study", "run_worker", "study_status"]


# ------------------------------------------------------------------------------ entry points
def run_study(spec_path: str, overrides: list[str], *, workers: int | None = None, storage: str | None = None,
              tracking_uri: str | None = None, progress: bool | None = None) -> StudySpec:
    """Run a whole study: create the storage and studies, then the tune and evaluate stages
    with ``workers`` processes (None: the spec's ``workers``). Returns the resolved spec.

    Opens (or re-opens) each stage's MLflow parent run with the resolved spec, and closes it
    once the workers end: FINISHED with the stage's summary metrics, FAILED when they raise,
    KILLED on Ctrl-C. With ``workers=0`` the parents stay open for ``harness worker`` processes."""
    extra = [f"storage={storage}"] if storage else []
    extra += [f"tracking_uri={tracking_uri}"] if tracking_uri else []
    spec = load_spec(spec_path, [*overrides, *extra])
    dataset_of(spec)  # a missing, corrupt or empty dataset: fail before writing anything
    check_reachable(spec.tracking())  # a tracking server that does not answer: likewise
    if spec.storage:
        storage_obj = open_storage(spec.storage_url(), spec.heartbeat)  # likewise an unreachable database
    try:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        probe = spec.run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SpecError(f"{spec.source}: key 'output': folder {spec.run_dir} cannot be written ({exc.strerror})") from None
    if not spec.storage:
        storage_obj = open_storage(spec.storage_url(), spec.heartbeat)
    tracker = Tracker(spec.tracking(), spec.name)
    studies = open_studies(spec, storage_obj)
    resolved_file = spec.run_dir / SPEC_ARTIFACT
    resolved_file.write_text(json.dumps(spec.resolved, indent=2, default=str))
    parents = {}
    for stage in ([TUNE] if spec.tune else []) + [EVALUATE]:
        parents[stage] = tracker.parent_run(spec.name, stage, reopen=True)  # a re-run re-opens it
        tracker.log_params(parents[stage], spec.resolved)
        tracker.log_files(parents[stage], [resolved_file])
    reap_stale(studies[EVALUATE], tracker)
    enqueue_cells(studies[EVALUATE], spec.cells(), spec.max_retries)
    args = (spec_path, [*overrides, *extra], progress)
    workers = spec.workers if workers is None else workers
    if workers == 0:  # only create the study: `harness worker` processes do the work (the parents stay open)
        return spec
    try:
        if workers == 1:
            run_worker(*args)
        else:
            ctx = mp.get_context("spawn")
            # one process per share of the cores: oversubscribed OpenMP threads slow torch down many times
            threads = max(1, (os.cpu_count() or 1) // workers)
            procs = [ctx.Process(target=_worker_main, args=(*args, threads), name=f"harness-worker-{i}")
                     for i in range(workers)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            bad = [p.exitcode for p in procs if p.exitcode]
            if bad:
                raise HarnessError(f"{len(bad)} of {workers} workers exited with an error (exit codes {bad})")
    except BaseException as exc:
        _close_parents(spec, studies, tracker, parents, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    _close_parents(spec, studies, tracker, parents, "FINISHED")
    return spec


def _close_parents(spec: StudySpec, studies: dict[str, optuna.Study], tracker: Tracker, parents: dict[str, str],
                   status: str) -> None:
    """Log each stage's summary metrics on its parent run and close it: ``status`` for a stage
    that did not complete (a tune stage whose every study spent its budget is FINISHED even
    when the evaluate stage then failed). Tracking errors while closing never hide ``status``'s cause."""
    for stage, run_id in parents.items():
        try:
            summary = _stage_summary(spec, studies, stage)
            tracker.log_metrics(run_id, summary)
            done = status == "FINISHED" or (stage == TUNE and summary[STAGE_TRIALS_COMPLETE]
                                            + summary[STAGE_TRIALS_PRUNED] >= spec.tune.trials * (len(studies) - 1))
            tracker.end(run_id, "FINISHED" if done else status)
        except Exception as exc:  # noqa: BLE001 - the run's own outcome matters more than its parent's bookkeeping
            if status == "FINISHED":
                raise
            print(f"warning: could not close the {stage} parent run {run_id}: {exc}", file=sys.stderr)


def _stage_summary(spec: StudySpec, studies: dict[str, optuna.Study], stage: str) -> dict[str, float]:
    """A stage's summary metrics: evaluate: cells, cells done, cells failed for good;
    tune: trials complete, pruned and failed over every (encoding, train resolution)."""
    if stage == TUNE:
        trials = [t for key, s in studies.items() if key.startswith(TUNE) for t in s.get_trials(deepcopy=False)]
        return {STAGE_TRIALS_COMPLETE: sum(t.state == TrialState.COMPLETE for t in trials),
                STAGE_TRIALS_PRUNED: sum(t.state == TrialState.PRUNED for t in trials),
                STAGE_TRIALS_FAILED: sum(t.state == TrialState.FAIL for t in trials)}
    trials = studies[EVALUATE].get_trials(deepcopy=False)
    cells = spec.cells()
    done = {trial_cell(t) for t in trials if t.state == TrialState.COMPLETE}
    tries = Counter(trial_cell(t) for t in trials if t.state == TrialState.FAIL)
    return {STAGE_CELLS: len(cells), STAGE_CELLS_DONE: sum(c in done for c in cells),
            STAGE_CELLS_FAILED: sum(c not in done and tries[c] > spec.max_retries for c in cells)}


def study_status(spec: StudySpec) -> list[dict[str, str]]:
    """Each cell of the evaluate stage: done, running (which worker, since when), failed (why), waiting."""
    storage = open_storage(spec.storage_url())
    name = study_names(spec)[EVALUATE]
    if name not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        raise SpecError(f"{spec.source}: study {name!r} does not exist in storage "
                        f"{spec.resolved.get('storage') or spec.storage_url()}")
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    rows = []
    for cell in spec.cells():
        mine = [t for t in trials if trial_cell(t) == cell]
        done = [t for t in mine if t.state == TrialState.COMPLETE]
        running = [t for t in mine if t.state == TrialState.RUNNING]
        failed = [t for t in mine if t.state == TrialState.FAIL]
        if done:
            state, detail = "done", f"score {done[-1].value:.4f}"
        elif running:
            t = running[-1]
            state, detail = "running", f"worker {t.user_attrs.get(U_WORKER, '?')} since {t.datetime_start:%Y-%m-%d %H:%M:%S}"
        elif failed and len(failed) > spec.max_retries:
            state, detail = "failed", f"{len(failed)} tries, last: {fail_reason(failed[-1])}"
        else:
            state = "waiting"
            detail = f"after {len(failed)} failed tries, last: {fail_reason(failed[-1])}" if failed else ""
        rows.append({"encoding": cell.encoding, "train_resolution": str(cell.train_resolution),
                     "seed": str(cell.seed), "state": state, "detail": detail})
    return rows


def _worker_main(spec_path: str, overrides: list[str], progress: bool | None, threads: int) -> None:
    torch.set_num_threads(threads)
    try:
        run_worker(spec_path, overrides, progress)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run_worker(spec_path: str, overrides: list[str], progress: bool | None = None) -> None:
    """Work on a study until its trials are done: every tune study's budget, then every
    evaluate cell. Plugins named in the spec are loaded again here (``load_spec`` does).
    A worker logs its trials under the stages' parent runs but never closes them: only
    :func:`run_study` (``harness run``) does, once its own workers have ended."""
    spec = load_spec(spec_path, overrides)
    check_reachable(spec.tracking())
    storage = open_storage(spec.storage_url(), spec.heartbeat)
    studies = open_studies(spec, storage, create=False)  # `run` created them, before any worker started
    tracker = Tracker(spec.tracking(), spec.name)
    if spec.tune:
        parent = tracker.parent_run(spec.name, TUNE)
        budget = optuna.study.MaxTrialsCallback(spec.tune.trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
        for e in spec.encodings:
            for r in spec.train_resolutions:
                study = studies[f"{TUNE}/{e.label}/r{r}"]
                if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))) \
                        < spec.tune.trials:
                    study.optimize(lambda t, e=e, r=r: _tune_objective(t, spec, tracker, parent, e.label, r, progress),
                                   callbacks=[budget], catch=())
    parent = tracker.parent_run(spec.name, EVALUATE)
    _evaluate_loop(studies[EVALUATE], storage, spec, tracker, parent, progress)


def _evaluate_loop(study: optuna.Study, storage, spec: StudySpec, tracker: Tracker, parent: str,
                   progress: bool | None) -> None:
    """Pop waiting cells until none is left; then wait for the other workers' running cells,
    failing those whose worker stopped sending heartbeats and enqueueing them again (up to
    ``max_retries``), so that the study ends with every cell completed exactly once."""
    cells = spec.cells()
    dist = cell_distributions(cells)
    while True:
        reap_stale(study, tracker)
        enqueue_cells(study, cells, spec.max_retries)
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                return
            time.sleep(min(spec.heartbeat, 2))  # another worker's cell: wait until it ends or goes stale
            continue
        with _pop_lock(spec):
            trial = study.ask(dist)
        cell = Cell.parse(trial.params[O_CELL]) if "encoding" in trial.user_attrs else None
        if cell is None or taken(study, trial.number, cell):
            # not an enqueued cell (another worker took the last one), or a cell someone else
            # completes or runs: never train a cell twice
            trial.set_user_attr(U_SPURIOUS, True)
            study.tell(trial, state=TrialState.FAIL)
            continue
        trial.set_user_attr(U_WORKER, worker_id())
        enc = spec.encoding(cell.encoding)
        trial.set_user_attr(U_ENCODING_NAME, enc.name)
        trial.set_user_attr(U_ENCODING_OPTIONS, json.dumps(enc.options, sort_keys=True, default=str))
        failed = failures(study, cell)
        if failed:
            trial.set_user_attr(U_RETRY_OF, failed[-1].number)  # the link in Optuna (MLflow: a tag)
        params = _best_params(spec, storage, cell)
        beat = Heartbeat(storage, study, trial.number)
        try:
            value = train_one(spec, cell, stage=EVALUATE, tracker=tracker, parent=parent, trial=trial,
                              overrides=params, progress=progress)
        except TrialError as exc:
            beat.stop()
            trial.set_user_attr(T_FAIL_REASON, exc.reason)
            trial.set_user_attr(U_RUN_CLOSED, True)
            study.tell(trial, state=TrialState.FAIL)
            continue
        except BaseException:
            beat.stop()
            trial.set_user_attr(U_RUN_CLOSED, True)  # train_one closed it as FAILED or KILLED
            study.tell(trial, state=TrialState.FAIL)
            raise
        beat.stop()
        study.tell(trial, value)


@contextlib.contextmanager
def _pop_lock(spec: StudySpec) -> Iterator[None]:
    """Hold an exclusive lock while popping a waiting trial from a SQLite storage. Optuna claims
    a waiting trial with SELECT ... FOR UPDATE, which SQLite ignores: two worker processes can
    both read the trial as WAITING and both set it RUNNING, and then train the same cell
    (seen with two workers: "Cannot tell a COMPLETE trial"). A SQLite file lives on one
    machine, so a file lock beside it serialises the pops; a server database needs none."""
    url = spec.storage_url()
    if not url.startswith("sqlite:///"):
        yield
        return
    path = spec.run_dir / ".queue.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _best_params(spec: StudySpec, storage, cell: Cell) -> dict[str, Any]:
    """The tuned training parameters of the cell's (encoding, resolution), or none without a tune stage."""
    if not spec.tune:
        return {}
    name = study_names(spec)[f"{TUNE}/{cell.encoding}/r{cell.train_resolution}"]
    study = optuna.load_study(study_name=name, storage=storage)
    try:
        return {k.partition(".")[2]: v for k, v in study.best_params.items()}
    except ValueError:  # no completed tuning trial: the recipe as written
        return {}


def _suggest(trial: optuna.Trial, tune: TuneConfig) -> dict[str, Any]:
    """Training parameters for a tuning trial, drawn from the search space."""
    params = {}
    for key, d in tune.space.items():
        name = key.partition(".")[2]
        if "choices" in d:
            params[name] = trial.suggest_categorical(key, d["choices"])
        elif isinstance(d["low"], int) and isinstance(d["high"], int) and not d.get("log"):
            params[name] = trial.suggest_int(key, d["low"], d["high"])
        else:
            params[name] = trial.suggest_float(key, float(d["low"]), float(d["high"]), log=bool(d.get("log")))
    if tune.epochs:
        params["epochs"] = tune.epochs
    return params


def _tune_objective(trial: optuna.Trial, spec: StudySpec, tracker: Tracker, parent: str, label: str, res: int,
                    progress: bool | None) -> float:
    params = _suggest(trial, spec.tune)
    cell = Cell(label, res, spec.tune.seed * 1000 + trial.number)
    try:
        return train_one(spec, cell, stage=TUNE, tracker=tracker, parent=parent, trial=trial, overrides=params,
                         progress=progress)
    except TrialError as exc:
        trial.set_user_attr(T_FAIL_REASON, exc.reason)
        raise optuna.TrialPruned(exc.reason) from None
