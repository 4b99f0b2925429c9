"""The report's words and pages: the headline sentences and the control line, the summary
tables as text (Markdown, HTML, booktabs LaTeX), and the two pages, ``report.md`` and the
self-contained ``report.html``. Pure functions of the tables :func:`harness.report.summary_tables`
makes and the figures :mod:`harness.report` draws."""

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
from harness.report import curves as rc
from harness.report.answer import control_lines
from harness.report import stats as st
from harness.report.figures.plotting import count_format, size_order

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


# ------------------------------------------------------------------------------ tables as text
@dataclass(frozen=True)
class Section:
    """A table of the page: its anchor, title, a note under the title, and the table (or a message)."""

    key: str
    title: str
    note: str
    table: pd.DataFrame | None
    message: str = "(none)"
    #: report.html folds it into a <details> section (the full tables under the main ones)
    collapsed: bool = False


def _untrained_once(frame: pd.DataFrame) -> pd.DataFrame:
    """An accuracy summary with each encoding none of whose runs trained as one row (its first
    variant, named ``alibi2d (all 4 variants)``), not one "did not train" row per variant."""
    dead = frame.groupby("encoding")["n_seeds"].max() == 0
    keep = []
    for enc, g in frame.groupby("encoding", sort=False):
        variants = sorted(g["variant"].unique())
        if dead.get(enc, False) and len(variants) > 1:
            g = g.loc[g["variant"] == variants[0]].assign(variant=f"{enc} (all {len(variants)} variants)")
        keep.append(g)
    return pd.concat(keep) if keep else frame


def _pivot(frame: pd.DataFrame, cell) -> pd.DataFrame:
    """Rows: variant; columns: test size (in size order); cells: ``cell(row)`` (a string)."""
    out = frame.assign(_text=[cell(r) for r in frame.itertuples(index=False)])
    piv = out.pivot(index="variant", columns="test_resolution", values="_text")[size_order(frame)]
    piv = piv.fillna("").reset_index()
    piv.columns.name = None
    return piv.rename(columns={"variant": "encoding variant", **{c: f"{c} px" for c in piv.columns[1:]}})


def _accuracy_cell(plain=str) -> Any:
    """A cell of an accuracy pivot: mean [interval], or "did not train", through ``plain``. No
    cell is bold: the best of a column is chosen on the images it is scored on (the main tables
    show each encoding's variant chosen on the other half, and the best on test as an upper bound)."""
    def cell(r) -> str:
        if r.n_seeds == 0:
            return plain(f"did not train ({r.n_untrained} run{'s' if r.n_untrained != 1 else ''})")
        text = f"{r.mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" if r.n_seeds > 1 else f"{r.mean:.3f} (1 seed)"
        if r.n_untrained:
            text += f" ({r.n_seeds}/{r.n_seeds + r.n_untrained} trained)"
        return plain(text)
    return cell


def _retention_cell(r) -> str:
    if r.n_seeds == 0 or math.isnan(r.retention):
        return "–"
    return f"{r.retention:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]" if r.n_seeds > 1 else f"{r.retention:.2f} (1 seed)"


def _by_regime(frame: pd.DataFrame):
    for (regime, train), g in frame.groupby(["regime", "train_resolution"], sort=True):
        yield f"{regime} regime, trained at {train} px", regime, g


_MAIN_NOTE = ("One row per encoding. Selected variant: chosen on half A of the test images and scored on half B, "
              "and chosen on B and scored on A, the two averaged (\"A: ...; B: ...\" when the halves chose "
              "differently). Each seed's mean over the sizes on this side, then the mean over seeds "
              f"[{st.INTERVAL_METHOD}]; the size columns are the means over seeds at each size. Default variant: the "
              "encoding's own policy, temperature none, on all of the test images: what a user gets without "
              "choosing. Best on test: the variant with the best mean on the test images themselves, an optimistic "
              "upper bound (chosen on the images it is scored on).")


def sections(tables: dict[str, Any], baseline: str | None) -> list[Section]:
    """Every table of the report, in page order: the main tables (one row per encoding, per
    regime, training size and side), the primary analysis, what position adds (the gain over
    the control, per regime and training size), the ranking; then, folded in report.html, every
    variant's accuracy and retention, the extrapolation table and the exploratory comparisons;
    then the runs that did not train, the runs that had not converged, cost, missing cells and
    time."""
    acc, ret, selection = tables["accuracy"], tables["retention"], tables["selection"]
    out = []
    main = selection.loc[selection["side"].isin(ans.SIDES)].copy()
    main["_side"] = main["side"].map({s: i for i, s in enumerate(ans.SIDES)})
    for (regime, train, _), g in main.groupby(["regime", "train_resolution", "_side"], sort=True):
        side = g["side"].iloc[0]
        out.append(Section(f"encodings-{regime}-{train}-{side}",
                           f"Encodings: {regime} regime, {side} the training size ({train} px)", _MAIN_NOTE,
                           ans.main_table(g, tables["selected"], tables.get("convergence"))))
    primary = tables.get("primary")
    if primary is not None and len(primary):
        out.append(Section("primary", "Primary analysis: the declared comparisons",
                           "The study's declared question (its spec's analysis: section): each comparison per regime, "
                           "side and training size, on each seed's mean selected accuracy over the side's sizes, "
                           "paired by seed. A − B with its bootstrap interval over seeds; P(A > B): the chance that a "
                           "run of A beats a run of B at the same test size (ties count one half), averaged over "
                           "the sizes, with a bootstrap interval over seeds stratified by size; two-sided paired "
                           "t-test, Holm-corrected over this family alone; the seeds one two-sided paired t-test at "
                           "alpha (before the Holm correction) would need for 80% power, taking the observed effect "
                           "and spread as the truth.", ans.primary_table(primary)))
    out += _gain_sections(tables.get("gain"))
    friedman = tables.get("friedman")
    if friedman is not None and len(friedman):
        alpha = float(friedman["alpha"].iloc[0])
        out.append(Section("ranking", "Ranking of the encodings (exploratory)", ans.ranking_note(alpha),
                           ans.ranking_table(friedman)))
    for i, (name, regime, g) in enumerate(_by_regime(acc)):
        out.append(Section("accuracy" if i == 0 else f"accuracy-{regime}-{g.train_resolution.iloc[0]}",
                            f"Test accuracy per encoding variant: {name}",
                            f"Every variant (exploratory). Mean test accuracy [{st.INTERVAL_METHOD}]. A variant is "
                            "(encoding, new-grid policy, attention temperature), evaluated on the same trained "
                            "weights. No cell is marked best: the best of a column is chosen on the images it is "
                            "scored on (the tables above choose on the other half).",
                            _pivot(_untrained_once(g), _accuracy_cell()), collapsed=True))
    for name, regime, g in _by_regime(ret):
        out.append(Section(f"retention-{regime}-{g.train_resolution.iloc[0]}", f"Retention: {name}",
                            "Chance-normalised retention of each run, (acc − chance) / (acc at the training size − "
                            f"chance), mean over seeds [{st.INTERVAL_METHOD}]. 1: as good as at the training size; "
                            f"0: chance. – : undefined (the runs did not train or were within {st.CHANCE_MARGIN} of "
                            "chance at the training size).", _pivot(g, _retention_cell), collapsed=True))
    out.append(Section("extrapolation", "Extrapolation: mean accuracy below / at / above the training resolution",
                        "Every variant (exploratory). Mean over the test sizes on each side of each size's mean over "
                        "seeds (runs that trained).", tables["extrapolation"], collapsed=True))
    comp = tables["comparisons"]
    tested = comp.loc[comp["p_value"].notna()].sort_values(["p_holm", "kind"], kind="stable")
    about = (f"Exploratory, with their own correction. Policy vs policy and temperature vs none: paired by run (the "
             f"same weights); encoding vs "
             f"{baseline or 'a baseline (none in this study: set baseline: in the spec, or --baseline)'}, each under "
             f"its selected variant: paired by seed. Two-sided paired t-tests, Holm-corrected over these "
             f"{len(comp)} comparisons (not the primary family); "
             f"{len(comp) - len(tested)} could not be tested (too few pairs: fewer than {st.MIN_PAIRS}, or no "
             "variance). "
             "Below: the tested ones, most significant first; every comparison is in comparisons.csv.")
    out.append(Section("comparisons", "Paired comparisons (exploratory, Holm-corrected within their family)", about,
                       tested, collapsed=True))
    out.append(Section("untrained", "Runs that did not train",
                        f"Final validation accuracy within {st.CHANCE_MARGIN} of chance: flagged, and left out of "
                        "every mean, interval, retention and comparison.", tables["untrained"]))
    if tables.get("convergence") is not None:
        out.append(_convergence_section(tables["convergence"]))
    devices = ", ".join(sorted({d for v in tables["cost"].get("device", []) for d in str(v).split(", ")})) or "unknown"
    out.append(Section("cost", "Cost: parameters, and training throughput measured during the study "
                        f"(device: {devices})",
                        "Throughput as measured while the study trained, alongside whatever else the machine ran: "
                        "not a benchmark (`harness bench` is one).", _counts(tables["cost"])))
    out.append(Section("missing", "Cells of the study that are missing or failed", "", tables["missing"]))
    if "time" in tables and len(tables["time"]):
        out.append(Section("time", "Where the time went",
                           "Seconds per phase, summed over the finished runs that logged their breakdown (worker-"
                           "seconds: two workers' runs overlap in time), their share of the runs' total and the mean "
                           "per run; then the wall time of the last `harness run`. `other`: what no phase covers "
                           "(Python between phases).", _time_table(tables["time"])))
    return out


GAIN_TITLE = f"What position adds: gain over `{st.CONTROL}`"


def _gain_sections(gain: pd.DataFrame | None) -> list[Section]:
    """The gain over the control, one section per regime and training resolution
    (:func:`harness.report.answer.gain_table`); one section saying so when the study has no control."""
    if gain is None:
        return []
    if gain.empty:
        return [Section("gain", GAIN_TITLE, "", None, message=f"This study has no position-free control "
                        f"(`{st.CONTROL}`): what position adds over it cannot be measured.")]
    return [Section(f"gain-{regime}-{train}", f"{GAIN_TITLE}: {regime} regime, trained at {train} px", ans.GAIN_NOTE,
                    ans.gain_table(g))
            for (regime, train), g in gain.groupby(["regime", "train_resolution"], sort=True)]


def _convergence_section(conv: pd.DataFrame) -> Section:
    """The runs that had not converged (:mod:`harness.report.curves`), and how many could not be told."""
    return Section("convergence", "Runs that had not converged", rc.check_note(conv), rc.not_converged(conv))


def _time_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The time totals as text: seconds to 0.1, shares as percentages."""
    return pd.DataFrame({
        "phase": frame["phase"],
        "seconds": [f"{v:.1f}" for v in frame["seconds"]],
        "share": ["" if pd.isna(v) else f"{100 * v:.1f}%" for v in frame["share"]],
        "per run (s)": ["" if pd.isna(v) else f"{v:.2f}" for v in frame["per_run_s"]],
    })


#: the columns of the report's tables that hold counts or rates, written as 142k, 1.2M
COUNT_COLUMNS = ("params", "params_vs_none", "images_per_s")


def _counts(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with its :data:`COUNT_COLUMNS` written by :func:`count_format`."""
    out = frame.copy()
    for col in COUNT_COLUMNS:
        if col in out.columns:
            out[col] = [count_format(v) for v in out[col]]
    return out


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
    hi]`` (a percentile-bootstrap interval is not symmetric, so no ``±``; the caption says so);
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
    for name, regime, g in _by_regime(accuracy):
        train = g.train_resolution.iloc[0]
        piv = _pivot(_untrained_once(g), _accuracy_cell(plain=tex_escape))
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
