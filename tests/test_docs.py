"""The documentation site (``mkdocs.yml``, ``docs/``): the strict build passes, fails on a broken
link, a missing anchor or a missing page, and its generated pages list every registered encoding
and every command of the parser; the generated blocks import no torch.

The builds need the ``docs`` extra (``pip install -e ".[docs]"``): without mkdocs they are
skipped, and under CI (which installs the extra) they fail."""

from __future__ import annotations

import argparse
import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HOOKS = ROOT / "docs" / "hooks.py"


def need_mkdocs() -> None:
    missing = [m for m in ("mkdocs", "material", "mkdocstrings_handlers.python")
               if importlib.util.find_spec(m.split(".")[0]) is None or importlib.util.find_spec(m) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} not installed (.ci/run installs the docs extra)")
        pytest.skip(f"{', '.join(missing)} not installed here (pip install -e \".[docs]\")")


HEAVY = ("torch", "mlflow", "optuna", "pandas")
#: mkdocs's command line, which says on stderr, as it exits, which of HEAVY the build imported
MKDOCS = ("import atexit, sys\n"
          f"atexit.register(lambda: print('imported:', sorted(set({HEAVY!r}) & set(sys.modules)), file=sys.stderr))\n"
          "from mkdocs.__main__ import cli\n"
          "cli()\n")


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``config`` into ``site``, run where the config lies (its
    hook and Griffe extension are named relative to it)."""
    return subprocess.run([sys.executable, "-c", MKDOCS, "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, cwd=config.parent, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def text_of(page: Path) -> str:
    """A built page's visible text, tags removed."""
    body = re.sub(r"<script.*?</script>", " ", page.read_text(encoding="utf-8"), flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


def first_column(page: Path) -> list[str]:
    """The first cell of every table row of the page's main content, as text."""
    cells = re.findall(r"<tr>\s*<td[^>]*>(.*?)</td>", page.read_text(encoding="utf-8"), flags=re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in cells]


def load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", HOOKS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def subcommands() -> dict[str, argparse.ArgumentParser]:
    from harness.cli import build_parser

    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """The site, built strictly from the repository's config, and the build's stderr."""
    need_mkdocs()
    out = tmp_path_factory.mktemp("docs") / "site"
    r = build(ROOT / "mkdocs.yml", out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stderr


@pytest.fixture(scope="module")
def site(built) -> Path:
    return built[0]


# ------------------------------------------------------------------------------ the build
def test_the_strict_build_passes_and_writes_every_page_of_the_nav(site):
    def pages(nav):
        for entry in nav:
            for value in entry.values():
                yield from pages(value) if isinstance(value, list) else [value]

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = list(pages(config["nav"]))
    assert len(listed) >= 20
    for md in listed:
        built = site / ("index.html" if md == "index.md" else md.removesuffix(".md") + "/index.html")
        assert built.is_file(), md
    # every page in docs/ is in the nav (else the strict build would have refused it)
    assert {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")} == set(listed)


def test_the_encodings_table_lists_every_registered_encoding(site):
    # the registry as a fresh interpreter sees it (built-ins and installed entry points), as the
    # docs build does: other tests register plugin encodings in this process
    names = subprocess.run([sys.executable, "-c", "from harness.encodings import ENCODINGS; "
                            "print(' '.join(ENCODINGS.names()))"], capture_output=True, text=True, check=True,
                           cwd=ROOT).stdout.split()
    rows = first_column(site / "encodings" / "index.html")
    assert len(names) >= 14
    assert sorted(r for r in rows if r in names) == names


def test_the_cli_reference_lists_every_command_and_option(site):
    page = site / "reference" / "cli" / "index.html"
    source, text = page.read_text(encoding="utf-8"), text_of(page)
    commands = subcommands()
    assert {"run", "worker", "report", "bench", "evaluate", "status", "train"} <= set(commands)
    for name, parser in commands.items():
        assert f'id="harness-{name}"' in source, name
        assert f"usage: harness {name}" in text, name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                assert flag in text, f"harness {name} {flag}"
            if action.help and action.help != argparse.SUPPRESS:
                words = " ".join(action.help.replace("`", "").split()[:4])
                assert words in " ".join(text.split()), f"harness {name}: {action.help}"


def test_the_api_reference_documents_the_extension_points(site):
    expected = {
        "api-encodings": ["harness.encodings.base.PositionalEncoding", "attn_bias", "after_block"],
        "api-datasets": ["harness.data.base.ImageDataset", "harness.data.base.DatasetOptions"],
        "api-figures": ["harness.report.figures.ReportFigure", "encoding_styles"],
        "api-config": ["harness.config.StudySpec", "harness.config.TrainConfig", "harness.config.ViTConfig"],
    }
    for page, names in expected.items():
        text = text_of(site / "reference" / page / "index.html")
        for name in names:
            assert name in text, (page, name)
    # the docstring itself, not only the name: the base class's words on its hooks
    assert "every hook is a no-op" in text_of(site / "reference" / "api-encodings" / "index.html")


BROKEN = {
    "a link to a page that does not exist": ("broken.md", "See [the page](no-such-page.md).\n", "no-such-page.md"),
    "a link to an anchor that does not exist": ("broken.md", "See [exit 2](reliability.md#no-such-anchor).\n",
                                                "no-such-anchor"),
    "a nav entry for a page that does not exist": (None, "", "missing-page.md"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_the_strict_build_fails_on(case, tmp_path):
    need_mkdocs()
    page, body, named = BROKEN[case]
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("__pycache__"))
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    if page:
        (tmp_path / "docs" / page).write_text(f"# Broken\n\n{body}", encoding="utf-8")
        config["nav"].append({"Broken": page})
    else:
        config["nav"].append({"Missing": named})
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    r = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert r.returncode != 0
    assert named in r.stderr + r.stdout


# ------------------------------------------------------------------------------ the generated blocks
def test_the_build_imports_no_torch(built):
    # the generated pages read the torch-free registry and parser, the API reference the sources
    assert "imported: []" in built[1].splitlines()


def test_the_encodings_table_says_what_the_registry_says():
    from harness.encodings import ENCODINGS, describe_encoding

    rows = {}
    for line in load_hooks().encodings_table().splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        rows[cells[0].strip("`")] = cells
    assert sorted(rows) == ENCODINGS.names()
    for name, (_, description, hooks, policies, relative, options, *_rest) in rows.items():
        summary = describe_encoding(name)
        assert description not in ("", "–"), name  # every built-in has a docstring
        assert re.findall(r"`(\w+)`", hooks) == list(summary.hooks), name
        assert relative == ("relative" if summary.relative else "absolute"), name
        if summary.policies:
            assert policies.startswith(f"**{summary.default_policy}**"), name
            assert set(re.findall(r"\w+", policies)) == set(summary.policies), name
        for key, default in summary.options.items():
            if key != "policy":
                assert f"`{key}={default!r}`" in options, (name, key)


def test_the_descriptions_are_the_class_docstrings():
    # read from the source without importing it; compared here with the imported class
    from harness.encodings import get_encoding

    hooks = load_hooks()
    for name in ("rope_axial", "cpe", "none"):
        cls = get_encoding(name)
        assert hooks._source_docstring(name, cls.__module__.rsplit(".", 1)[1]) == cls.__doc__.strip().splitlines()[0]


# ------------------------------------------------------------------------------ the README
def test_the_readme_is_short_and_opens_with_the_commands_and_the_answer():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = readme.splitlines()
    assert len(lines) <= 250
    first_screen = "\n".join(lines[:40])
    assert 'pip install -e ".[test]" && python -m harness run studies/resolution_extrapolation.yaml' in first_screen
    assert 'pip install -e ".[test,bench,postgres]" && python -m pytest' in first_screen
    assert "## The answer" in first_screen and "rope_dinov3" in first_screen


def test_the_readme_links_to_pages_that_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", readme)
    assert len(set(links)) >= 15
    for link in links:
        assert (ROOT / link).is_file(), link
    # every page of the site is linked from the README
    pages = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")}
    assert pages <= set(links) | {"docs/index.md"}, sorted(pages - set(links))
