"""``harness report``: a study's answer, built from its MLflow runs and nothing else.

Writes ``reports/<study>/``: ``results.csv`` (one row per run and test resolution), the
summary tables (``report.md``), seaborn figures (PNG), and ``report.html``, one
self-contained page (figures embedded) with the spec, provenance, tables, figures and the
list of the study's cells that are missing or failed. The statistics are pure functions of
the table (``harness.report_stats``).
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

__all__ = ["ReportError", "build_report", "results_table"]

RESULT_COLUMNS = ["study", "stage", "encoding", "options", "train_resolution", "test_resolution", "seed", "test_acc",
                  "test_loss", "params", "images_per_s", "run_id", "status"]


class ReportError(HarnessError):
    """No report can be built (no finished runs, unreachable store, unwritable folder)."""


@dataclass
class StudyRuns:
    results: Any  # DataFrame, RESULT_COLUMNS
    curves: Any  # DataFrame: encoding, train_resolution, seed, epoch, val_acc
    tuning: Any  # DataFrame: encoding, train_resolution, trial, val_acc, state, + one column per tuned param
    spec: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------ reading MLflow
def _options(params: dict[str, str]) -> str:
    prefix = "config.encoding.options."
    opts = {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}
    if not opts and params.get("config.encoding.options", "{}") not in ("{}", ""):
        return params["config.encoding.options"]
    return json.dumps(opts, sort_keys=True)


def results_table(tracker, study: str) -> StudyRuns:
    """The study's evaluate runs as tidy tables, read from MLflow."""
    import pandas as pd

    rows, curves, tuning = [], [], []
    runs = tracker.runs(study, "evaluate")
    for r in runs:
        p, m = r.data.params, r.data.metrics
        base = {"study": study, "stage": "evaluate", "encoding": p.get("encoding"), "options": _options(p),
                "train_resolution": int(p["train_resolution"]), "seed": int(p["seed"]),
                "params": m.get("params/count"), "images_per_s": m.get("train/images_per_s"),
                "run_id": r.info.run_id, "status": r.info.status}
        res = sorted(int(k.rpartition("/r")[2]) for k in m if k.startswith("test/acc/r"))
        if not res:
            rows.append({**base, "test_resolution": None, "test_acc": math.nan, "test_loss": math.nan})
        for t in res:
            rows.append({**base, "test_resolution": t, "test_acc": m[f"test/acc/r{t}"],
                         "test_loss": m.get(f"test/loss/r{t}", math.nan)})
        if r.info.status == "FINISHED":
            for h in tracker.client.get_metric_history(r.info.run_id, "val/acc"):
                curves.append({"encoding": base["encoding"], "train_resolution": base["train_resolution"],
                               "seed": base["seed"], "epoch": h.step, "val_acc": h.value})
    for r in tracker.runs(study, "tune"):
        p = r.data.params
        space = [k[len("config.tune.space."):].rsplit(".", 1)[0] for k in p if k.startswith("config.tune.space.")]
        entry = {"encoding": p.get("encoding"), "train_resolution": int(p["train_resolution"]),
                 "trial": int(r.data.tags.get("optuna.trial_number", -1)), "val_acc": r.data.metrics.get("val/acc"),
                 "state": "pruned" if "harness.pruned_at_epoch" in r.data.tags else r.info.status.lower()}
        for key in sorted(set(space)):
            name = key.partition(".")[2]
            value = p.get(f"config.train.{name}")
            entry[key] = float(value) if value is not None else None
        tuning.append(entry)
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    if len(results):
        results["test_resolution"] = results["test_resolution"].astype("Int64")
        results = results.sort_values(["encoding", "train_resolution", "seed", "test_resolution"]).reset_index(drop=True)
    spec: dict = {}
    finished = [r for r in runs if r.info.status == "FINISHED"] or runs
    if finished:
        try:
            path = tracker.client.download_artifacts(finished[0].info.run_id, "spec.resolved.json")
            spec = json.loads(Path(path).read_text())
        except Exception:  # noqa: BLE001 - the artifact is a convenience; the params hold the config
            spec = {}
    return StudyRuns(results, pd.DataFrame(curves, columns=["encoding", "train_resolution", "seed", "epoch", "val_acc"]),
                     pd.DataFrame(tuning), spec, _provenance(runs))


def _provenance(runs) -> dict:
    from datetime import datetime, timezone

    def day(ms):
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if ms else "-"

    commits = sorted({r.data.tags.get("harness.git_commit", "unknown") for r in runs})
    devices = sorted({r.data.tags.get("harness.device", "unknown") for r in runs if r.info.status == "FINISHED"})
    versions = next((json.loads(r.data.tags["harness.versions"]) for r in runs if "harness.versions" in r.data.tags), {})
    starts = [r.info.start_time for r in runs if r.info.start_time]
    ends = [r.info.end_time for r in runs if r.info.end_time]
    return {"git commit": ", ".join(commits), "devices": ", ".join(devices) or "-",
            "first run started": day(min(starts) if starts else None), "last run ended": day(max(ends) if ends else None),
            **{f"version of {k}": v for k, v in versions.items()}}


def _expected_cells(spec: dict, results) -> list[tuple[str, int, int]]:
    if spec.get("encodings"):
        return [(e["label"] or e["name"], r, s) for e in spec["encodings"] for r in spec["train_resolutions"]
                for s in spec["seeds"]]
    return sorted({(e, int(r), int(s)) for e, r, s in
                   results[["encoding", "train_resolution", "seed"]].itertuples(index=False)})


# ------------------------------------------------------------------------------ the report
def build_report(tracking_uri: str, experiment: str, out_dir: str | Path, *, baseline: str | None = None,
                 spec: dict | None = None) -> Path:
    """Build the report of ``experiment`` into ``out_dir``; return the HTML page's path."""
    from harness import report_stats as st
    from harness.tracking import Tracker

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
    expected = _expected_cells(spec, df)
    encodings = [e for e in dict.fromkeys(c[0] for c in expected)]
    baseline = st.default_baseline(encodings, baseline or spec.get("baseline"))
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"report folder {out}: cannot be created ({exc.strerror})") from None

    tables = {
        "accuracy": st.accuracy_summary(df),
        "extrapolation": st.extrapolation_scores(df),
        "retention": st.retention(df),
        "ranking": st.ranking(df),
        "cost": st.cost_table(df),
        "missing": st.missing_cells(df, expected),
    }
    tables["comparisons"] = None
    if baseline:
        try:
            tables["comparisons"] = st.paired_comparisons(df, baseline)
        except ValueError as exc:  # the baseline has no finished run yet: say so in the report
            baseline = f"{baseline} (no comparison: {exc})"
    df.to_csv(out / "results.csv", index=False)
    figures = _figures(data, tables, out)
    headline = _headline(df)
    (out / "report.md").write_text(_markdown(experiment, headline, tables, baseline), encoding="utf-8")
    page = out / "report.html"
    page.write_text(_html(experiment, headline, tables, baseline, figures, spec, data.provenance), encoding="utf-8")
    return page


def _headline(df) -> list[str]:
    """Which encoding extrapolates best, above and below the training resolution, with the 95%
    interval over seeds of each seed's mean accuracy on that side (``accuracy_summary``)."""
    from harness import report_stats as st

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
def _figures(data: StudyRuns, tables: dict, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    figs: dict[str, Path] = {}
    acc = tables["accuracy"]
    train_res = sorted(acc.train_resolution.unique())
    fig, axes = plt.subplots(1, len(train_res), figsize=(7 * len(train_res), 4.8), squeeze=False)
    palette = dict(zip(sorted(acc.encoding.unique()), sns.color_palette("tab10", acc.encoding.nunique())))
    for ax, tr in zip(axes[0], train_res):
        part = acc[acc.train_resolution == tr].sort_values("test_resolution")
        sns.lineplot(data=part, x="test_resolution", y="mean", hue="encoding", palette=palette, marker="o", ax=ax)
        for enc, g in part.groupby("encoding"):
            # the interval, drawn within the possible range of an accuracy
            ax.fill_between(g.test_resolution.astype(float), g.ci_low.astype(float).clip(0, 1),
                            g.ci_high.astype(float).clip(0, 1), color=palette[enc], alpha=0.12, linewidth=0)
        ax.axvline(tr, color="black", linestyle="--", linewidth=1)
        ax.text(tr, 1.02, f" trained at {tr} px", fontsize=8, va="bottom")
        ax.set(xlabel="test resolution (px)", ylabel="test accuracy", ylim=(0, 1.05),
               title="accuracy vs test resolution (bands: 95% interval over seeds, clipped to [0, 1])")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), title="encoding")
    figs["accuracy_vs_resolution"] = _save(fig, out / "accuracy_vs_resolution.png")

    ret = tables["retention"]
    if len(ret):
        piv = ret[ret.train_resolution == train_res[0]].pivot(index="encoding", columns="test_resolution",
                                                               values="retention")
        fig, ax = plt.subplots(figsize=(1.2 * piv.shape[1] + 3, 0.45 * piv.shape[0] + 1.5))
        sns.heatmap(piv.astype(float), annot=True, fmt=".2f", cmap="viridis", vmin=0, vmax=1.1, ax=ax,
                    cbar_kws={"label": "accuracy / accuracy at training resolution"})
        ax.set(title=f"retention (trained at {train_res[0]} px)", xlabel="test resolution (px)", ylabel="")
        figs["retention_heatmap"] = _save(fig, out / "retention_heatmap.png")

    cost = tables["cost"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.4 * len(cost) + 2))
    rel = cost.dropna(subset=["params_vs_none"]).empty is False
    sns.barplot(data=cost, y="encoding", x="params_vs_none" if rel else "params", ax=axes[0], color="tab:blue")
    axes[0].set(title="parameters added over none" if rel else "trainable parameters", xlabel="parameters", ylabel="")
    rel = cost.dropna(subset=["throughput_vs_none"]).empty is False
    sns.barplot(data=cost, y="encoding", x="throughput_vs_none" if rel else "images_per_s", ax=axes[1],
                color="tab:green")
    axes[1].set(title="training throughput relative to none" if rel else "training throughput",
                xlabel="ratio to none" if rel else "images / s", ylabel="")
    if rel:
        axes[1].axvline(1.0, color="black", linewidth=1)
    figs["cost"] = _save(fig, out / "cost.png")

    if len(data.curves):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        sns.lineplot(data=data.curves, x="epoch", y="val_acc", hue="encoding", palette=palette, errorbar="sd", ax=ax)
        ax.set(title="validation accuracy per epoch (band: sd over seeds)", ylabel="validation accuracy")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), title="encoding")
        figs["validation_curves"] = _save(fig, out / "validation_curves.png")

    tune = data.tuning
    if len(tune):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        sns.scatterplot(data=tune, x="trial", y="val_acc", hue="encoding", style="state", palette=palette, ax=ax)
        ax.set(title="tuning history: validation accuracy per trial", ylabel="validation accuracy")
        figs["tuning_history"] = _save(fig, out / "tuning_history.png")
        imp = _importances(tune)
        if len(imp):
            fig, ax = plt.subplots(figsize=(7, 0.5 * imp.parameter.nunique() * imp.encoding.nunique() + 2))
            sns.barplot(data=imp, y="parameter", x="importance", hue="encoding", palette=palette, ax=ax)
            ax.set(title="hyperparameter importance (fANOVA, from the tuning trials)")
            figs["param_importances"] = _save(fig, out / "param_importances.png")
    return figs


def _importances(tune):
    """Parameter importances per encoding, from the tuning trials recorded in MLflow."""
    import optuna
    import pandas as pd

    params = [c for c in tune.columns if c.startswith("train.")]
    rows = []
    for enc, g in tune.groupby("encoding"):
        g = g.dropna(subset=["val_acc", *params])
        if len(g) < 2 or not params:
            continue
        study = optuna.create_study(direction="maximize")
        for _, t in g.iterrows():
            values = {p: float(t[p]) for p in params}
            dists = {p: optuna.distributions.FloatDistribution(float(g[p].min()), float(g[p].max()) + 1e-12)
                     for p in params}
            study.add_trial(optuna.trial.create_trial(params=values, distributions=dists, value=float(t.val_acc)))
        try:
            for p, v in optuna.importance.get_param_importances(study).items():
                rows.append({"encoding": enc, "parameter": p, "importance": v})
        except (RuntimeError, ValueError):
            continue
    return pd.DataFrame(rows, columns=["encoding", "parameter", "importance"])


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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


CAPTIONS = {
    "accuracy_vs_resolution": "Test accuracy against test resolution, one line per encoding; dashed: the training "
                              "resolution.",
    "retention_heatmap": "Accuracy kept relative to the training resolution. An encoding at chance at the training "
                         "resolution keeps chance everywhere: its retention near 1 means nothing.",
    "cost": "Cost per encoding: parameters added and training throughput, relative to none.",
    "validation_curves": "Validation accuracy per epoch at the training resolution.",
    "tuning_history": "Tuning: validation accuracy of every trial, per encoding.",
    "param_importances": "Tuning: which hyperparameters mattered (fANOVA).",
}


def _fmt(v) -> str:
    import pandas as pd

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


def _markdown(study: str, headline: list[str], tables: dict, baseline: str | None) -> str:
    parts = [f"# Report: {study}\n", *[f"{h}\n" for h in headline]]
    for key, title, df in _sections(tables, baseline):
        body = NO_BASELINE + "\n" if key == "comparisons" and df is None else _md_table(df)
        parts.append(f"## {title}\n\n{body}")
    return "\n".join(parts)


def _html_table(df, cls: str = "") -> str:
    if df is None or not len(df):
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _html(study: str, headline: list[str], tables: dict, baseline: str | None, figures: dict[str, Path],
          spec: dict, provenance: dict) -> str:
    import re

    def md_bold(text: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))

    imgs = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{CAPTIONS.get(name, name.replace('_', ' '))}</figcaption></figure>" for name, p in figures.items())
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
