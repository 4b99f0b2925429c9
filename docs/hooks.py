"""MkDocs hook: the documentation pages that are generated, never written by hand.

A page asks for a generated block with a marker on a line of its own, replaced when the site
is built (``mkdocs.yml`` registers this file under ``hooks:``):

- ``<!-- harness:encodings -->``: the table of every registered encoding, from the registry
  (:func:`harness.encodings.describe_encoding`: hooks, new-grid policies, relative or
  absolute, options with their defaults) and, for the one-line description, the class
  docstring read from the encoding's source file;
- ``<!-- harness:cli -->``: the command reference, from the argparse parser that ``harness``
  itself uses (:func:`harness.cli.build_parser`): every command, its usage and every option
  with its help and default.

Neither imports torch: the registry and the declarations of the built-ins
(``harness.encodings._catalog``) and the parser are torch-free, and the description is read
from the source with :mod:`ast`. A plugin encoding installed through an entry point has no
declaration; its class is imported (with torch) to describe it. A marker whose block cannot
be made stops the build (an error, not an empty table).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
from pathlib import Path
from typing import Any

MARKERS = {
    "<!-- harness:encodings -->": "encodings_table",
    "<!-- harness:cli -->": "cli_reference",
}


# ------------------------------------------------------------------------------ the encodings
def _cell(text: Any) -> str:
    """``text`` safe inside one Markdown table cell: no line break, ``|`` escaped, and ``<``
    and ``>`` outside code spans written as entities (``reports/<study>/`` is no HTML tag)."""
    parts = str(text).replace("\n", " ").split("`")
    parts[::2] = [p.replace("<", "&lt;").replace(">", "&gt;") for p in parts[::2]]
    return "`".join(parts).replace("|", "\\|")


def _source_docstring(name: str, module: str) -> str:
    """The first line of the docstring of the class that ``encodings/<module>.py`` registers
    as ``name`` (``@register_encoding(name)``), read without importing the file; '' if none."""
    spec = importlib.util.find_spec("harness.encodings")
    assert spec is not None and spec.submodule_search_locations
    path = Path(list(spec.submodule_search_locations)[0]) / f"{module}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for deco in node.decorator_list:
            if (isinstance(deco, ast.Call) and getattr(deco.func, "id", getattr(deco.func, "attr", "")) == "register_encoding"
                    and deco.args and isinstance(deco.args[0], ast.Constant) and deco.args[0].value == name):
                doc = ast.get_docstring(node) or ""
                return doc.strip().splitlines()[0] if doc.strip() else ""
    return ""


def _encoding_rows() -> list[dict[str, str]]:
    """One row per registered encoding, in registry order."""
    from harness.encodings import ENCODINGS, describe_encoding
    from harness.encodings._catalog import BUILTINS

    declared = {d.name: d for d in BUILTINS}
    rows = []
    for name in ENCODINGS.names():
        summary = describe_encoding(name)
        if name in declared:
            description = _source_docstring(name, declared[name].module)
            head_dim = declared[name].head_dim_multiple
            source = "built-in"
        else:  # an entry-point plugin: its summary came from the class
            description = summary.description
            head_dim = getattr(ENCODINGS.get(name), "head_dim_multiple", 1)
            source = ENCODINGS.source(name)
        if summary.policies:
            others = [p for p in summary.policies if p != summary.default_policy]
            policies = f"**{summary.default_policy}**" + "".join(f", {p}" for p in others)
        else:
            policies = "–"
        options = ", ".join(f"`{k}={v!r}`" for k, v in summary.options.items() if k != "policy") or "–"
        rows.append({
            "name": f"`{name}`",
            "description": description or "–",
            "hooks": ", ".join(f"`{h}`" for h in summary.hooks) or "–",
            "policies": policies,
            "relative": "relative" if summary.relative else "absolute",
            "options": options,
            "head_dim": f"multiple of {head_dim}" if head_dim > 1 else "any",
            "source": source,
        })
    return rows


def encodings_table() -> str:
    """The Markdown table of every registered encoding."""
    header = ("name", "what it is", "hooks", "new-grid policies (default in bold)", "relative or absolute",
              "options (defaults)", "head dimension", "from")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in _encoding_rows():
        lines.append("| " + " | ".join(_cell(v) for v in row.values()) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ the command line
def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the order ``--help`` lists them."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]


def _usage(parser: argparse.ArgumentParser) -> str:
    """The usage line ``harness NAME --help`` prints, wrapped at 100 columns whatever the terminal."""
    formatter = argparse.HelpFormatter(prog=parser.prog, width=100)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _argument(action: argparse.Action) -> tuple[str, str]:
    """(how it is written, what it does) of one argument, as ``--help`` would describe it."""
    if action.option_strings:
        metavar = f" {action.metavar or action.dest.upper()}" if action.nargs != 0 else ""
        written = ", ".join(f"`{s}{metavar}`" for s in action.option_strings)
    else:
        written = f"`{action.metavar or action.dest}`"
    helptext = (action.help or "").replace("%(default)s", str(action.default)).replace("%%", "%")
    notes = []
    if action.required and action.option_strings:
        notes.append("required")
    if (action.nargs in ("*", "+") or isinstance(action, argparse._AppendAction)) and "repeatable" not in helptext:
        notes.append("repeatable" if action.option_strings else "any number")
    if action.nargs == "?" and not action.option_strings:
        notes.append("optional")
    if action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in helptext:
        notes.append(f"default: {action.default}")
    if notes:
        helptext += f" ({', '.join(notes)})"
    return written, helptext


def cli_reference() -> str:
    """The Markdown reference of every ``harness`` command, from the parser."""
    from harness.cli import build_parser

    parser = build_parser()
    commands = _subcommands(parser)
    out = [parser.description or "", "",
           "| command | what it does |", "|---|---|"]
    out += [f"| [`{name}`](#harness-{name}) | {_cell(helptext)} |" for name, helptext, _ in commands]
    for name, helptext, sub in commands:
        out += ["", f"## `harness {name}` {{#harness-{name}}}", "", helptext[:1].upper() + helptext[1:] + ".", "",
                "```text", _usage(sub), "```", ""]
        rows = [_argument(a) for a in sub._actions if not isinstance(a, argparse._HelpAction)]
        if rows:
            out += ["| argument | meaning |", "|---|---|"]
            out += [f"| {_cell(w)} | {_cell(h)} |" for w, h in rows]
    return "\n".join(out)


# ------------------------------------------------------------------------------ the hook
def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each generated block's marker with the block."""
    for marker, func in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, globals()[func]())
    return markdown
