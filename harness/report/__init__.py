"""``harness report``: a study's answer, built from its MLflow runs and nothing else.

Writes ``reports/<study>/``: ``results.csv`` (one row per run, regime, test size, policy and
temperature), ``selection.csv`` (each encoding's variant chosen on one half of the test images
and scored on the other, its default variant and the optimistic upper bound), ``primary.csv``
(the declared primary analysis), ``comparisons.csv`` (every exploratory paired comparison), ``gain.csv``
(each encoding's gain over the position-free control, paired by seed), ``convergence.csv`` (the
learning-curve check of every run: which had not converged), the summary tables
(``report.md``), the accuracy pivot tables as booktabs LaTeX (``report.tex``, to paste into
a paper), one PNG and one PDF per report figure, and ``report.html``, one self-contained page
(figures embedded as PNG) with the headline, the pivot tables, the spec, provenance, figures
and the list of the study's cells that are missing or failed. Counts (parameters,
throughput) are written as numbers: ``142k``, ``1.2M``. MLflow is read through the names
of :mod:`harness.schema`; the statistics are pure functions of the table
(:mod:`harness.report.stats`, :mod:`harness.report.comparisons`); the figures are the registered
:data:`harness.report.figures.FIGURES`; the words and the pages are :mod:`harness.report.pages`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd

from harness.report import analysis as an
from harness.report import comparisons as cmp
from harness.report import curves as curves_
from harness.report import pages as pages
from harness.report import selection as sel
from harness.report import stats as st
from harness import schema
from harness.config import AnalysisConfig, ConfigError
from harness.errors import HarnessError, os_reason, redact_url
from harness.files import sqlite_path
from harness.report.figures import FIGURES
from harness.report.figures.plotting import save, theme
from harness.report.timing import time_totals
from harness.schema import Cell
from harness.study.tracking import Tracker

__all__ = ["CURVE_COLUMNS", "RESULT_COLUMNS", "TABLES", "ReportError", "StudyRuns", "build_report",
           "results_table", "summary_tables", "tidy_results"]

#: the columns of the tidy results table (``results.csv``), one row per run, regime, test
#: size, policy and temperature; ``test_resolution`` is the size's label (``32``, ``32x64``)
RESULT_COLUMNS = ["study", "stage", "encoding", "options", "default_policy", "variant", "policy", "temperature",
                  "regime", "train_resolution", "test_resolution", "test_rows", "test_cols", "seed", "test_acc",
                  "test_acc_a", "test_acc_b", "test_loss", "retention", "chance", "final_val_acc", "val_images",
                  "trained", "params", "images_per_s", "device", "run_id", "status"]
#: what a reader supplies per row; the rest follows (:func:`harness.report.stats.derive`)
_DERIVED = ("variant", "trained", "retention")
#: the learning curves: one row per run and epoch (``run_id`` last: the column came with the
#: learning-curve check, :mod:`harness.report.curves`)
CURVE_COLUMNS = ["encoding", "train_resolution", "seed", "epoch", "val_acc", "run_id"]


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
    #: one row per finished evaluate run: encoding, train_resolution, seed, run_id and a column per
    #: logged phase of its time breakdown (``time/<phase>_s``; none for runs written before it)
    timing: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: the evaluate parent run's ``wall_s`` and ``workers`` (the last `harness run`), when logged
    wall: dict = field(default_factory=dict)


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
    for col in ("test_acc", "test_acc_a", "test_acc_b", "test_loss", "chance", "final_val_acc", "val_images"):
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
    rows, curves, tuning, timing, found = [], [], [], [], set()
    runs = tracker.runs(study, schema.EVALUATE)
    for r in runs:
        p, m = r.data.params, r.data.metrics
        cell = Cell.from_params(p)
        found.add(cell)
        tested = _tested(m)
        base = {"study": study, "stage": schema.EVALUATE, "encoding": cell.encoding, "options": schema.encoding_options(p),
                "default_policy": _default_policy(p, tested),
                "train_resolution": cell.train_resolution, "seed": cell.seed,
                # the parameter count: a run parameter since issue #13, the metric for older runs
                "params": (float(p[schema.P_PARAM_COUNT]) if schema.P_PARAM_COUNT in p
                           else m.get(schema.PARAM_COUNT)),
                "images_per_s": m.get(schema.IMAGES_PER_S), "chance": m.get(schema.CHANCE, math.nan),
                "final_val_acc": m.get(schema.VAL_ACC, math.nan), "val_images": _val_images(p, m),
                "device": r.data.tags.get(schema.T_DEVICE),
                "run_id": r.info.run_id, "status": r.info.status}
        if not tested:
            rows.append({**base, "test_acc": math.nan, "test_loss": math.nan})
        for (variant, size), values in tested.items():
            rows.append({**base, "regime": variant.regime, "policy": variant.policy,
                         "temperature": variant.temperature, "test_resolution": size.label, "test_acc": values["acc"],
                         "test_acc_a": values.get("acc_a", math.nan), "test_acc_b": values.get("acc_b", math.nan),
                         "test_loss": values.get("loss", math.nan)})
        if r.info.status == "FINISHED":
            phases = {ph: v for k, v in m.items() if (ph := schema.parse_time_metric(k))}
            timing.append({"encoding": cell.encoding, "train_resolution": cell.train_resolution, "seed": cell.seed,
                           "run_id": r.info.run_id, **phases})
            for h in tracker.client.get_metric_history(r.info.run_id, schema.VAL_ACC):
                curves.append({"encoding": cell.encoding, "train_resolution": cell.train_resolution,
                               "seed": cell.seed, "epoch": h.step, "val_acc": h.value, "run_id": r.info.run_id})
    for r in tracker.runs(study, schema.TUNE):
        p, tags = r.data.params, r.data.tags
        tuning.append({"encoding": p.get(schema.P_ENCODING), "train_resolution": int(p[schema.P_TRAIN_RESOLUTION]),
                       "trial": int(tags.get(schema.T_TRIAL_NUMBER, -1)),
                       "val_acc": r.data.metrics.get(schema.VAL_ACC),
                       "state": "pruned" if schema.T_PRUNED_AT in tags else r.info.status.lower(),
                       **schema.tuned_values(p)})
    parent = tracker.find_parent(study, schema.EVALUATE)
    pm = parent.data.metrics if parent is not None else {}
    wall = ({"wall_s": pm[schema.STAGE_WALL_S], "workers": pm.get(schema.STAGE_WORKERS, 1)}
            if schema.STAGE_WALL_S in pm else {})
    return StudyRuns(tidy_results(rows), pd.DataFrame(curves, columns=CURVE_COLUMNS), pd.DataFrame(tuning),
                     _logged_spec(tracker, runs), _provenance(runs), sorted(found), pd.DataFrame(timing), wall)


def _val_images(params: Mapping[str, str], metrics: Mapping[str, float]) -> float:
    """The size of the run's validation split: logged since the learning-curve check
    (:data:`schema.VAL_IMAGES`); for older runs the dataset's ``num_val`` option, when it has one
    (a dataset sized by a fraction does not say); else NaN."""
    if schema.VAL_IMAGES in metrics:
        return float(metrics[schema.VAL_IMAGES])
    try:
        return float(params[f"{schema.P_CONFIG}.dataset.num_val"])
    except (KeyError, ValueError):
        return math.nan


def _default_policy(params: Mapping[str, str], tested: Mapping[tuple[schema.Variant, schema.Size], Any]) -> str | None:
    """The policy the run's encoding uses when nobody chooses one (:data:`schema.P_DEFAULT_POLICY`,
    logged since issue #21). Older runs: ``default`` where their metrics predate variants (that
    is the name they read with), else the registered encoding's own (its name is a run
    parameter); None when the encoding is not registered here."""
    if schema.P_DEFAULT_POLICY in params:
        return params[schema.P_DEFAULT_POLICY]
    if any(v.policy == "default" for v, _ in tested):
        return "default"
    name = params.get(f"{schema.P_CONFIG}.encoding.name")
    if not name:
        return None
    from harness.encodings import ENCODINGS  # torch: only for runs logged before the parameter
    from harness.variants import default_policy

    return default_policy(ENCODINGS.get(name).describe()) if name in ENCODINGS else None


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
TABLES = ("accuracy", "retention", "extrapolation", "ranking", "selected", "selection", "headline", "primary",
          "friedman", "comparisons", "gain", "untrained", "convergence", "cost", "missing", "time")


def summary_tables(results: pd.DataFrame, expected: Sequence[Cell], baseline: str | None = None,
                   timing: pd.DataFrame | None = None, wall: Mapping[str, float] | None = None,
                   analysis: AnalysisConfig | None = None,
                   curves: pd.DataFrame | None = None) -> tuple[dict[str, Any], str | None]:
    """The report's tables of a results table, and the baseline they compare against.

    ``expected``: the study's cells (for the table of missing cells); ``baseline``: the
    encoding the encoding comparisons pair with (default: ``learned`` when the study has
    it); ``timing`` and ``wall``: the runs' time breakdowns and the last run's wall time
    (:func:`harness.report.timing.time_totals`); ``analysis``: the study's declared primary
    analysis (``primary``: its family of tests; empty without one). ``selected`` and
    ``selection``: each encoding's variant chosen on one half of the test images and scored on
    the other (:mod:`harness.report.selection`); ``friedman``: the encodings ranked per regime and side
    (:func:`harness.report.analysis.friedman_nemenyi`); ``gain``: each encoding's selected accuracy
    minus the position-free control's, paired by seed (:func:`harness.report.comparisons.gain_over_control`);
    ``convergence``: the learning-curve check of every run of ``curves`` (the validation
    accuracy per epoch, :data:`CURVE_COLUMNS`; :func:`harness.report.curves.convergence`: which
    runs had not converged). The policy and temperature comparisons are
    there with or without a baseline; when the baseline has no finished run that trained, the
    returned baseline says why.
    """
    baseline = st.default_baseline(dict.fromkeys(c.encoding for c in expected), baseline)
    selected = sel.selected_scores(results)
    selection = sel.selection_table(results)
    alpha = analysis.alpha if analysis else cmp.ALPHA
    primary = (an.primary_analysis(selected, selection, analysis.primary, analysis.endpoint.sides,
                                   analysis.endpoint.regimes, alpha=alpha, power=analysis.power,
                                   max_seeds=analysis.max_seeds)
               if analysis else pd.DataFrame(columns=an.PRIMARY_COLUMNS))
    tables: dict[str, Any] = {
        "accuracy": st.accuracy_summary(results),
        "retention": st.retention(results),
        "extrapolation": st.extrapolation_scores(results),
        "ranking": st.ranking(results),
        "selected": selected,
        "selection": selection,
        "headline": cmp.headline(results, alpha=alpha, selected=selected, selection=selection),
        "primary": primary,
        "friedman": an.friedman_nemenyi(selected, alpha)[0],
        "comparisons": None,
        "gain": cmp.gain_over_control(results, selected),
        "untrained": st.untrained_runs(results),
        "convergence": curves_.convergence(curves if curves is not None else pd.DataFrame(columns=CURVE_COLUMNS),
                                           results),
        "cost": st.cost_table(results),
        "missing": st.missing_cells(results, expected),
        "time": time_totals(timing if timing is not None else pd.DataFrame(), wall),
    }
    try:
        tables["comparisons"] = cmp.paired_comparisons(results, baseline, selected=selected, selection=selection)
    except ValueError as exc:  # the baseline has no run that trained: the other comparisons stand
        tables["comparisons"] = cmp.paired_comparisons(results, None)
        baseline = f"{baseline} (no comparison with it: {exc})"
    return tables, baseline


def build_report(tracking_uri: str, experiment: str, out_dir: str | Path, *, baseline: str | None = None,
                 spec: dict | None = None) -> Path:
    """Build the report of ``experiment`` into ``out_dir``; return the HTML page's path."""
    shown = redact_url(tracking_uri)  # what a message or a page shows: never the password
    if tracking_uri.startswith("sqlite:///") and not sqlite_path(tracking_uri).is_file():
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
    analysis = _analysis(spec)
    tables, baseline = summary_tables(df, expected, baseline or spec.get("baseline"), data.timing, data.wall,
                                      analysis, data.curves)
    out = Path(out_dir)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"report folder {out}: cannot be created ({exc.strerror})") from None
    # every file is written into a staging folder first, then moved over the old ones: a full
    # disk or a Ctrl-C half-way leaves the previous report as it was, never half of a new one
    staging = out / f".report-{os.getpid()}.tmp"
    try:
        staging.mkdir()
        df.to_csv(staging / "results.csv", index=False)
        tables["comparisons"].to_csv(staging / "comparisons.csv", index=False)
        tables["selection"].to_csv(staging / "selection.csv", index=False)
        tables["primary"].to_csv(staging / "primary.csv", index=False)
        tables["gain"].to_csv(staging / "gain.csv", index=False)
        tables["convergence"].to_csv(staging / "convergence.csv", index=False)
        figures = _draw_figures(data, tables, staging)
        headline = pages.headline_lines(tables["headline"], tables["untrained"], st.control_runs(df),
                                        tables["primary"], tables["selection"], analysis, tables["convergence"])
        sections = pages.sections(tables, baseline)
        (staging / "report.md").write_text(pages.markdown_page(experiment, headline, sections, figures),
                                           encoding="utf-8")
        (staging / "report.tex").write_text(pages.latex_tables(tables["accuracy"], experiment, tables["selection"],
                                                                    tables["gain"]),
                                            encoding="utf-8")
        (staging / "report.html").write_text(pages.html_page(experiment, headline, sections, figures, spec,
                                                             data.provenance), encoding="utf-8")
        for f in sorted(staging.iterdir()):
            os.replace(f, out / f.name)
        staging.rmdir()
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if created:  # a folder this call made, and left empty: not left behind
            with contextlib.suppress(OSError):
                out.rmdir()
        if not isinstance(exc, OSError):
            raise
        raise ReportError(f"{os_reason(exc)} in {out} (writing the report); the previous report there, if any, is left "
                          "as it was") from None
    return out / "report.html"


def _analysis(spec: Mapping[str, Any]) -> AnalysisConfig | None:
    """The declared primary analysis of a resolved spec (``analysis:``); None without one, or for
    one this version cannot read (a warning says so: its tests are then reported as exploratory)."""
    raw = spec.get("analysis")
    if not raw:
        return None
    try:
        return AnalysisConfig.from_dict(raw)
    except ConfigError as exc:
        warnings.warn(f"the spec's analysis: section cannot be read ({exc}): no primary analysis", stacklevel=2)
        return None


# ------------------------------------------------------------------------------ figures
#: a write that failed because of the disk (full, quota, file size limit, read-only), not the figure
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def _draw_figures(data: StudyRuns, tables: dict[str, Any], out: Path) -> list[pages.Drawn]:
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
                drawn.append(pages.Drawn(name, cls.title, cls.caption, save(fig, out / f"{name}.png")))
        except Exception as exc:  # noqa: BLE001 - a broken plugin figure must not cost the whole report
            if isinstance(exc, OSError) and exc.errno in _FULL:  # the disk's fault, not the figure's
                raise
            error = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"report figure {name!r} ({FIGURES.source(name)}) could not be drawn: {error}", stacklevel=2)
            drawn.append(pages.Drawn(name, cls.title, cls.caption, error=error))
        finally:
            for num in set(plt.get_fignums()) - already_open:  # what a figure opened and left
                plt.close(num)
    return drawn
