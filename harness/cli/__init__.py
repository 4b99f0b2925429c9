"""The command line: ``python -m harness COMMAND`` (or ``harness COMMAND``).

Heavy imports (torch, mlflow, optuna, seaborn) happen inside the commands that need them, so
``--help`` answers at once; the listings (``encodings``, ``datasets``, ``figures``) import
what they list (about a second, for torch). The commands that take a study spec (``run``,
``worker``, ``status``, ``evaluate``, ``report``) read and check it, with its overrides, before
importing any of them (the spec and the built-ins it names are torch-free), and ``run
--dry-run`` never imports them: a mistake is answered at once. A user error (bad spec, missing
file, unknown encoding) prints one message and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from harness.errors import HarnessError, redact_url

__all__ = ["main"]


def _parse_grid(text: str) -> tuple[int, int]:
    rows, sep, cols = text.lower().partition("x")
    if not sep or not rows.strip().isdigit() or not cols.strip().isdigit() or int(rows) < 1 or int(cols) < 1:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS with positive integers (e.g. 6x8), got {text!r}")
    return int(rows), int(cols)


def _parse_option(text: str) -> tuple[str, Any]:
    from harness.spec import parse_value  # YAML 1.2 floats (3e-4), as in a spec file

    import yaml

    from harness.spec.presets import yaml_problem

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), parse_value(value)
    except yaml.YAMLError as exc:  # argparse names the option: "argument --option: ..."
        raise argparse.ArgumentTypeError(f"{text!r}: the value is not valid YAML ({yaml_problem(exc)})") from None


def _parse_workers(text: str) -> int | str:
    """``--workers``: an integer (0: only create the study; a negative one is refused by ``run``) or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 or 'auto', got {text!r}") from None


def _is_override(text: str) -> bool:
    """A positional ``KEY=VALUE`` spec override (``train.lr=3e-4``), as Hydra users write them."""
    key, sep, _ = text.partition("=")
    return bool(sep) and bool(key) and not key.startswith("-") and not any(c.isspace() for c in key)


def _load_spec(args: argparse.Namespace):
    """The command's study spec with its overrides (``--set``, positional ``KEY=VALUE``, and
    ``--storage`` and ``--tracking-uri`` where the command has them), checked: no torch,
    MLflow or Optuna is imported."""
    from harness.spec import load_spec

    extra = [f"storage={args.storage}"] if getattr(args, "storage", None) else []
    extra += [f"tracking_uri={args.tracking_uri}"] if getattr(args, "tracking_uri", None) else []
    return load_spec(args.spec, [*args.set, *extra])


def _dry_run(args: argparse.Namespace) -> int:
    """``run --dry-run``: the resolved spec and the cells it would train; nothing is written
    (and nothing heavy imported: torch, MLflow, Optuna)."""
    import json

    import yaml

    spec = _load_spec(args)
    plain = json.loads(json.dumps(spec.resolved, default=str))  # tuples and sizes as YAML can write them
    print(f"# {args.spec}: resolved spec (dry run: nothing is trained or written)")
    print(yaml.safe_dump(plain, sort_keys=False, default_flow_style=None).rstrip())
    cells = spec.cells()
    print(f"# {len(cells)} cells to train (encoding, train resolution, seed), "
          f"{args.workers if args.workers is not None else spec.workers} worker(s):")
    width = max(len(c.encoding) for c in cells)
    for i, c in enumerate(cells, 1):
        print(f"{i:>4}  {c.encoding.ljust(width)}  r{c.train_resolution}  seed {c.seed}")
    if spec.tune:
        pairs = len(spec.encodings) * len(spec.train_resolutions)
        print(f"# and first the tune stage: {spec.tune.trials} trials for each of {pairs} "
              f"(encoding, train resolution): {spec.tune.trials * pairs} trainings")
    from harness.spec.design import design_warnings

    for line in design_warnings(spec):
        print(f"# warning: {line}")
    print(f"{len(cells)} cells")
    return 0


def _load_plugins(refs: Sequence[str]) -> None:
    from harness.registry import load_plugin

    for ref in refs:
        load_plugin(ref)


def _preset_dims(name: str):
    """The model dimensions of model preset ``name`` (its training grid from its image size)."""
    from harness.config import ViTConfig
    from harness.spec.presets import load_preset

    return ViTConfig.from_dict(load_preset("model", name)).dims


def _listing_plugins(refs: Sequence[str]) -> dict[str, str]:
    """Load the plugins a listing is given; a broken one is named, never hiding the others."""
    from harness.registry import load_plugin

    broken: dict[str, str] = {}
    for ref in refs:
        try:
            load_plugin(ref)
        except HarnessError as exc:
            broken[ref] = str(exc)
    return broken


def _print_listing(header: Sequence[str], rows: list[Sequence[str]], broken: dict[str, str]) -> None:
    """Columns padded to their width (the last one free), then the broken plugins on stderr."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    for ref, reason in broken.items():
        print(f"broken plugin {ref}: {reason}", file=sys.stderr)


def _first_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return doc[0].strip() if doc else ""


# ------------------------------------------------------------------------------ commands
def cmd_encodings(args: argparse.Namespace) -> int:
    from harness.encodings import ENCODINGS
    from harness.registry import param_count

    broken = _listing_plugins(args.plugin)
    dims = _preset_dims(args.preset)
    rows = []
    for name, cls in ENCODINGS.items():
        try:
            about = cls.describe()
            params = param_count(cls, dims)  # bounded: a plugin's count that never ends is named as broken
        except HarnessError as exc:  # options that do not fit this preset's dims
            params = f"? ({exc})"
        except Exception as exc:  # noqa: BLE001 - a plugin's own failure: named, never hiding the others
            broken[f"encoding {name} ({ENCODINGS.source(name)})"] = f"{type(exc).__name__}: {exc}"
            continue
        policy = "-"
        if about.policies:
            others = [p for p in about.policies if p != about.default_policy]
            policy = about.default_policy + (f" (or {', '.join(others)})" if others else "")
        options = ", ".join(f"{k}={v!r}" for k, v in about.options.items() if k != "policy") or "-"
        rows.append((name, ",".join(about.hooks) or "-", policy, params, "yes" if about.relative else "-",
                     options, about.description))
    header = ("name", "hooks", "new grid", f"params ({args.preset})", "relative", "options", "description")
    _print_listing(header, rows, {**broken, **ENCODINGS.broken})
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    import dataclasses

    from harness.data import DATASETS

    broken = _listing_plugins(args.plugin)
    rows = []
    for name, cls in DATASETS.items():
        options = ", ".join(f.name if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                            else f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Options)) or "-"
        rows.append((name, DATASETS.source(name), options, _first_line(cls)))
    _print_listing(("name", "source", "options (a name alone: required)", "description"), rows,
                   {**broken, **DATASETS.broken})
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from harness.report.figures import FIGURES

    broken = _listing_plugins(args.plugin)
    rows = [(name, FIGURES.source(name), f"{name}.png", cls.title or _first_line(cls))
            for name, cls in sorted(FIGURES.items(), key=lambda item: (item[1].order, item[0]))]
    _print_listing(("name", "source", "file", "title"), rows, {**broken, **FIGURES.broken})
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _load_plugins(args.plugin)
    from harness.show import show_encoding

    paths = show_encoding(args.name, grid=args.grid, out=args.out, preset=args.preset, options=dict(args.option))
    for p in paths:
        print(p)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if isinstance(args.workers, int) and args.workers < 0:
        raise HarnessError(f"--workers must be 0 or more, got {args.workers}")
    if args.dry_run:
        return _dry_run(args)
    _load_spec(args)  # a spec error before torch, MLflow and Optuna are imported (run_study reads it again)
    from harness.study.stages import run_study

    spec = run_study(args.spec, args.set, workers=args.workers, storage=args.storage,
                     tracking_uri=args.tracking_uri)
    if args.workers == 0:
        print(f"study {spec.name}: created with its cells queued; start workers with "
              f"`harness worker {args.spec} --storage URL`")
        return 0
    from harness.study.evaluate import evaluate_spec

    # test sizes or variants added to the spec since cells were trained: measured on their kept weights
    res = evaluate_spec(spec)
    if res.evaluated:
        print(f"study {spec.name}: {sum(res.evaluated.values())} evaluations added to {len(res.evaluated)} "
              "cells trained before (their kept weights; nothing retrained)")
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
    print(f"error: study {spec.name}: {len(failed)} of {len(spec.cells())} cells failed on every try "
          f"(1 + max_retries {spec.max_retries}); the others are done. Fix the cause and run again with "
          "a higher --set max_retries to retry them:", file=sys.stderr)
    for cell, tries, reason in failed:
        print(f"  {cell.encoding} r{cell.train_resolution} seed {cell.seed}: {tries} tries, last: {reason}",
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
    spec = _load_spec(args)  # checked before torch, MLflow and Optuna are imported
    from harness.study.evaluate import evaluate_spec

    res = evaluate_spec(spec)
    added = sum(res.evaluated.values())
    print(f"study {spec.name}: {added} evaluations added to {len(res.evaluated)} cells, "
          f"{len(res.complete)} cells had them all already; nothing was trained")
    for what, tags in (("not trained yet (run the study first)", res.untrained),
                       ("kept no model (trained before models were kept; retrain to evaluate)", res.no_weights)):
        if tags:
            print(f"{len(tags)} cells {what}: {', '.join(tags)}")
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
    _load_plugins(args.plugin)  # figure plugins for a report from --experiment (a spec loads its own)
    spec = _load_spec(args) if args.spec else None  # checked before pandas, MLflow and seaborn are imported
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
    spec = _load_spec(args)  # checked before torch, MLflow and Optuna are imported (run_worker reads it again)
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
    spec = _load_spec(args)  # checked before Optuna is imported
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


def cmd_train(args: argparse.Namespace) -> int:
    from harness.schema import TRAIN, Cell
    from harness.spec import check_resolution, check_seed, load_spec

    overrides = list(args.set)
    if args.tracking_uri:
        overrides.append(f"tracking_uri={args.tracking_uri}")
    spec = load_spec(args.spec, overrides)
    if args.encoding not in {e.label for e in spec.encodings}:  # an encoding the spec does not list: as it is
        import json  # the name as one quoted YAML string: 'none, rope1d' is one (unknown) name, not two

        spec = load_spec(args.spec, overrides + [(f"encodings=[{json.dumps(args.encoding)}]",
                                                  f"--encoding {args.encoding!r}"), "baseline=null"])
    # checked as the spec's own values, before anything is written
    res = spec.train_resolutions[0] if args.resolution is None else \
        check_resolution(spec, args.resolution, args.encoding, f"--resolution {args.resolution}")
    seed = spec.seeds[0] if args.seed is None else check_seed(args.seed, f"--seed {args.seed}")
    from harness.study.tracking import Tracker  # MLflow and torch: once the spec and the options checked out
    from harness.study.trial import TrialError, dataset_of, train_one

    dataset_of(spec)  # a missing, corrupt or empty dataset: fail before the tracking store is written
    tracker = Tracker(spec.tracking(), spec.name)
    parent = tracker.parent_run(spec.name, TRAIN, reopen=True)
    # the spec's entry (its options) when the spec lists the encoding by that label
    try:
        acc = train_one(spec, Cell(args.encoding, res, seed), stage=TRAIN, tracker=tracker, parent=parent)
    except KeyboardInterrupt:
        tracker.end(parent, "KILLED")
        raise
    except TrialError as exc:  # diverged, or the encoding broke its contract: the training failed, not the harness
        tracker.end(parent, "FAILED")
        print(f"{args.encoding} r{res} seed {seed}: training failed: {redact_url(exc.reason)} (its run is closed "
              "as FAILED)", file=sys.stderr)
        return 3  # as `run` when a cell failed
    except BaseException:
        tracker.end(parent, "FAILED")
        raise
    tracker.end(parent, "FINISHED")  # the stage's parent is closed after each training, re-opened by the next
    print(f"{args.encoding} r{res} seed {seed}: test accuracy at r{res} {acc:.4f}. "
          f"mlflow ui --backend-store-uri {redact_url(spec.tracking())}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from harness.bench import format_report, run_bench

    res = run_bench(args.preset, device=args.device, encodings=args.encodings, resolutions=args.resolutions,
                    batch_size=args.batch_size, repeats=args.repeats, threads=args.threads, json_path=args.json,
                    spec=args.spec, sweep_repeats=args.sweep_repeats, overrides=args.set)
    if args.json:
        print(f"json: {args.json}", file=sys.stderr)
    print(format_report(res))
    return 0


# ------------------------------------------------------------------------------ parser
class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (``harness show: error: ...; see harness show
    --help``) and exit status 2, as every other mistake a user can make."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="harness",
        description="Compare positional encodings for Vision Transformers at unseen resolutions.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("encodings", help="list the registered encodings")
    p.add_argument("--preset", default="small", help="model preset for the parameter counts (default: small)")
    p.add_argument("--plugin", action="append", default=[], metavar="REF",
                   help="load a plugin first: a .py path or module:attr (repeatable)")
    p.set_defaults(func=cmd_encodings)

    p = sub.add_parser("datasets", help="list the registered datasets and their options")
    p.add_argument("--plugin", action="append", default=[], metavar="REF",
                   help="load a plugin first: a .py path or module:attr (repeatable)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("figures", help="list the registered report figures")
    p.add_argument("--plugin", action="append", default=[], metavar="REF",
                   help="load a plugin first: a .py path or module:attr (repeatable)")
    p.set_defaults(func=cmd_figures)

    p = sub.add_parser("show", help="draw figures that explain an encoding on a patch grid")
    p.add_argument("name", help="encoding name")
    p.add_argument("--grid", type=_parse_grid, default=(8, 8), metavar="ROWSxCOLS", help="patch grid (default 8x8)")
    p.add_argument("--out", default="figures", help="output folder (default: figures/)")
    p.add_argument("--preset", default="small", help="model preset (default: small)")
    p.add_argument("--option", type=_parse_option, action="append", default=[], metavar="KEY=VALUE",
                   help="an encoding option (repeatable)")
    p.add_argument("--plugin", action="append", default=[], metavar="REF", help="load a plugin first")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("run", help="run a study (tune and evaluate stages), resuming what is done")
    p.add_argument("spec", help="study spec (YAML), e.g. studies/resolution_extrapolation.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec value with a dotted key, e.g. --set model.depth=4 (repeatable)")
    p.add_argument("--workers", type=_parse_workers, default=None, metavar="{N,auto}",
                   help="worker processes on the one study, each with cores/workers torch threads and, on a "
                        "GPU machine, its own GPU (round robin); auto: one per GPU, else one single-thread "
                        "worker per core (default: the spec's workers, else 1; 0: only create the study "
                        "and queue its cells)")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite file under runs/<study>/)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite file under runs/<study>/)")
    p.add_argument("--no-report", action="store_true", help="do not write reports/<study>/ at the end")
    p.add_argument("--dry-run", action="store_true",
                   help="check the spec (with the overrides), print it resolved and the cells it would train; "
                        "write nothing")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides like --set, e.g. train.lr=3e-4 model.depth=3 encodings.LABEL.options.NAME=V")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("evaluate", help="evaluate a study's trained models at added test sizes and variants, "
                                        "without training")
    p.add_argument("spec", help="the study's spec (YAML); change only evaluation keys (test_resolutions, "
                                "canvas_resolutions, regimes, policies, temperatures)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec value, e.g. --set 'test_resolutions=[8,16,24,32]' (repeatable)")
    p.add_argument("--storage", help="Optuna storage URL (default: the spec's, or the sqlite file under runs/)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: the spec's, or the sqlite file under runs/)")
    p.add_argument("--no-report", action="store_true", help="do not rebuild reports/<study>/ at the end")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides like --set")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="build a study's report from its MLflow runs")
    p.add_argument("spec", nargs="?", help="study spec (YAML); or give --experiment and --tracking-uri")
    p.add_argument("--experiment", help="MLflow experiment (the study's name)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI")
    p.add_argument("--baseline", help="encoding to compare against (default: the spec's, else learned)")
    p.add_argument("--out", help="output folder (default: reports/<study>/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec value")
    p.add_argument("--plugin", action="append", default=[], metavar="REF",
                   help="load a plugin first (e.g. a report figure): a .py path or module:attr (repeatable)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("worker", help="join an existing study (created by `run`) and work until no cell is left")
    p.add_argument("spec", help="the study's spec (YAML)")
    p.add_argument("--storage", required=True, help="the study's Optuna storage URL (e.g. postgresql://...)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (e.g. http://host:5000)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="the overrides `run` was given")
    p.add_argument("--gpu", type=int, metavar="K",
                   help="train on visible GPU K alone (K counts the GPUs this process sees, from 0)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides like --set (e.g. train.lr=3e-4)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", help="show each cell of a study: done, running, failed, waiting")
    p.add_argument("spec", help="the study's spec (YAML)")
    p.add_argument("--storage", help="Optuna storage URL (default: the spec's, or the sqlite file under runs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="the overrides `run` was given")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides like --set (e.g. train.lr=3e-4)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("train", help="train one model with the study trainer and tracking")
    p.add_argument("--encoding", required=True,
                   help="encoding label of the spec (with its options), or any registered encoding name")
    p.add_argument("--spec", default="studies/resolution_extrapolation.yaml",
                   help="spec for data, model and recipe (default: studies/resolution_extrapolation.yaml)")
    p.add_argument("--resolution", type=int, help="training resolution (default: the spec's first)")
    p.add_argument("--seed", type=int, help="seed (default: the spec's first)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec value")
    p.add_argument("--tracking-uri", help="MLflow tracking URI")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides like --set (e.g. train.lr=3e-4)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("bench", help="measure each encoding's training and evaluation cost (and timm's ViT)")
    p.add_argument("--preset", help="model preset (default: small, or the spec's model; with --spec it must be it)")
    p.add_argument("--spec", help="a study spec: measure its model, recipe, batch, training resolution, "
                                  "encoding entries and one cell's evaluation sweep "
                                  "(e.g. studies/resolution_extrapolation.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value of the --spec, e.g. --set train.eval_batch_size=64 (repeatable)")
    p.add_argument("--device", default="auto", metavar="{auto,cpu,cuda}", help="device (default: auto)")
    p.add_argument("--encodings", nargs="+", metavar="NAME",
                   help="encodings to measure (default: all registered; none is always added as the reference)")
    p.add_argument("--resolutions", nargs="+", type=int, metavar="R",
                   help="evaluation resolutions in px (default: the training resolution and twice it)")
    p.add_argument("--batch-size", type=int, help="images per step (default: the spec's train.batch_size, else 64)")
    p.add_argument("--repeats", type=int, default=5, help="timings per figure; the median is reported (default 5)")
    p.add_argument("--sweep-repeats", type=int, default=1,
                   help="timings of the spec's whole evaluation sweep of one cell (default 1)")
    p.add_argument("--threads", type=int, nargs="+", default=[0], metavar="N",
                   help="torch threads; several counts (e.g. 1 2) measure every figure at each, interleaved "
                        "(default: torch's default)")
    p.add_argument("--json", metavar="PATH", help="also write every number to this JSON file")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # positional KEY=VALUE overrides anywhere on the line (argparse takes only those before an option)
    if hasattr(args, "overrides"):
        args.overrides += [a for a in extra if _is_override(a)]
        extra = [a for a in extra if not _is_override(a)]
        bad = [o for o in args.overrides if not _is_override(o)]
        if bad:
            parser.error(f"expected KEY=VALUE overrides (e.g. train.lr=3e-4), got {' '.join(bad)}")
        args.set = [*args.set, *args.overrides]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from harness.interrupts import exit_status, handle_interrupts

    try:
        with handle_interrupts():  # Ctrl-C and SIGTERM: runs closed as KILLED, one line, exit 130 / 143
            return args.func(args)
    except HarnessError as exc:
        print(f"error: {redact_url(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        resumable = args.func in (cmd_run, cmd_worker)
        print("interrupted: " + ("the study can be resumed by running the same command" if resumable
                                 else "its run was closed as KILLED" if args.func is cmd_train else "stopped"),
              file=sys.stderr)
        return exit_status(exc)
