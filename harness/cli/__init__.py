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
from typing import Sequence

from harness.errors import HarnessError, redact_url
from harness.cli.common import is_override, parse_grid, parse_option, parse_workers
from harness.cli.bench import cmd_bench
from harness.cli.listings import cmd_datasets, cmd_encodings, cmd_figures, cmd_show
from harness.cli.study import cmd_evaluate, cmd_report, cmd_run, cmd_status, cmd_worker
from harness.cli.train import cmd_train

__all__ = ["build_parser", "main"]


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
    p.add_argument("--grid", type=parse_grid, default=(8, 8), metavar="ROWSxCOLS", help="patch grid (default 8x8)")
    p.add_argument("--out", default="figures", help="output folder (default: figures/)")
    p.add_argument("--preset", default="small", help="model preset (default: small)")
    p.add_argument("--option", type=parse_option, action="append", default=[], metavar="KEY=VALUE",
                   help="an encoding option (repeatable)")
    p.add_argument("--plugin", action="append", default=[], metavar="REF", help="load a plugin first")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("run", help="run a study (tune and evaluate stages), resuming what is done")
    p.add_argument("spec", help="study spec (YAML), e.g. studies/resolution_extrapolation.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a spec value with a dotted key, e.g. --set model.depth=4 (repeatable)")
    p.add_argument("--workers", type=parse_workers, default=None, metavar="{N,auto}",
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
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides like --set (e.g. name=my_study)")
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
    # positional KEY=VALUE overrides of the --spec, as the other commands that take a spec (no positional slot:
    # main() collects them from the line)
    p.set_defaults(func=cmd_bench, overrides=[])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # a mistake after the command is the command's: its name and its --help in the one line
    command = next((a.choices[args.command] for a in parser._actions
                    if isinstance(a, argparse._SubParsersAction) and args.command in a.choices), parser)
    # positional KEY=VALUE overrides anywhere on the line (argparse takes only those before an option)
    if hasattr(args, "overrides"):
        args.overrides += [a for a in extra if is_override(a)]
        extra = [a for a in extra if not is_override(a)]
        bad = [o for o in args.overrides if not is_override(o)]
        if bad:
            command.error(f"expected KEY=VALUE overrides (e.g. train.lr=3e-4), got {' '.join(bad)}")
        args.set = [*args.set, *args.overrides]
    if extra:
        command.error(f"unrecognized arguments: {' '.join(extra)}")
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
