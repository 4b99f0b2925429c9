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

from harness import comparisons as cmp
from harness import report_stats as st
from harness.figures.plotting import count_format, size_order

__all__ = ["Drawn", "Section", "control_lines", "headline_lines", "html_page", "latex_tables", "markdown_page",
           "sections", "tex_escape"]


def headline_lines(head: pd.DataFrame, untrained: pd.DataFrame, control: pd.DataFrame | None = None) -> list[str]:
    """The answer in sentences (Markdown): per regime and training resolution, the best variant
    above and below it with its interval, its margin over the best other encoding and whether the lead
    is significant after Holm; then the position-free control (:func:`control_lines`), the runs
    that did not train, and how intervals are made."""
    lines = []
    for h in head.itertuples(index=False):
        where = f"{h.side} the training resolution ({h.train_resolution} px)"
        ci = (f" [{h.ci_low:.3f}, {h.ci_high:.3f}] ({h.n_seeds} seeds)" if h.n_seeds > 1
              else f" ({h.n_seeds} seed: no interval)")
        line = (f"**{h.regime.capitalize()}** regime, {where}: best **{h.best}**, "
                f"mean test accuracy {h.best_mean:.3f}{ci}")
        if pd.isna(h.runner_up):
            line += "; no other encoding to compare with."
        else:
            if h.note == cmp.TOO_FEW:
                verdict = f"not tested (only {h.n_pairs} paired seeds; a test needs {st.MIN_PAIRS})"
            elif h.note:
                verdict = f"not tested ({h.note})"
            else:
                verdict = (f"{'' if h.significant else 'not '}significant after Holm (paired t-test over "
                           f"{h.n_pairs} seeds, Holm-adjusted p = {h.p_holm:.3g})")
            line += (f"; ahead of the best other encoding, {h.runner_up} ({h.runner_up_mean:.3f}), by "
                     f"{h.margin:.3f}: {verdict}.")
            if round(h.runner_up_mean, 9) >= st.CEILING:  # a mean of 0.99s is 0.99
                line += (f" Both are at the ceiling (mean accuracy >= {st.CEILING}): this task does not rank the "
                         "encodings here; a harder one would.")
        lines.append(line)
    if head.empty:
        lines.append("No run that trained was tested off its training resolution: nothing to rank.")
    if control is not None:
        lines += control_lines(control)
    if len(untrained):
        names = ", ".join(f"{u.encoding} seed {u.seed}" for u in untrained.itertuples(index=False))
        lines.append(f"{len(untrained)} run(s) did not train (final validation accuracy within "
                     f"{st.CHANCE_MARGIN} of chance) and are left out of every mean: {names}.")
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


def _pivot(frame: pd.DataFrame, cell) -> pd.DataFrame:
    """Rows: variant; columns: test size (in size order); cells: ``cell(row)`` (a string)."""
    out = frame.assign(_text=[cell(r) for r in frame.itertuples(index=False)])
    piv = out.pivot(index="variant", columns="test_resolution", values="_text")[size_order(frame)]
    piv = piv.fillna("").reset_index()
    piv.columns.name = None
    return piv.rename(columns={"variant": "encoding variant", **{c: f"{c} px" for c in piv.columns[1:]}})


def _accuracy_cell(best: dict, bold=lambda text: f"**{text}**", plain=str) -> Any:
    """A cell of an accuracy pivot: mean [interval], or "did not train"; ``bold(text)`` (Markdown's
    ``**`` by default) on the column's best mean, ``plain(text)`` elsewhere."""
    def cell(r) -> str:
        if r.n_seeds == 0:
            return plain(f"did not train ({r.n_untrained} run{'s' if r.n_untrained != 1 else ''})")
        text = f"{r.mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" if r.n_seeds > 1 else f"{r.mean:.3f} (1 seed)"
        if r.n_untrained:
            text += f" ({r.n_seeds}/{r.n_seeds + r.n_untrained} trained)"
        return bold(text) if round(r.mean, 12) == best.get(r.test_resolution) else plain(text)
    return cell


def _column_best(group: pd.DataFrame) -> dict:
    """The best mean per test size of one regime and training resolution (runs that trained), rounded as ranked."""
    trained = group.loc[group["n_seeds"] > 0]
    return trained.groupby("test_resolution")["mean"].max().round(12).to_dict()


def _retention_cell(r) -> str:
    if r.n_seeds == 0 or math.isnan(r.retention):
        return "–"
    return f"{r.retention:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]" if r.n_seeds > 1 else f"{r.retention:.2f} (1 seed)"


def _by_regime(frame: pd.DataFrame):
    for (regime, train), g in frame.groupby(["regime", "train_resolution"], sort=True):
        yield f"{regime} regime, trained at {train} px", regime, g


def sections(tables: dict[str, Any], baseline: str | None) -> list[Section]:
    """Every table of the report, in page order."""
    acc, ret = tables["accuracy"], tables["retention"]
    out = []
    for i, (name, regime, g) in enumerate(_by_regime(acc)):
        best = _column_best(g)
        out.append(Section("accuracy" if i == 0 else f"accuracy-{regime}-{g.train_resolution.iloc[0]}",
                            f"Test accuracy per encoding variant: {name}",
                            f"Mean test accuracy [{st.INTERVAL_METHOD}]; the best per column in bold. A variant is "
                            "(encoding, new-grid policy, attention temperature), evaluated on the same trained "
                            "weights.",
                            _pivot(g, _accuracy_cell(best))))
    for name, regime, g in _by_regime(ret):
        out.append(Section(f"retention-{regime}-{g.train_resolution.iloc[0]}", f"Retention: {name}",
                            "Chance-normalised retention of each run, (acc − chance) / (acc at the training size − "
                            f"chance), mean over seeds [{st.INTERVAL_METHOD}]. 1: as good as at the training size; "
                            f"0: chance. – : undefined (the runs did not train or were within {st.CHANCE_MARGIN} of "
                            "chance at the training size).", _pivot(g, _retention_cell)))
    out.append(Section("extrapolation", "Extrapolation: mean accuracy below / at / above the training resolution",
                        "Mean over the test sizes on each side of each size's mean over seeds (runs that trained).",
                        tables["extrapolation"]))
    comp = tables["comparisons"]
    tested = comp.loc[comp["p_value"].notna()].sort_values(["p_holm", "kind"], kind="stable")
    about = (f"policy vs policy and temperature vs none: paired by run (the same weights); encoding variant vs "
             f"{baseline or 'a baseline (none in this study: set baseline: in the spec, or --baseline)'}: paired by "
             f"seed. Two-sided paired t-tests, Holm-corrected over all {len(comp)} comparisons; "
             f"{len(comp) - len(tested)} could not be tested (too few pairs: fewer than {st.MIN_PAIRS}, or no "
             "variance). "
             "Below: the tested ones, most significant first; every comparison is in comparisons.csv.")
    out.append(Section("comparisons", "Paired comparisons (Holm-corrected)", about, tested))
    out.append(Section("untrained", "Runs that did not train",
                        f"Final validation accuracy within {st.CHANCE_MARGIN} of chance: flagged, and left out of "
                        "every mean, interval, retention and comparison.", tables["untrained"]))
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


def _md_table(df) -> str:
    if df is None or not len(df):
        return "(none)\n"
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


def latex_tables(accuracy: pd.DataFrame, study: str = "") -> str:
    r"""The accuracy pivot tables of ``report.md`` as booktabs LaTeX, to paste into a paper.

    One ``table`` per regime and training resolution (caption above, ``\label{tab:accuracy-
    <regime>-<train>}``), one row per encoding variant, one column per test size. A cell is the
    mean test accuracy over the seeds that trained with its interval in brackets, ``mean [lo,
    hi]`` (a percentile-bootstrap interval is not symmetric, so no ``±``; the caption says so);
    ``(1 seed)`` without an interval; the best mean per column in bold (ties: each); a variant
    none of whose runs trained reads "did not train (n runs)". Every text is escaped
    (:func:`tex_escape`). Needs ``\usepackage{booktabs}``. ``accuracy``:
    :func:`harness.report_stats.accuracy_summary`.
    """
    parts = [f"% Accuracy tables of the study {study or '(unnamed)'}, written by `harness report`.",
             r"% Needs \usepackage{booktabs}.", ""]
    if accuracy.empty:
        return "\n".join([*parts, "% No run was tested: no table.", ""])
    for name, regime, g in _by_regime(accuracy):
        train = g.train_resolution.iloc[0]
        piv = _pivot(g, _accuracy_cell(_column_best(g), bold=lambda t: rf"\textbf{{{tex_escape(t)}}}",
                                       plain=tex_escape))
        sizes = [re.sub(r"(\d)x(\d)", r"\1$\\times$\2", tex_escape(c)) for c in piv.columns[1:]]
        caption = (f"Test accuracy per encoding variant: {tex_escape(name)}. Each cell: mean test accuracy over "
                   "the seeds that trained, and in brackets the lower and upper end of its interval, [lo, hi] "
                   f"({tex_escape(st.INTERVAL_METHOD)}); the best per column in bold. A variant is (encoding, "
                   "new-grid policy, attention temperature), evaluated on the same trained weights.")
        slug = re.sub(r"[^A-Za-z0-9]+", "-", f"accuracy-{regime}-{train}")
        parts += [r"\begin{table}[htbp]", r"\centering", r"\small", rf"\caption{{{caption}}}",
                  rf"\label{{tab:{slug}}}", rf"\begin{{tabular}}{{l{'c' * len(sizes)}}}", r"\toprule",
                  " & ".join(["Encoding variant", *sizes]) + r" \\", r"\midrule"]
        parts += [" & ".join([tex_escape(row[0]), *row[1:]]) + r" \\" for row in piv.itertuples(index=False)]
        parts += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(parts)


def control_lines(control: pd.DataFrame) -> list[str]:
    """What the position-free control says about the task (:func:`harness.report_stats.control_runs`):
    at chance in every run, the task needs positions, as a comparison of positional encodings
    assumes; above chance, part of it can be solved without them (an encoding's gain over the
    control is what positions add); no control, nothing tells."""
    name = f"`{st.CONTROL}`"
    if control.empty:
        return [f"**Control**: this study has no position-free control ({name}): nothing tells whether its "
                f"task can be solved without positions."]
    lines = []
    for c in control.itertuples(index=False):
        acc = f"mean final validation accuracy {c.final_val_acc:.3f}, chance {c.chance:.3f}"
        if c.at_chance == c.runs:
            lines.append(f"**Control**: {name} (no position signal), trained at {c.train_resolution} px, stayed at "
                         f"chance in all {c.runs} run(s) ({acc}): without a position signal this model does not "
                         f"learn the task, as a comparison of positional encodings needs.")
        else:
            lines.append(f"**Control**: {name} (no position signal), trained at {c.train_resolution} px, learned in "
                         f"{c.runs - c.at_chance} of {c.runs} run(s) ({acc}): part of this task can be solved "
                         f"without positions; what positions add is an encoding's gain over {name}.")
    return lines


def markdown_page(study: str, headline: list[str], sections: list[Section], figures: list[Drawn]) -> str:
    parts = [f"# Report: {study}\n", *[f"{h}\n" for h in headline]]
    for s in sections:
        note = f"{s.note}\n\n" if s.note else ""
        parts.append(f"## {s.title}\n\n{note}{_md_table(s.table)}")
    parts.append("## Figures\n")
    for f in figures:
        picture = f"could not be drawn: {f.error}" if f.error else f"![{f.title}]({f.path.name})"
        parts.append(f"**{f.title}.** {f.caption}\n\n{picture}\n")
    return "\n".join(parts)


def _bold(text: str) -> str:
    """Escaped HTML of text with Markdown's **bold** and `code` (a headline line)."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _html_table(df, cls: str = "") -> str:
    if df is None or not len(df):
        return "<p>(none)</p>"
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


def html_page(study: str, headline: list[str], sections: list[Section], figures: list[Drawn], spec: dict,
          provenance: dict) -> str:
    imgs = "".join(map(_html_figure, figures))
    body = "".join(f'<h2 id="{s.key}">{html.escape(s.title)}</h2>' + (f'<p class="note">{html.escape(s.note)}</p>'
                                                                       if s.note else "")
                   + _html_table(s.table, "main" if s.key == "accuracy" else "") for s in sections)
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
