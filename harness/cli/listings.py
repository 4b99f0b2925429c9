"""The listing commands: ``harness encodings``, ``datasets`` and ``figures``, and
``harness show`` (an encoding's positions and attention, drawn; :mod:`harness.cli.show`)."""

from __future__ import annotations

import argparse

from harness.errors import HarnessError
from harness.cli.common import first_line, listing_plugins, load_plugins, preset_dims, print_listing


def cmd_encodings(args: argparse.Namespace) -> int:
    from harness.encodings import ENCODINGS
    from harness.registry import param_count

    broken = listing_plugins(args.plugin)
    dims = preset_dims(args.preset)
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
    print_listing(header, rows, {**broken, **ENCODINGS.broken})
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    import dataclasses

    from harness.data import DATASETS

    broken = listing_plugins(args.plugin)
    rows = []
    for name, cls in DATASETS.items():
        options = ", ".join(f.name if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                            else f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Options)) or "-"
        rows.append((name, DATASETS.source(name), options, first_line(cls)))
    print_listing(("name", "source", "options (a name alone: required)", "description"), rows,
                   {**broken, **DATASETS.broken})
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from harness.report.figures import FIGURES

    broken = listing_plugins(args.plugin)
    rows = [(name, FIGURES.source(name), f"{name}.png", cls.title or first_line(cls))
            for name, cls in sorted(FIGURES.items(), key=lambda item: (item[1].order, item[0]))]
    print_listing(("name", "source", "file", "title"), rows, {**broken, **FIGURES.broken})
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    load_plugins(args.plugin)
    from harness.cli.show import show_encoding

    paths = show_encoding(args.name, grid=args.grid, out=args.out, preset=args.preset, options=dict(args.option))
    for p in paths:
        print(p)
    return 0
