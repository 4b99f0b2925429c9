"""The commands on a study: ``harness run`` (with ``--dry-run``), ``evaluate``, ``report``,
``worker`` and ``status``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.errors import HarnessError, redact_url
from harness.cli.common import is_override, load_plugins, spec_from_args
from harness.wording import count


def dry_run(args: argparse.Namespace) -> int:
    """``run --dry-run``: the resolved spec and the cells it would train; nothing is written
    (and nothing heavy imported: torch, MLflow, Optuna)."""
    import json

    import yaml

    spec = spec_from_args(args)
    plain = json.loads(json.dumps(spec.resolved, default=str))  # tuples and sizes as YAML can write them
    print(f"# {args.spec}: resolved spec (dry run: nothing is trained or written)")
    print(yaml.safe_dump(plain, sort_keys=False, default_flow_style=None).rstrip())
    cells = spec.cells()
    print(f"# {count(len(cells), 'cell')} to train (encoding, train resolution, seed), "
          f"{_workers_text(args, spec, len(cells))}:")
    width = max(len(c.encoding) for c in cells)
    for i, c in enumerate(cells, 1):
        print(f"{i:>4}  {c.encoding.ljust(width)}  r{c.train_resolution}  seed {c.seed}")
    if spec.tune:
        pairs = len(spec.encodings) * len(spec.train_resolutions)
        print(f"# and first the tune stage: {count(spec.tune.trials, 'trial')} for each of {pairs} "
              f"(encoding, train resolution): {spec.tune.trials * pairs} trainings")
    from harness.spec.design import design_warnings

    for line in design_warnings(spec):
        print(f"# warning: {line}")
    print(count(len(cells), "cell"))
    return 0




def _workers_text(args: argparse.Namespace, spec, cells: int) -> str:
    """How many workers ``run`` would start, in words: ``--workers`` over the spec's ``workers``,
    and what ``auto`` comes to here (without importing torch: on a GPU machine, one per GPU)."""
    from harness.devices import AUTO, auto_workers, usable_cpus

    given = args.workers if args.workers is not None else spec.workers
    if given == AUTO:
        text = (f"{auto_workers([], usable_cpus(), cells=cells)} worker(s) ('auto': one single-thread worker per "
                "core, at most one per cell" + ("" if spec.train.device == "cpu" else
                                               "; one per GPU instead where torch sees one") + ")")
    else:
        text = f"{given} worker(s)"
    if args.workers is not None and args.workers != spec.workers:
        text += f" (--workers {args.workers}, over the spec's workers: {spec.workers})"
    return text


def cmd_run(args: argparse.Namespace) -> int:
    if isinstance(args.workers, int) and args.workers < 0:
        raise HarnessError(f"--workers must be 0 or more, got {args.workers}")
    if args.dry_run:
        return dry_run(args)
    spec_from_args(args)  # a spec error before torch, MLflow and Optuna are imported (run_study reads it again)
    from harness.study.stages import run_study

    spec = run_study(args.spec, args.set, workers=args.workers, storage=args.storage,
                     tracking_uri=args.tracking_uri)
    if args.workers == 0:
        import shlex

        join = [args.spec, *args.set, "--storage", redact_url(spec.storage_url())]
        if args.tracking_uri:
            join += ["--tracking-uri", redact_url(spec.tracking())]
        hint = " (put the password in for ***)" if any("***" in part for part in join) else ""
        print(f"study {spec.name}: created with its cells queued; start workers with "
              f"`harness worker {shlex.join(join)}`{hint}")
        return 0
    from harness.study.evaluate import evaluate_spec

    # test sizes or variants added to the spec since cells were trained: measured on their kept weights
    res = evaluate_spec(spec)
    if res.evaluated:
        print(f"study {spec.name}: {count(sum(res.evaluated.values()), 'evaluation')} added to "
              f"{count(len(res.evaluated), 'cell')} trained before (their kept weights; nothing retrained)")
    for tag, why in res.damaged.items():
        print(f"error: cell {tag} could not be evaluated: its kept model is damaged ({why})", file=sys.stderr)
    from harness.study.stages import failed_cells

    failed = failed_cells(spec)  # cells that failed on every try: the study ended, not done
    if not failed:
        print(f"study {spec.name}: done. Results in MLflow: "
              f"mlflow ui --backend-store-uri {redact_url(spec.tracking())}, then open {_runs_page(spec)}")
    if not args.no_report and len(failed) < len(spec.cells()):  # the report shows the failed cells too
        _write_report(spec)
    if failed:
        _print_failed(spec, failed)
        return 3
    return 3 if res.damaged else 0


def _runs_page(spec) -> str:
    """The MLflow UI's page of the study's runs table (:meth:`harness.study.tracking.Tracker.runs_page`)."""
    from harness.study.tracking import Tracker

    return Tracker(spec.tracking(), spec.name, create=False).runs_page()


def _print_failed(spec, failed) -> None:
    """The cells that failed on every try, with their recorded reasons (exit status 3)."""
    print(f"error: study {spec.name}: {len(failed)} of {count(len(spec.cells()), 'cell')} failed on every try "
          f"(1 + max_retries {spec.max_retries}); the others are done. Fix the cause and run again with "
          "a higher --set max_retries to retry them:", file=sys.stderr)
    for cell, tries, reason in failed:
        print(f"  {cell.encoding} r{cell.train_resolution} seed {cell.seed}: {count(tries, 'try', 'tries')}, "
              f"last: {reason}",
              file=sys.stderr)


def _write_report(spec) -> None:
    """``reports/<study>/`` from the study's MLflow runs, its headlines and tables printed, and
    the report logged on the evaluate parent run (``run`` and ``evaluate`` end with it)."""
    from harness.report import build_report
    from harness.study.tracking import Tracker

    page = build_report(spec.tracking(), spec.name, Path("reports") / spec.name, spec=spec.resolved)
    print(_results_summary(page.parent / "report.md"))  # the answer in the log, as lm-evaluation-harness does
    print(f"report: {page}")
    Tracker(spec.tracking(), spec.name).log_report(spec.name, page.parent)  # on the evaluate parent run


def cmd_evaluate(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)  # checked before torch, MLflow and Optuna are imported
    from harness.study.evaluate import evaluate_spec

    res = evaluate_spec(spec)
    added = sum(res.evaluated.values())
    print(f"study {spec.name}: {count(added, 'evaluation')} added to {count(len(res.evaluated), 'cell')}, "
          f"{count(len(res.complete), 'cell')} had them all already; nothing was trained")
    for what, tags in (("not trained yet (run the study first)", res.untrained),
                       ("kept no model (trained before models were kept; retrain to evaluate)", res.no_weights)):
        if tags:
            print(f"{count(len(tags), 'cell')} {what}: {', '.join(tags)}")
    for tag, why in res.damaged.items():
        print(f"error: cell {tag} could not be evaluated: its kept model is damaged ({why})", file=sys.stderr)
    if not args.no_report:
        _write_report(spec)
    return 3 if res.no_weights or res.untrained or res.damaged else 0  # as `run` when cells failed: some were not evaluated


def _results_summary(markdown: Path) -> str:
    """The report's headlines, its main tables (one row per encoding, per regime and side), the
    primary analysis and the accuracy tables of every variant, as printed at the end of
    ``harness run``: the report's own Markdown, nothing recomputed."""
    text = markdown.read_text(encoding="utf-8")
    parts = text.split("\n## ")
    shown = ("Encodings: ", "Primary analysis", "Test accuracy per encoding variant")
    keep = [parts[0]] + ["## " + p for p in parts[1:] if p.startswith(shown)]
    return "\n".join(part.rstrip() + "\n" for part in keep)


def cmd_report(args: argparse.Namespace) -> int:
    load_plugins(args.plugin)  # figure plugins for a report from --experiment (a spec loads its own)
    if args.spec and is_override(args.spec) and not Path(args.spec).exists():  # `report --experiment E KEY=VALUE`
        args.set, args.spec = [args.spec, *args.set], None
    if args.set and not args.spec:
        from harness.report import ReportError

        raise ReportError(f"{args.set[0].partition('=')[0]}=...: overrides change a study spec; give the spec "
                          "(harness report SPEC KEY=VALUE ...), not --experiment")
    spec = spec_from_args(args) if args.spec else None  # checked before pandas, MLflow and seaborn are imported
    from harness.report import ReportError, build_report

    if spec is not None:
        from harness.files import sqlite_path

        name, uri, resolved = spec.name, spec.tracking(), spec.resolved
        if uri.startswith("sqlite:///") and not sqlite_path(uri).is_file():
            raise ReportError(f"{args.spec}: no tracking store at {redact_url(uri)}: run the study first")
    elif args.experiment and args.tracking_uri:
        name, uri, resolved = args.experiment, args.tracking_uri, None
        redact_url(uri)  # its password is remembered: hidden in whatever a message quotes
    else:
        raise ReportError("report needs a study spec, or --experiment NAME with --tracking-uri URI")
    page = build_report(uri, name, Path(args.out or Path("reports") / name), baseline=args.baseline, spec=resolved)
    print(page)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)  # checked before torch, MLflow and Optuna are imported (run_worker reads it again)
    from harness.study.worker import run_worker

    if args.gpu is not None:  # before CUDA starts in this process: the worker sees that GPU alone, as cuda:0
        import torch

        from harness.devices import pin_visible_index

        device = pin_visible_index(args.gpu)
        if not torch.cuda.is_available():  # asked only now: CUDA reads the variable when it starts
            raise HarnessError(f"--gpu {args.gpu}: no CUDA GPU {device!r} is visible here")
    extra = [f"storage={args.storage}"] + ([f"tracking_uri={args.tracking_uri}"] if args.tracking_uri else [])
    run_worker(args.spec, args.set + extra)
    from harness.study.stages import failed_cells

    failed = failed_cells(spec)  # as `run`: cells that failed on every try end the study, not done
    if failed:
        _print_failed(spec, failed)
        return 3
    print("worker: no cells left in the study")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)  # checked before Optuna is imported
    from harness.study.stages import study_status

    rows = study_status(spec)
    header = {"encoding": "encoding", "train_resolution": "train res", "seed": "seed", "state": "state",
              "detail": "detail"}
    widths = {k: max(len(r[k]) for r in [header, *rows]) for k in header}
    for r in [header, *rows]:
        print("  ".join(r[k].ljust(widths[k]) for k in header).rstrip())
    counts = {s: sum(r["state"] == s for r in rows) for s in ("done", "running", "failed", "waiting")}
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    return 0
