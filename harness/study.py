"""Optuna studies: the optional tune stage and the evaluate stage, on one shared storage.

- evaluate: one trial per (encoding, train resolution, seed) cell, enqueued once when the
  study is created; workers pop waiting trials until none is left. A re-run enqueues only
  the cells that have no completed, waiting or running trial, so finished cells are never
  trained again, and an interrupted cell continues from its checkpoint.
- tune (optional): per (encoding, train resolution), the same number of trials of a seeded
  TPE sampler over the spec's search space, scored on the validation split, pruned on the
  per-epoch validation accuracy; the best parameters go to the evaluate stage.

Every trial is an MLflow child run under its stage's parent run.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.spec import SpecError, StudySpec, load_spec, redact_url

__all__ = ["StorageError", "run_study", "run_worker", "study_status", "train_one"]

EVALUATE = "evaluate"
TUNE = "tune"


class StorageError(HarnessError):
    """The Optuna storage cannot be reached or used."""


# ------------------------------------------------------------------------------ storage
def _storage(url: str, heartbeat: int | None = None):
    """The Optuna storage; with ``heartbeat`` (seconds) every running trial records a heartbeat,
    and a trial silent for three intervals is failed as stale (its worker died)."""
    import warnings

    import optuna

    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs.update(heartbeat_interval=heartbeat, grace_period=3 * heartbeat)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        # we record heartbeats ourselves around ask/tell (see _Heartbeat)
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


def _cell_key(label: str, res: int, seed: int) -> str:
    return f"{label}|r{res}|s{seed}"


def _open_studies(spec: StudySpec, storage, *, create: bool = True) -> dict[str, Any]:
    """Create (or, with ``create=False``, only load) the stage studies, pinned to the spec's
    content hash."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = {}
    names = [(EVALUATE, f"{spec.name}/{EVALUATE}")]
    if spec.tune:
        names += [(f"{TUNE}/{e.label}/r{r}", f"{spec.name}/{TUNE}/{e.label}/r{r}")
                  for e in spec.encodings for r in spec.train_resolutions]
    for key, name in names:
        sampler = None
        if key.startswith(TUNE):
            sampler = optuna.samplers.TPESampler(seed=spec.tune.seed, n_startup_trials=max(2, spec.tune.trials // 3))
        if not create and name not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
            raise SpecError(f"{spec.source}: study {name!r} does not exist in storage "
                            f"{redact_url(spec.storage_url())}: create it with `harness run` first")
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True,
                                    sampler=sampler, pruner=_pruner(spec))
        pinned = study.user_attrs.get("harness.spec_digest")
        if pinned is None:
            study.set_user_attr("harness.spec_digest", spec.digest())
            study.set_user_attr("harness.spec", json.dumps(spec.resolved, default=str))
        elif pinned != spec.digest():
            old = json.loads(study.user_attrs.get("harness.spec", "{}"))
            from harness.spec import _OPERATIONAL

            diff = [k for k in sorted(set(old) | set(spec.resolved))
                    if k not in _OPERATIONAL and old.get(k) != spec.resolved.get(k)]
            raise SpecError(f"{spec.source}: study {name!r} already exists in this storage with a different spec "
                            f"(differs in: {', '.join(diff) or 'content'}); use another study name or storage")
        studies[key] = study
    return studies


def _pruner(spec: StudySpec):
    import optuna

    if spec.tune and spec.tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def _trial_cell(t) -> str | None:
    a = t.user_attrs
    if "encoding" not in a or a.get("harness.spurious"):
        return None
    return _cell_key(a["encoding"], a["train_resolution"], a["seed"])


def _enqueue_cells(study, cells: list[tuple[str, int, int]], max_retries: int) -> int:
    """Enqueue every cell that has no completed, waiting or running trial and has failed at
    most ``max_retries`` times."""
    from collections import Counter

    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    busy = {_trial_cell(t) for t in trials
            if t.state in (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)}
    failures = Counter(_trial_cell(t) for t in trials if t.state == TrialState.FAIL)
    added = 0
    for label, res, seed in cells:
        key = _cell_key(label, res, seed)
        if key not in busy and failures[key] <= max_retries:
            study.enqueue_trial({"cell": key}, user_attrs={"encoding": label, "train_resolution": res, "seed": seed})
            added += 1
    return added


# ------------------------------------------------------------------------------ entry points
def run_study(spec_path: str, overrides: list[str], *, workers: int = 1, storage: str | None = None,
              tracking_uri: str | None = None, progress: bool | None = None) -> StudySpec:
    """Run a whole study: create the storage and studies, then the tune and evaluate stages
    with ``workers`` processes. Returns the resolved spec."""
    extra = [f"storage={storage}"] if storage else []
    extra += [f"tracking_uri={tracking_uri}"] if tracking_uri else []
    spec = load_spec(spec_path, [*overrides, *extra])
    from harness.tracking import Tracker, check_reachable

    dataset_for(spec)  # a missing, corrupt or empty dataset: fail before writing anything
    check_reachable(spec.tracking())  # a tracking server that does not answer: likewise
    if spec.storage:
        storage_obj = _storage(spec.storage_url(), spec.heartbeat)  # likewise an unreachable database
    try:
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        probe = spec.run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SpecError(f"{spec.source}: key 'output': folder {spec.run_dir} cannot be written ({exc.strerror})") from None
    if not spec.storage:
        storage_obj = _storage(spec.storage_url(), spec.heartbeat)
    tracker = Tracker(spec.tracking(), spec.name)
    studies = _open_studies(spec, storage_obj)
    for stage in ([TUNE] if spec.tune else []) + [EVALUATE]:
        tracker.parent_run(spec.name, stage)
    (spec.run_dir / "spec.resolved.json").write_text(json.dumps(spec.resolved, indent=2, default=str))
    _reap_stale(studies[EVALUATE], tracker)
    _enqueue_cells(studies[EVALUATE], spec.cells(), spec.max_retries)
    args = (spec_path, [*overrides, *extra], progress)
    if workers == 0:  # only create the study: `harness worker` processes do the work
        return spec
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
    return spec


def study_status(spec: StudySpec) -> list[dict[str, str]]:
    """Each cell of the evaluate stage: done, running (which worker, since when), failed (why), waiting."""
    import optuna
    from optuna.trial import TrialState

    storage = _storage(spec.storage_url())
    name = f"{spec.name}/{EVALUATE}"
    if name not in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        raise SpecError(f"{spec.source}: study {name!r} does not exist in storage {redact_url(spec.storage_url())}")
    trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    rows = []
    for label, res, seed in spec.cells():
        key = _cell_key(label, res, seed)
        mine = [t for t in trials if _trial_cell(t) == key]
        done = [t for t in mine if t.state == TrialState.COMPLETE]
        running = [t for t in mine if t.state == TrialState.RUNNING]
        failed = [t for t in mine if t.state == TrialState.FAIL]
        if done:
            state, detail = "done", f"score {done[-1].value:.4f}"
        elif running:
            t = running[-1]
            state, detail = "running", f"worker {t.user_attrs.get('harness.worker', '?')} since {t.datetime_start:%Y-%m-%d %H:%M:%S}"
        elif failed and len(failed) > spec.max_retries:
            state = "failed"
            detail = f"{len(failed)} tries, last: {failed[-1].user_attrs.get('harness.fail_reason', 'worker died or interrupted')}"
        else:
            state = "waiting"
            detail = f"after {len(failed)} failed tries, last: {failed[-1].user_attrs.get('harness.fail_reason', 'worker died or interrupted')}" if failed else ""
        rows.append({"encoding": label, "train_resolution": str(res), "seed": str(seed), "state": state,
                     "detail": detail})
    return rows


def _worker_main(spec_path: str, overrides: list[str], progress: bool | None, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        run_worker(spec_path, overrides, progress)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def run_worker(spec_path: str, overrides: list[str], progress: bool | None = None) -> None:
    """Work on a study until its trials are done: every tune study's budget, then every
    evaluate cell. Plugins named in the spec are loaded again here (``load_spec`` does)."""
    import optuna

    spec = load_spec(spec_path, overrides)
    from harness.tracking import Tracker, check_reachable

    check_reachable(spec.tracking())
    storage = _storage(spec.storage_url(), spec.heartbeat)
    studies = _open_studies(spec, storage, create=False)  # `run` created them, before any worker started
    tracker = Tracker(spec.tracking(), spec.name)
    if spec.tune:
        parent = tracker.parent_run(spec.name, TUNE)
        for e in spec.encodings:
            for r in spec.train_resolutions:
                study = studies[f"{TUNE}/{e.label}/r{r}"]
                budget = optuna.study.MaxTrialsCallback(
                    spec.tune.trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
                if _counted(study) < spec.tune.trials:
                    study.optimize(lambda t, e=e, r=r: _tune_objective(t, spec, tracker, parent, e.label, r, progress),
                                   callbacks=[budget], catch=())
    parent = tracker.parent_run(spec.name, EVALUATE)
    _evaluate_loop(studies[EVALUATE], storage, spec, tracker, parent, progress)


def _counted(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def _evaluate_loop(study, storage, spec: StudySpec, tracker, parent: str, progress) -> None:
    """Pop waiting cells until none is left; then wait for the other workers' running cells,
    failing those whose worker stopped sending heartbeats and enqueueing them again (up to
    ``max_retries``), so that the study ends with every cell completed exactly once."""
    import optuna
    from optuna.trial import TrialState

    cells = [_cell_key(*c) for c in spec.cells()]
    dist = {"cell": optuna.distributions.CategoricalDistribution(cells)}
    while True:
        _reap_stale(study, tracker)
        _enqueue_cells(study, spec.cells(), spec.max_retries)
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                return
            time.sleep(min(spec.heartbeat, 2))  # another worker's cell: wait until it ends or goes stale
            continue
        trial = study.ask(dist)
        if "encoding" not in trial.user_attrs or _taken(study, trial):
            # not an enqueued cell (another worker took the last one), or a cell someone else
            # completes or runs: never train a cell twice
            trial.set_user_attr("harness.spurious", True)
            study.tell(trial, state=TrialState.FAIL)
            continue
        label, res, seed = _parse_cell(trial.params["cell"])
        trial.set_user_attr("harness.worker", f"{socket.gethostname()}:{os.getpid()}")
        failed = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                  if _trial_cell(t) == trial.params["cell"]]
        if failed:
            trial.set_user_attr("harness.retry_of_trial", failed[-1])  # the link in Optuna (MLflow: a tag)
        params = _best_params(spec, storage, label, res)
        beat = _Heartbeat(study, trial)
        try:
            value = train_one(spec, label, res, seed, stage=EVALUATE, tracker=tracker, parent=parent,
                              trial=trial, overrides=params, progress=progress)
        except _Failed as exc:
            beat.stop()
            trial.set_user_attr("harness.fail_reason", exc.reason)
            trial.set_user_attr("harness.run_closed", True)
            study.tell(trial, state=TrialState.FAIL)
            continue
        except BaseException:
            beat.stop()
            trial.set_user_attr("harness.run_closed", True)  # train_one closed it as FAILED or KILLED
            study.tell(trial, state=TrialState.FAIL)
            raise
        beat.stop()
        study.tell(trial, value)


def _taken(study, trial) -> bool:
    """Whether the trial's cell is completed, or run by a trial with a lower number."""
    from optuna.trial import TrialState

    cell = trial.params["cell"]
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if t.number != trial.number and _trial_cell(t) == cell and not t.user_attrs.get("harness.spurious") and (
                t.state == TrialState.COMPLETE or t.number < trial.number):
            return True
    return False


class _Heartbeat:
    """Records the trial's heartbeat in the storage from a thread while it trains."""

    def __init__(self, study, trial) -> None:
        import threading

        storage = study._storage
        interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        self._stop = threading.Event()
        self._thread = None
        if interval:
            def beat() -> None:
                while True:
                    storage.record_heartbeat(trial._trial_id)
                    if self._stop.wait(interval):
                        return

            self._thread = threading.Thread(target=beat, name="harness-heartbeat", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _reap_stale(study, tracker) -> None:
    """Fail the trials whose worker died (no heartbeat), and close their MLflow runs as FAILED."""
    import optuna
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        run_id = t.user_attrs.get("mlflow_run_id")
        if run_id and not t.user_attrs.get("harness.run_closed"):  # only the trials of dead workers
            run = tracker.client.get_run(run_id)
            if run.info.status == "RUNNING":
                tracker.set_tags(run_id, {"harness.fail_reason": "the worker stopped sending heartbeats (killed?)"})
                tracker.end(run_id, "FAILED")


def _parse_cell(key: str) -> tuple[str, int, int]:
    label, r, s = key.rsplit("|", 2)
    return label, int(r[1:]), int(s[1:])


def _best_params(spec: StudySpec, storage, label: str, res: int) -> dict[str, Any]:
    """The tuned training parameters for (encoding, resolution), or none without a tune stage."""
    if not spec.tune:
        return {}
    import optuna

    study = optuna.load_study(study_name=f"{spec.name}/{TUNE}/{label}/r{res}", storage=storage)
    try:
        return {k.partition(".")[2]: v for k, v in study.best_params.items()}
    except ValueError:  # no completed tuning trial: the recipe as written
        return {}


def _tune_objective(trial, spec: StudySpec, tracker, parent: str, label: str, res: int, progress) -> float:
    import optuna

    params = {}
    for key, d in spec.tune.space.items():
        name = key.partition(".")[2]
        if "choices" in d:
            params[name] = trial.suggest_categorical(key, d["choices"])
        elif isinstance(d["low"], int) and isinstance(d["high"], int) and not d.get("log"):
            params[name] = trial.suggest_int(key, d["low"], d["high"])
        else:
            params[name] = trial.suggest_float(key, float(d["low"]), float(d["high"]), log=bool(d.get("log")))
    if spec.tune.epochs:
        params["epochs"] = spec.tune.epochs
    seed = spec.tune.seed * 1000 + trial.number
    try:
        return train_one(spec, label, res, seed, stage=TUNE, tracker=tracker, parent=parent, trial=trial,
                         overrides=params, progress=progress)
    except _Failed as exc:
        trial.set_user_attr("harness.fail_reason", exc.reason)
        raise optuna.TrialPruned(exc.reason) from None


class _Failed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------------ one trial
_DATASETS: dict[str, Any] = {}


def dataset_for(spec: StudySpec):
    """The study's dataset, built once per process."""
    from harness.data import build_dataset

    d = spec.dataset
    key = json.dumps(dataclasses.asdict(d), sort_keys=True)
    if key not in _DATASETS:
        if d.name == "rendered":
            opts = dict(task=d.task, num_train=d.num_train, num_val=d.num_val, num_test=d.num_test, seed=d.seed)
        elif d.name == "imagefolder":
            opts = dict(root=d.root, val_fraction=d.val_fraction, seed=d.seed)
        else:
            opts = dict(root=d.root, download=d.download, val_fraction=d.val_fraction, seed=d.seed)
        _DATASETS[key] = build_dataset(d.name, **opts)
    return _DATASETS[key]


def train_one(spec: StudySpec, label: str, res: int, seed: int, *, stage: str, tracker, parent: str,
              trial=None, overrides: dict[str, Any] | None = None, progress: bool | None = None) -> float:
    """Train one model and track it as an MLflow child run; return the score the stage
    optimises (validation accuracy for tune, test accuracy at the training resolution for
    evaluate). A failed trial raises ``_Failed`` after closing its run as FAILED."""
    import torch

    from harness.models.vit import build_model
    from harness.train import TrainConfigError, TrialFailed, train_model

    enc = spec.encoding(label)
    data = dataset_for(spec)
    model_cfg = spec.model_config(res, data.in_chans, data.num_classes)
    train_cfg = spec.train_config(**(overrides or {}))
    torch.manual_seed(seed)
    model = build_model(model_cfg, enc.name, enc.options)
    tag = f"{label}_r{res}_s{seed}" + (f"_t{trial.number}" if stage == TUNE and trial is not None else "")
    ckpt = spec.run_dir / "checkpoints" / stage / f"{tag}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    resolved = {**spec.resolved, "model": dataclasses.asdict(model_cfg), "train": dataclasses.asdict(train_cfg),
                "encoding": dataclasses.asdict(enc)}
    previous = [r.info.run_id for r in tracker.runs(spec.name, stage, cell=tag) if r.info.status != "FINISHED"]
    from harness.provenance import git_commit, versions

    tags = {"harness.cell": tag, "harness.worker": f"{socket.gethostname()}:{os.getpid()}",
            "harness.spec_digest": spec.digest(), "harness.git_commit": git_commit(),
            "harness.versions": json.dumps(versions())}
    if trial is not None:
        tags["optuna.trial_number"] = str(trial.number)
    if previous:
        tags["harness.retry_of"] = previous[-1]
    run_id = tracker.child_run(parent, tag, study=spec.name, stage=stage, tags=tags, params={
        "encoding": label, "train_resolution": res, "seed": seed, "config": resolved})
    tracker.log_text(run_id, json.dumps(resolved, indent=2, default=str), "spec.resolved.json")
    if trial is not None:
        trial.set_user_attr("mlflow_run_id", run_id)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        tracker.log_metrics(run_id, {k: v for k, v in metrics.items() if k != "epoch"}, step=epoch)
        if stage == TUNE and trial is not None:
            trial.report(metrics["val/acc"], epoch)
            if trial.should_prune():
                import optuna

                tracker.set_tags(run_id, {"harness.pruned_at_epoch": str(epoch)})
                raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    try:
        result = train_model(model, data, train_cfg, train_resolution=res,
                             test_resolutions=() if stage == TUNE else spec.test_resolutions,
                             seed=seed, checkpoint=ckpt, on_epoch=on_epoch, progress=progress)
    except TrialFailed as exc:
        tracker.set_tags(run_id, {"harness.fail_reason": exc.reason})
        tracker.end(run_id, "FAILED")
        raise _Failed(exc.reason) from None
    except TrainConfigError:
        tracker.end(run_id, "FAILED")
        raise
    except BaseException as exc:
        import optuna

        if isinstance(exc, optuna.TrialPruned):
            tracker.end(run_id, "FINISHED")
        else:
            tracker.set_tags(run_id, {"harness.fail_reason": f"interrupted: {type(exc).__name__}"})
            tracker.end(run_id, "KILLED")
        raise
    final = {"params/count": result.params, "train/images_per_s": result.images_per_s,
             "train/resumed_from_epoch": result.resumed_from_epoch}
    for r, m in result.test.items():
        final[f"test/acc/r{r}"] = m["acc"]
        final[f"test/loss/r{r}"] = m["loss"]
    tracker.log_metrics(run_id, final, step=len(result.history))
    tracker.set_tags(run_id, {"harness.device": result.device})
    tracker.end(run_id, "FINISHED")
    ckpt.unlink(missing_ok=True)
    if stage == EVALUATE:
        return result.test[res]["acc"] if res in result.test else result.history[-1]["val/acc"]
    return result.history[-1]["val/acc"]
