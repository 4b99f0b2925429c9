"""``harness report``: a study's answer, built from its MLflow runs and nothing else.

Writes ``reports/<study>/``: ``results.csv`` (one row per run and test resolution), the
summary tables (``report.md``), one PNG per report figure, and ``report.html``, one
self-contained page (figures embedded) with the spec, provenance, tables, figures and the
list of the study's cells that are missing or failed. MLflow is read through the names of
:mod:`harness.schema`; the statistics are pure functions of the table
(:mod:`harness.report_stats`); the figures are the registered :data:`harness.figures.FIGURES`.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from harness import report_stats as st
from harness import schema
from harness.errors import HarnessError
from harness.figures import FIGURES
from harness.figures.plotting import save, theme
from harness.schema import Cell
from harness.tracking import Tracker

__all__ = ["CURVE_COLUMNS", "RESULT_COLUMNS", "ReportError", "StudyRuns", "build_report", "results_table", "summary_tables"]

#: the columns of the tidy results table, one row per run and test resolution
RESULT_COLUMNS = ["study", "stage", "encoding", "options", "train_resolution", "test_resolution", "seed", "test_acc",
                  "test_loss", "params", "images_per_s", "run_id", "status"]
CURVE_COLUMNS = ["encoding", "train_resolution", "seed", "epoch", "val_acc"]


class ReportError(HarnessError):
    """No report can be built (no finished runs, unreachable store, unwritable folder)."""


@dataclass
class StudyRuns:
    """A study's runs as read from MLflow: what the tables and the figures are drawn from."""

    results: pd.DataFrame  # RESULT_COLUMNS
    curves: pd.DataFrame  # CURVE_COLUMNS
    tuning: pd.DataFrame  # encoding, train_resolution, trial, val_acc, state, + one column per tuned param
    spec: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    #: the cells of the evaluate runs found, sorted (the study's cells when its spec is unknown)
    cells: list[Cell] = field(default_factory=list)


# ------------------------------------------------------------------------------ reading MLflow
def results_table(tracker: Tracker, study: str) -> StudyRuns:
    """The study's evaluate runs as tidy tables, read from MLflow."""
    rows, curves, tuning, found = [], [], [], set()
    runs = tracker.runs(study, schema.EVALUATE)
    for r in runs:
        p, m = r.data.params, r.data.metrics
        cell = Cell.from_params(p)
        found.add(cell)
        base = {"study": study, "stage": schema.EVALUATE, "encoding": cell.encoding, "options": schema.encoding_options(p),
                "train_resolution": cell.train_resolution, "seed": cell.seed, "params": m.get(schema.PARAM_COUNT),
                "images_per_s": m.get(schema.IMAGES_PER_S), "run_id": r.info.run_id, "status": r.info.status}
        tested = sorted(res for kind, res in filter(None, map(schema.parse_test_metric, m)) if kind == "acc")
        if not tested:
            rows.append({**base, "test_resolution": None, "test_acc": math.nan, "test_loss": math.nan})
        for t in tested:
            rows.append({**base, "test_resolution": t, "test_acc": m[schema.acc_at(t)],
                         "test_loss": m.get(schema.loss_at(t), math.nan)})
        if r.info.status == "FINISHED":
            for h in tracker.client.get_metric_history(r.info.run_id, schema.VAL_ACC):
                curves.append({"encoding": cell.encoding, "train_resolution": cell.train_resolution,
                               "seed": cell.seed, "epoch": h.step, "val_acc": h.value})
    for r in tracker.runs(study, schema.TUNE):
        p, tags = r.data.params, r.data.tags
        tuning.append({"encoding": p.get(schema.P_ENCODING), "train_resolution": int(p[schema.P_TRAIN_RESOLUTION]),
                       "trial": int(tags.get(schema.T_TRIAL_NUMBER, -1)),
                       "val_acc": r.data.metrics.get(schema.VAL_ACC),
                       "state": "pruned" if schema.T_PRUNED_AT in tags else r.info.status.lower(),
                       **schema.tuned_values(p)})
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    if len(results):
        results["test_resolution"] = results["test_resolution"].astype("Int64")
        results = results.sort_values(["encoding", "train_resolution", "seed", "test_resolution"]).reset_index(drop=True)
    return StudyRuns(results, pd.DataFrame(curves, columns=CURVE_COLUMNS), pd.DataFrame(tuning),
                     _logged_spec(tracker, runs), _provenance(runs), sorted(found))


def _logged_spec(tracker: Tracker, runs: list) -> dict:
    """The resolved spec a finished run (else any run) logged as an artifact; {} without one."""
    finished = [r for r in runs if r.info.status == "FINISHED"] or runs
    if not finished:
        return {}
    try:
        path = tracker.client.download_artifacts(finished[0].info.run_id, schema.SPEC_ARTIFACT)
        return json.loads(Path(path).read_text())
    except Exception:  # noqa: BLE001 - the artifact is a convenience; the params hold the config
        return {}


def _provenance(runs: list) -> dict:
    def day(ms):
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ms else "-"

    commits = sorted({r.data.tags.get(schema.T_GIT_COMMIT, "unknown") for r in runs})
    devices = sorted({r.data.tags.get(schema.T_DEVICE, "unknown") for r in runs if r.info.status == "FINISHED"})
    versions = next((json.loads(r.data.tags[schema.T_VERSIONS]) for r in runs if schema.T_VERSIONS in r.data.tags), {})
    starts = [r.info.start_time for r in runs if r.info.start_time]
    ends = [r.info.end_time for r in runs if r.info.end_time]
    return {"git commit": ", ".join(commits), "devices": ", ".join(devices) or "-",
            "first run started": day(min(starts) if starts else None), "last run ended": day(max(ends) if ends else None),
            **{f"version of {k}": v for k, v in versions.items()}}


# ------------------------------------------------------------------------------ the report
def summary_tables(results: pd.DataFrame, expected: Sequence[Cell], baseline: str | None = None
                   ) -> tuple[dict[str, Any], str | None]:
    """The report's tables of a results table, and the baseline they compare against.

    ``expected``: the study's cells (for the table of missing cells); ``baseline``: the
    encoding to compare with (default: ``learned`` when the study has it). When the baseline
    has no finished run, ``comparisons`` is None and the returned baseline says why.
    """
    baseline = st.default_baseline(dict.fromkeys(c.encoding for c in expected), baseline)
    tables: dict[str, Any] = {
        "accuracy": st.accuracy_summary(results),
        "extrapolation": st.extrapolation_scores(results),
        "retention": st.retention(results),
        "ranking": st.ranking(results),
        "cost": st.cost_table(results),
        "missing": st.missing_cells(results, expected),
        "comparisons": None,
    }
    if baseline:
        try:
            tables["comparisons"] = st.paired_comparisons(results, baseline)
        except ValueError as exc:  # the baseline has no finished run yet: say so in the report
            baseline = f"{baseline} (no comparison: {exc})"
    return tables, baseline


def build_report(tracking_uri: str, experiment: str, out_dir: str | Path, *, baseline: str | None = None,
                 spec: dict | None = None) -> Path:
    """Build the report of ``experiment`` into ``out_dir``; return the HTML page's path."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
        raise ReportError(f"no MLflow tracking store at {tracking_uri}")
    tracker = Tracker(tracking_uri, experiment, create=False)
    if tracker.client.get_experiment(tracker.experiment_id).lifecycle_stage != "active":
        raise ReportError(f"experiment {experiment!r} at {tracking_uri} is deleted")
    data = results_table(tracker, experiment)
    df = data.results
    if not (df["status"] == "FINISHED").any():
        raise ReportError(f"experiment {experiment!r} at {tracking_uri} has no finished evaluate runs yet: "
                          "nothing to report (run the study first)")
    spec = spec or data.spec
    expected = schema.cells(spec) if spec.get("encodings") else data.cells
    tables, baseline = summary_tables(df, expected, baseline or spec.get("baseline"))
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"report folder {out}: cannot be created ({exc.strerror})") from None
    df.to_csv(out / "results.csv", index=False)
    figures = _draw_figures(data, tables, out)
    headline = _headline(df)
    (out / "report.md").write_text(_markdown(experiment, headline, tables, baseline, figures), encoding="utf-8")
    page = out / "report.html"
    page.write_text(_html(experiment, headline, tables, baseline, figures, spec, data.provenance), encoding="utf-8")
    return page


def _headline(df: pd.DataFrame) -> list[str]:
    """Which encoding extrapolates best, above and below the training resolution, with the 95%
    interval over seeds of each seed's mean accuracy on that side (``accuracy_summary``)."""
    lines = []
    for side, sel in (("above", df.test_resolution > df.train_resolution),
                      ("below", df.test_resolution < df.train_resolution)):
        # one pseudo test resolution per side: a seed's rows on that side are averaged first
        summary = st.accuracy_summary(df[sel.fillna(False)].assign(test_resolution=-1))
        if summary.empty:
            continue
        best = summary.loc[summary["mean"].idxmax()]
        n, half = int(best.n_seeds), best.ci_high - best["mean"]
        ci = f" ± {half:.3f} (95% interval over {n} seeds)" if n > 1 else f" ({n} seed: no interval)"
        lines.append(f"Best {side} the training resolution ({best.train_resolution} px): **{best.encoding}**, "
                     f"mean test accuracy {best['mean']:.3f}{ci}.")
    return lines


# ------------------------------------------------------------------------------ figures
@dataclass(frozen=True)
class _Drawn:
    """A figure of the page: its file, or why it could not be drawn."""

    name: str
    title: str
    caption: str
    path: Path | None = None
    error: str = ""


def _draw_figures(data: StudyRuns, tables: dict[str, Any], out: Path) -> list[_Drawn]:
    """Draw every registered figure that has something to show into ``out/<name>.png``. A
    figure that fails is named on the page with its error (and in a warning); the others stay."""
    theme()
    drawn = []
    for name, cls in sorted(FIGURES.items(), key=lambda item: (item[1].order, item[0])):
        already_open = set(plt.get_fignums())
        try:
            fig = cls().draw(data, tables)
            if fig is not None:
                drawn.append(_Drawn(name, cls.title, cls.caption, save(fig, out / f"{name}.png")))
        except Exception as exc:  # noqa: BLE001 - a broken plugin figure must not cost the whole report
            error = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"report figure {name!r} ({FIGURES.source(name)}) could not be drawn: {error}", stacklevel=2)
            drawn.append(_Drawn(name, cls.title, cls.caption, error=error))
        finally:
            for num in set(plt.get_fignums()) - already_open:  # what a figure opened and left
                plt.close(num)
    return drawn


# ------------------------------------------------------------------------------ text
TITLES = {
    "accuracy": "Test accuracy per encoding and test resolution (mean and 95% interval over seeds)",
    "extrapolation": "Extrapolation: mean accuracy above / at / below the training resolution",
    "retention": "Retention: accuracy relative to the training resolution",
    "comparisons": "Paired comparisons against the baseline (by seed; Holm-corrected)",
    "ranking": "Ranking of encodings per test resolution",
    "cost": "Cost: parameters and training throughput, relative to none",
    "missing": "Cells of the study that are missing or failed",
}


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or (not isinstance(v, str) and pd.isna(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) >= 1000 or (v != 0 and abs(v) < 0.001) else f"{v:.3f}"
    return str(v)


def _md_table(df) -> str:
    if df is None or not len(df):
        return "(none)\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


NO_BASELINE = "No baseline encoding in this study (set `baseline:` in the spec, or --baseline)."


def _sections(tables: dict, baseline: str | None):
    """(key, title, table or None) for every table of the report, in order."""
    for key, title in TITLES.items():
        if key == "comparisons" and baseline:
            title += f" {baseline}"
        yield key, title, tables.get(key)


def _markdown(study: str, headline: list[str], tables: dict, baseline: str | None, figures: list[_Drawn]) -> str:
    parts = [f"# Report: {study}\n", *[f"{h}\n" for h in headline]]
    for key, title, df in _sections(tables, baseline):
        body = NO_BASELINE + "\n" if key == "comparisons" and df is None else _md_table(df)
        parts.append(f"## {title}\n\n{body}")
    parts.append("## Figures\n")
    for f in figures:
        picture = f"could not be drawn: {f.error}" if f.error else f"![{f.title}]({f.path.name})"
        parts.append(f"**{f.title}.** {f.caption}\n\n{picture}\n")
    return "\n".join(parts)


def _html_table(df, cls: str = "") -> str:
    if df is None or not len(df):
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _html_figure(f: _Drawn) -> str:
    """One figure, its PNG embedded, with its title and caption."""
    text = f"<strong>{html.escape(f.title)}.</strong> {html.escape(f.caption)}"
    if f.error:
        return f'<figure id="{f.name}" class="failed"><figcaption>{text} Could not be drawn: ' \
               f"{html.escape(f.error)}</figcaption></figure>"
    png = base64.b64encode(f.path.read_bytes()).decode()
    return (f'<figure id="{f.name}"><img alt="{html.escape(f.title)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{text}</figcaption></figure>")


def _html(study: str, headline: list[str], tables: dict, baseline: str | None, figures: list[_Drawn],
          spec: dict, provenance: dict) -> str:
    def md_bold(text: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))

    imgs = "".join(map(_html_figure, figures))
    sections = []
    for key, title, df in _sections(tables, baseline):
        body = (f"<p>{html.escape(NO_BASELINE)}</p>" if key == "comparisons" and df is None
                else _html_table(df, "main" if key == "accuracy" else ""))
        sections.append(f'<h2 id="{key}">{html.escape(title)}</h2>{body}')
    prov = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in provenance.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Report: {html.escape(study)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
th {{ background: #f3f3f3; }}
figure {{ display: inline-block; margin: 0.5em; }} img {{ max-width: 100%; }}
figure.failed {{ color: #a33; }}
.headline {{ background: #eef6ee; padding: 0.8em 1em; border-left: 4px solid #4a4; }}
pre {{ background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.8em; }}
</style></head><body>
<h1>Report: {html.escape(study)}</h1>
<div class="headline">{"".join(f"<p>{md_bold(h)}</p>" for h in headline)}</div>
<h2>Figures</h2>{imgs}
{"".join(sections)}
<h2>Provenance</h2><table>{prov}</table>
<h2>Study spec (resolved)</h2><pre>{html.escape(json.dumps(spec, indent=2, default=str))}</pre>
</body></html>
"""
