"""``harness report``: a study's answer, built from its MLflow runs and nothing else.

Writes ``reports/<study>/``: ``results.csv`` (one row per run, regime, test size, policy and
temperature), ``comparisons.csv`` (every paired comparison), the summary tables
(``report.md``), the accuracy pivot tables as booktabs LaTeX (``report.tex``, to paste into
a paper), one PNG and one PDF per report figure, and ``report.html``, one self-contained page
(figures embedded as PNG) with the headline, the pivot tables, the spec, provenance, figures
and the list of the study's cells that are missing or failed. Counts (parameters,
throughput) are written as numbers: ``142k``, ``1.2M``. MLflow is read through the names
of :mod:`harness.schema`; the statistics are pure functions of the table
(:mod:`harness.report_stats`); the figures are the registered :data:`harness.figures.FIGURES`.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from harness import comparisons as cmp
from harness import report_stats as st
from harness import schema
from harness.errors import HarnessError, redact_url
from harness.figures import FIGURES
from harness.figures.plotting import count_format, save, size_order, theme
from harness.schema import Cell
from harness.tracking import Tracker

__all__ = ["CURVE_COLUMNS", "RESULT_COLUMNS", "TABLES", "ReportError", "StudyRuns", "build_report", "latex_tables",
           "results_table", "summary_tables", "tidy_results"]

#: the columns of the tidy results table (``results.csv``), one row per run, regime, test
#: size, policy and temperature; ``test_resolution`` is the size's label (``32``, ``32x64``)
RESULT_COLUMNS = ["study", "stage", "encoding", "options", "variant", "policy", "temperature", "regime",
                  "train_resolution", "test_resolution", "test_rows", "test_cols", "seed", "test_acc", "test_loss",
                  "retention", "chance", "final_val_acc", "trained", "params", "images_per_s", "device", "run_id",
                  "status"]
#: what a reader supplies per row; the rest follows (:func:`harness.report_stats.derive`)
_DERIVED = ("variant", "trained", "retention")
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


def tidy_results(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The tidy results table of rows holding every column of :data:`RESULT_COLUMNS` but the
    derived ones (variant, trained, retention), sorted by encoding, train resolution, seed,
    regime, test size, policy and temperature. ``test_resolution`` is the size's label;
    ``test_rows`` / ``test_cols`` are filled from it when absent."""
    raw = [c for c in RESULT_COLUMNS if c not in _DERIVED]
    df = pd.DataFrame([dict(r) for r in rows], columns=raw)
    sizes = [schema.Size.parse(s) if isinstance(s, (int, str)) and not pd.isna(s) else None
             for s in df["test_resolution"]]
    df["test_resolution"] = [s.label if s else None for s in sizes]
    for col, attr in (("test_rows", "rows"), ("test_cols", "cols")):
        df[col] = pd.array([getattr(s, attr) if s else None for s in sizes], dtype="Int64")
    for col in ("test_acc", "test_loss", "chance", "final_val_acc"):
        df[col] = df[col].astype(float)
    df = st.derive(df)[RESULT_COLUMNS]
    if len(df):
        df = df.sort_values(["encoding", "train_resolution", "seed", "run_id", "regime", "test_rows", "test_cols",
                             "policy", "temperature"], na_position="first").reset_index(drop=True)
    return df


# ------------------------------------------------------------------------------ reading MLflow
def _tested(metrics: Mapping[str, float]) -> dict[tuple[schema.Variant, schema.Size], dict[str, float]]:
    """The run's test metrics by (variant, size): {"acc": ..., "loss": ...} (keys old and new)."""
    out: dict[tuple[schema.Variant, schema.Size], dict[str, float]] = {}
    for key, value in metrics.items():
        parsed = schema.parse_test_metric(key)
        if parsed:
            kind, variant, size = parsed
            out.setdefault((variant, size), {})[kind] = value
    return {k: v for k, v in sorted(out.items()) if "acc" in v}


def results_table(tracker: Tracker, study: str) -> StudyRuns:
    """The study's evaluate runs as tidy tables, read from MLflow."""
    rows, curves, tuning, found = [], [], [], set()
    runs = tracker.runs(study, schema.EVALUATE)
    for r in runs:
        p, m = r.data.params, r.data.metrics
        cell = Cell.from_params(p)
        found.add(cell)
        base = {"study": study, "stage": schema.EVALUATE, "encoding": cell.encoding, "options": schema.encoding_options(p),
                "train_resolution": cell.train_resolution, "seed": cell.seed,
                # the parameter count: a run parameter since issue #13, the metric for older runs
                "params": (float(p[schema.P_PARAM_COUNT]) if schema.P_PARAM_COUNT in p
                           else m.get(schema.PARAM_COUNT)),
                "images_per_s": m.get(schema.IMAGES_PER_S), "chance": m.get(schema.CHANCE, math.nan),
                "final_val_acc": m.get(schema.VAL_ACC, math.nan), "device": r.data.tags.get(schema.T_DEVICE),
                "run_id": r.info.run_id, "status": r.info.status}
        tested = _tested(m)
        if not tested:
            rows.append({**base, "test_acc": math.nan, "test_loss": math.nan})
        for (variant, size), values in tested.items():
            rows.append({**base, "regime": variant.regime, "policy": variant.policy,
                         "temperature": variant.temperature, "test_resolution": size.label, "test_acc": values["acc"],
                         "test_loss": values.get("loss", math.nan)})
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
    return StudyRuns(tidy_results(rows), pd.DataFrame(curves, columns=CURVE_COLUMNS), pd.DataFrame(tuning),
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
#: the report's tables (``tables`` of the figures), in the order :func:`summary_tables` builds them
TABLES = ("accuracy", "retention", "extrapolation", "ranking", "headline", "comparisons", "untrained", "cost",
          "missing")


def summary_tables(results: pd.DataFrame, expected: Sequence[Cell], baseline: str | None = None
                   ) -> tuple[dict[str, Any], str | None]:
    """The report's tables of a results table, and the baseline they compare against.

    ``expected``: the study's cells (for the table of missing cells); ``baseline``: the
    encoding the encoding comparisons pair with (default: ``learned`` when the study has
    it). The policy and temperature comparisons are there with or without a baseline; when
    the baseline has no finished run that trained, the returned baseline says why.
    """
    baseline = st.default_baseline(dict.fromkeys(c.encoding for c in expected), baseline)
    tables: dict[str, Any] = {
        "accuracy": st.accuracy_summary(results),
        "retention": st.retention(results),
        "extrapolation": st.extrapolation_scores(results),
        "ranking": st.ranking(results),
        "headline": cmp.headline(results),
        "comparisons": None,
        "untrained": st.untrained_runs(results),
        "cost": st.cost_table(results),
        "missing": st.missing_cells(results, expected),
    }
    try:
        tables["comparisons"] = cmp.paired_comparisons(results, baseline)
    except ValueError as exc:  # the baseline has no run that trained: the other comparisons stand
        tables["comparisons"] = cmp.paired_comparisons(results, None)
        baseline = f"{baseline} (no comparison with it: {exc})"
    return tables, baseline


def build_report(tracking_uri: str, experiment: str, out_dir: str | Path, *, baseline: str | None = None,
                 spec: dict | None = None) -> Path:
    """Build the report of ``experiment`` into ``out_dir``; return the HTML page's path."""
    shown = redact_url(tracking_uri)  # what a message or a page shows: never the password
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
        raise ReportError(f"no MLflow tracking store at {shown}")
    tracker = Tracker(tracking_uri, experiment, create=False)  # an existing MLflow store only: nothing created
    if tracker.client.get_experiment(tracker.experiment_id).lifecycle_stage != "active":
        raise ReportError(f"experiment {experiment!r} at {shown} is deleted")
    data = results_table(tracker, experiment)
    df = data.results
    if not (df["status"] == "FINISHED").any():
        raise ReportError(f"experiment {experiment!r} at {shown} has no finished evaluate runs yet: "
                          "nothing to report (run the study first)")
    spec = dict(spec or data.spec)
    for key in ("storage", "tracking_uri"):  # a spec logged by an older version: its URLs redacted again
        if isinstance(spec.get(key), str):
            spec[key] = redact_url(spec[key])
    expected = schema.cells(spec) if spec.get("encodings") else data.cells
    labels = list(dict.fromkeys(c.encoding for c in expected))
    if baseline is not None and baseline not in labels:  # before anything is written
        raise ReportError(f"--baseline {baseline!r}: not an encoding of study {experiment!r} "
                          f"(its encodings: {', '.join(labels) or 'none'})")
    tables, baseline = summary_tables(df, expected, baseline or spec.get("baseline"))
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"report folder {out}: cannot be created ({exc.strerror})") from None
    df.to_csv(out / "results.csv", index=False)
    tables["comparisons"].to_csv(out / "comparisons.csv", index=False)
    figures = _draw_figures(data, tables, out)
    headline = headline_lines(tables["headline"], tables["untrained"], st.control_runs(df))
    sections = _sections(tables, baseline)
    (out / "report.md").write_text(_markdown(experiment, headline, sections, figures), encoding="utf-8")
    (out / "report.tex").write_text(latex_tables(tables["accuracy"], experiment), encoding="utf-8")
    page = out / "report.html"
    page.write_text(_html(experiment, headline, sections, figures, spec, data.provenance), encoding="utf-8")
    return page


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
    """Draw every registered figure that has something to show into ``out/<name>.png`` and
    ``out/<name>.pdf``. A figure that fails is named on the page with its error (and in a
    warning); the others stay."""
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


# ------------------------------------------------------------------------------ tables as text
@dataclass(frozen=True)
class _Section:
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


def _sections(tables: dict[str, Any], baseline: str | None) -> list[_Section]:
    """Every table of the report, in page order."""
    acc, ret = tables["accuracy"], tables["retention"]
    out = []
    for i, (name, regime, g) in enumerate(_by_regime(acc)):
        best = _column_best(g)
        out.append(_Section("accuracy" if i == 0 else f"accuracy-{regime}-{g.train_resolution.iloc[0]}",
                            f"Test accuracy per encoding variant: {name}",
                            f"Mean test accuracy [{st.INTERVAL_METHOD}]; the best per column in bold. A variant is "
                            "(encoding, new-grid policy, attention temperature), evaluated on the same trained "
                            "weights.",
                            _pivot(g, _accuracy_cell(best))))
    for name, regime, g in _by_regime(ret):
        out.append(_Section(f"retention-{regime}-{g.train_resolution.iloc[0]}", f"Retention: {name}",
                            "Chance-normalised retention of each run, (acc − chance) / (acc at the training size − "
                            f"chance), mean over seeds [{st.INTERVAL_METHOD}]. 1: as good as at the training size; "
                            f"0: chance. – : undefined (the runs did not train or were within {st.CHANCE_MARGIN} of "
                            "chance at the training size).", _pivot(g, _retention_cell)))
    out.append(_Section("extrapolation", "Extrapolation: mean accuracy below / at / above the training resolution",
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
    out.append(_Section("comparisons", "Paired comparisons (Holm-corrected)", about, tested))
    out.append(_Section("untrained", "Runs that did not train",
                        f"Final validation accuracy within {st.CHANCE_MARGIN} of chance: flagged, and left out of "
                        "every mean, interval, retention and comparison.", tables["untrained"]))
    devices = ", ".join(sorted({d for v in tables["cost"].get("device", []) for d in str(v).split(", ")})) or "unknown"
    out.append(_Section("cost", "Cost: parameters, and training throughput measured during the study "
                        f"(device: {devices})",
                        "Throughput as measured while the study trained, alongside whatever else the machine ran: "
                        "not a benchmark (`harness bench` is one).", _counts(tables["cost"])))
    out.append(_Section("missing", "Cells of the study that are missing or failed", "", tables["missing"]))
    return out


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


def _markdown(study: str, headline: list[str], sections: list[_Section], figures: list[_Drawn]) -> str:
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
    """Escaped HTML of text with Markdown's **bold**."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


def _html_table(df, cls: str = "") -> str:
    if df is None or not len(df):
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_bold(_fmt(v))}</td>" for v in row) + "</tr>"
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


def _html(study: str, headline: list[str], sections: list[_Section], figures: list[_Drawn], spec: dict,
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
