"""What several commands share: the parsers of option values (``--grid``, ``--option``,
``--workers``, ``KEY=VALUE``), reading a command's study spec with its overrides, loading
plugins and printing the listings."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from harness.errors import HarnessError


def parse_grid(text: str) -> tuple[int, int]:
    rows, sep, cols = text.lower().partition("x")
    if not sep or not rows.strip().isdigit() or not cols.strip().isdigit() or int(rows) < 1 or int(cols) < 1:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS with positive integers (e.g. 6x8), got {text!r}")
    return int(rows), int(cols)


def parse_option(text: str) -> tuple[str, Any]:
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


def parse_workers(text: str) -> int | str:
    """``--workers``: an integer (0: only create the study; a negative one is refused by ``run``) or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0 or 'auto', got {text!r}") from None


def is_override(text: str) -> bool:
    """A positional ``KEY=VALUE`` spec override (``train.lr=3e-4``), as Hydra users write them."""
    key, sep, _ = text.partition("=")
    return bool(sep) and bool(key) and not key.startswith("-") and not any(c.isspace() for c in key)


def spec_from_args(args: argparse.Namespace):
    """The command's study spec with its overrides (``--set``, positional ``KEY=VALUE``, and
    ``--storage`` and ``--tracking-uri`` where the command has them), checked: no torch,
    MLflow or Optuna is imported."""
    from harness.spec import load_spec

    extra = [f"storage={args.storage}"] if getattr(args, "storage", None) else []
    extra += [f"tracking_uri={args.tracking_uri}"] if getattr(args, "tracking_uri", None) else []
    return load_spec(args.spec, [*args.set, *extra])



def load_plugins(refs: Sequence[str]) -> None:
    from harness.registry import load_plugin

    for ref in refs:
        load_plugin(ref)


def preset_dims(name: str):
    """The model dimensions of model preset ``name`` (its training grid from its image size)."""
    from harness.config import ViTConfig
    from harness.spec.presets import load_preset

    return ViTConfig.from_dict(load_preset("model", name)).dims


def listing_plugins(refs: Sequence[str]) -> dict[str, str]:
    """Load the plugins a listing is given; a broken one is named, never hiding the others."""
    from harness.registry import load_plugin

    broken: dict[str, str] = {}
    for ref in refs:
        try:
            load_plugin(ref)
        except HarnessError as exc:
            broken[ref] = str(exc)
    return broken


def print_listing(header: Sequence[str], rows: list[Sequence[str]], broken: dict[str, str]) -> None:
    """Columns padded to their width (the last one free), then the broken plugins on stderr."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    for ref, reason in broken.items():
        print(f"broken plugin {ref}: {reason}", file=sys.stderr)


def first_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return doc[0].strip() if doc else ""
