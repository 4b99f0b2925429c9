"""The report's words and pages: the headline sentences and the control line, the summary
tables as text (Markdown, HTML, booktabs LaTeX), and the two pages, ``report.md`` and the
self-contained ``report.html``. Pure functions of the tables :func:`harness.report.summary_tables`
makes and the figures :mod:`harness.report` draws. Which tables the pages hold, in what order and
with what notes, is :mod:`harness.report.page_tables` (:class:`Section`, :func:`sections`, re-exported here)."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report import answer as ans
from harness.report.answer import control_lines
from harness.report import stats as st
from harness.report.figures.plotting import count_format
from harness.report.page_tables import Section, accuracy_cell, by_regime, pivot, sections, untrained_once

__all__ = ["Drawn", "Section", "control_lines", "headline_lines", "html_page", "latex_tables", "markdown_page",
           "sections", "tex_escape"]


def headline_lines(head: pd.DataFrame, untrained: pd.DataFrame, control: pd.DataFrame | None = None,
                   primary: pd.DataFrame | None = None, selection: pd.DataFrame | None = None,
                   analysis: Any = None, convergence: pd.DataFrame | None = None) -> list[str]:
    """The answer in sentences (Markdown): the declared primary analysis, when ``primary`` is
    given (:func:`harness.report.answer.primary_lines`); per regime and training resolution, the
    leading encoding above and below it under its selected variant, with its interval, its
    margin over the next encoding, whether the lead is significant after Holm over the leaders,
    P(lead) and the seeds 80% power would need (:func:`harness.report.answer.leader_line`:
    exploratory); with ``convergence``, a line when a run of a leader had not converged
    (:func:`harness.report.answer.budget_line`); then the position-free control
    (:func:`control_lines`), the runs that did not train, how variants were selected (with
    ``selection``) and how intervals are made."""
    lines = ans.primary_lines(primary, analysis) if primary is not None else []
    if len(head):
        lines.append(f"**Leaders** (exploratory: ranked on the scored images; Holm over these {len(head)} leads "
                     "only):")
    lines += [ans.leader_line(h) for h in head.itertuples(index=False)]
    if head.empty:
        lines.append("No run that trained was tested off its training resolution: nothing to rank.")
    budget = ans.budget_line(head, convergence) if convergence is not None else None
    if budget:
        lines.append(budget)
    if control is not None:
        lines += control_lines(control)
    if len(untrained):
        names = ", ".join(f"{u.encoding} seed {u.seed}" for u in untrained.itertuples(index=False))
        lines.append(f"{len(untrained)} run(s) did not train (final validation accuracy within "
                     f"{st.CHANCE_MARGIN} of chance) and are left out of every mean: {names}.")
    if selection is not None:
        lines.append(ans.selection_line(selection))
    lines.append(f"Intervals: {st.INTERVAL_METHOD}.")
    return lines


@dataclass(frozen=True)
class Drawn:
    """A figure of the page: its file, or why it could not be drawn."""

    name: str
    title: str
    caption: str
    path: Path | None = None
    error: str = ""


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or (not isinstance(v, str) and pd.isna(v)):
        return "–"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return count_format(v)  # 142k, not 1.42e+05
        return f"{v:.3g}" if v != 0 and abs(v) < 0.001 else f"{v:.3f}"
    return str(v)


def _md_table(df, message: str = "(none)") -> str:
    if df is None or not len(df):
        return f"{message}\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ LaTeX
_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--",
                "−": "-", "×": r"$\times$"}
_TEX_RE = re.compile("|".join(map(re.escape, _TEX_SPECIAL)))


def tex_escape(text: Any) -> str:
    r"""``text`` with LaTeX's special characters escaped (``rope_axial`` -> ``rope\_axial``)."""
    return _TEX_RE.sub(lambda m: _TEX_SPECIAL[m.group(0)], str(text))


def latex_tables(accuracy: pd.DataFrame, study: str = "", selection: pd.DataFrame | None = None,
                 gain: pd.DataFrame | None = None) -> str:
    r"""The report's tables as booktabs LaTeX, to paste into a paper.

    With ``selection`` (:func:`harness.report.selection.selection_table`), first the main tables: one
    ``table`` per regime, training resolution and side of it (``\label{tab:encodings-<regime>-
    <train>-<side>}``), one row per encoding: its variant chosen on one half of the test images
    and scored on the other, that accuracy, its default variant and accuracy, and the best
    variant on the test images as an optimistic upper bound. With ``gain``
    (:func:`harness.report.comparisons.gain_over_control`), the gain over the control per regime and
    training resolution (``\label{tab:gain-<regime>-<train>}``). Then the accuracy pivot tables of
    every variant: one ``table`` per regime and training resolution (``\label{tab:accuracy-
    <regime>-<train>}``), one row per encoding variant, one column per test size. A cell is the
    mean test accuracy over the seeds that trained with its interval in brackets, ``mean [lo,
    hi]`` (an interval cut to [0, 1] is not symmetric, so no ``±``; the caption says how it is computed);
    ``(1 seed)`` without an interval; a variant none of whose runs trained reads "did not train
    (n runs)". No cell is bold: the best of a column is chosen on the images it is scored on.
    Every text is escaped (:func:`tex_escape`). Needs ``\usepackage{booktabs}``. ``accuracy``:
    :func:`harness.report.stats.accuracy_summary`.
    """
    parts = [f"% Accuracy tables of the study {study or '(unnamed)'}, written by `harness report`.",
             r"% Needs \usepackage{booktabs}.", ""]
    if accuracy.empty:
        return "\n".join([*parts, "% No run was tested: no table.", ""])
    main = selection.loc[selection["side"].isin(ans.SIDES)] if selection is not None else None
    for (regime, train, side), g in (main.groupby(["regime", "train_resolution", "side"], sort=True)
                                     if main is not None else ()):
        table = ans.main_table(g)
        caption = (f"Each encoding at test sizes {side} its training size, {tex_escape(regime)} regime, trained at "
                   f"{train} px: its variant (new-grid policy, attention temperature) chosen on one half of the test "
                   "images and scored on the other, both ways, averaged; its default variant on all of the test "
                   "images; and the best variant on the test images themselves, an optimistic upper bound. Each "
                   "seed's mean over the sizes on this side; mean over seeds and in brackets its interval, [lo, hi] "
                   f"({tex_escape(st.INTERVAL_METHOD)}).")
        parts += _tex_table(caption, f"encodings-{regime}-{train}-{side}", "llclcl",
                            ["Encoding", "Selected variant", "Accuracy", "Default variant", "Accuracy",
                             "Best on test (upper bound)"],
                            [[tex_escape(v) for v in row] for row in table.itertuples(index=False)])
    for (regime, train), g in (gain.groupby(["regime", "train_resolution"], sort=True)
                               if gain is not None and len(gain) else ()):
        table = ans.gain_table(g)
        sizes = [re.sub(r"(\d)x(\d)", r"\1$\\times$\2", tex_escape(c)) for c in table.columns[1:-1]]
        caption = (f"What position adds: gain over {tex_escape(st.CONTROL)}, {tex_escape(regime)} regime, trained at "
                   f"{train} px. Each encoding's selected accuracy minus the position-free control's at the same test "
                   "size, paired by seed: mean over the pairs and in brackets its interval, [lo, hi] "
                   f"({tex_escape(st.INTERVAL_METHOD)}); first row: the control's own accuracy. \"Did not train\": "
                   "no run of the encoding beat chance.")
        parts += _tex_table(caption, f"gain-{regime}-{train}", "l" + "c" * len(sizes) + "c",
                            ["Encoding", *sizes, "Runs that trained"],
                            [[tex_escape(v) for v in row] for row in table.itertuples(index=False)])
    for name, regime, g in by_regime(accuracy):
        train = g.train_resolution.iloc[0]
        piv = pivot(untrained_once(g), accuracy_cell(plain=tex_escape))
        sizes = [re.sub(r"(\d)x(\d)", r"\1$\\times$\2", tex_escape(c)) for c in piv.columns[1:]]
        caption = (f"Test accuracy per encoding variant: {tex_escape(name)}. Each cell: mean test accuracy over "
                   "the seeds that trained, and in brackets the lower and upper end of its interval, [lo, hi] "
                   f"({tex_escape(st.INTERVAL_METHOD)}). A variant is (encoding, new-grid policy, attention "
                   "temperature), evaluated on the same trained weights; no cell is marked best, since the best of a "
                   "column is chosen on the images it is scored on.")
        parts += _tex_table(caption, f"accuracy-{regime}-{train}", "l" + "c" * len(sizes),
                            ["Encoding variant", *sizes],
                            [[tex_escape(row[0]), *row[1:]] for row in piv.itertuples(index=False)])
    return "\n".join(parts)


def _tex_table(caption: str, label: str, columns: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """One booktabs ``table``: caption above, label, header, rows."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", label)
    return [r"\begin{table}[htbp]", r"\centering", r"\small", rf"\caption{{{caption}}}", rf"\label{{tab:{slug}}}",
            rf"\begin{{tabular}}{{{columns}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule",
            *(" & ".join(row) + r" \\" for row in rows), r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]


def markdown_page(study: str, headline: list[str], sections: list[Section], figures: list[Drawn]) -> str:
    parts = [f"# Report: {study}\n", *[f"{h}\n" for h in headline]]
    for s in sections:
        note = f"{s.note}\n\n" if s.note else ""
        parts.append(f"## {s.title}\n\n{note}{_md_table(s.table, s.message)}")
    parts.append("## Figures\n")
    for f in figures:
        picture = f"could not be drawn: {f.error}" if f.error else f"![{f.title}]({f.path.name})"
        parts.append(f"**{f.title}.** {f.caption}\n\n{picture}\n")
    return "\n".join(parts)


def _bold(text: str) -> str:
    """Escaped HTML of text with Markdown's **bold** and `code` (a headline line)."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _html_table(df, cls: str = "", message: str = "(none)") -> str:
    if df is None or not len(df):
        return f"<p>{_bold(message)}</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_bold(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _html_figure(f: Drawn) -> str:
    """One figure, its PNG embedded, with its title and caption."""
    text = f"<strong>{html.escape(f.title)}.</strong> {html.escape(f.caption)}"
    if f.error:
        return f'<figure id="{f.name}" class="failed"><figcaption>{text} Could not be drawn: ' \
               f"{html.escape(f.error)}</figcaption></figure>"
    png = base64.b64encode(f.path.read_bytes()).decode()
    return (f'<figure id="{f.name}"><img alt="{html.escape(f.title)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{text}</figcaption></figure>")


def _html_section(s: Section) -> str:
    """A section of the page: its title, note and table; a collapsed one inside <details>, its
    title the summary (the full tables stay one click away, under the main ones)."""
    note = f'<p class="note">{_bold(s.note)}</p>' if s.note else ""
    table = _html_table(s.table, "main" if s.key.startswith("encodings") else "", s.message)
    if s.collapsed:
        return f'<details id="{s.key}"><summary>{_bold(s.title)}</summary>{note}{table}</details>'
    return f'<h2 id="{s.key}">{_bold(s.title)}</h2>{note}{table}'


def html_page(study: str, headline: list[str], sections: list[Section], figures: list[Drawn], spec: dict,
          provenance: dict) -> str:
    imgs = "".join(map(_html_figure, figures))
    body = "".join(map(_html_section, sections))
    prov = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in provenance.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Report: {html.escape(study)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f3f3f3; }}
td:first-child {{ text-align: left; }}
p.note {{ font-size: 0.85em; color: #555; max-width: 60em; }}
figure {{ display: inline-block; margin: 0.5em; }} img {{ max-width: 100%; }}
figure.failed {{ color: #a33; }}
.headline {{ background: #eef6ee; padding: 0.8em 1em; border-left: 4px solid #4a4; }}
details {{ margin: 0.6em 0; }} summary {{ font-size: 1.1em; font-weight: bold; cursor: pointer; }}
pre {{ background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.8em; }}
</style></head><body>
<h1>Report: {html.escape(study)}</h1>
<div class="headline">{"".join(f"<p>{_bold(h)}</p>" for h in headline)}</div>
{body}
<h2>Figures</h2>{imgs}
<h2>Provenance</h2><table>{prov}</table>
<h2>Study spec (resolved)</h2><pre>{html.escape(json.dumps(spec, indent=2, default=str))}</pre>
</body></html>
"""
