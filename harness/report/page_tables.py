"""The tables of the report's pages: each as a :class:`Section` (its anchor, title, the note under
the title, the table or a message), :func:`sections` lists them in page order from the tables
:func:`harness.report.summary_tables` makes, and the cells they are written in (accuracy and
retention pivots per regime and training resolution, counts, time). :mod:`harness.report.pages`
writes them as Markdown, HTML and LaTeX and re-exports :class:`Section` and :func:`sections`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.report import answer as ans
from harness.report import curves as rc
from harness.report import stats as st
from harness.report.figures.plotting import count_format, size_order

__all__ = ["COUNT_COLUMNS", "GAIN_TITLE", "Section", "accuracy_cell", "by_regime", "pivot", "sections",
           "untrained_once"]


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


def untrained_once(frame: pd.DataFrame) -> pd.DataFrame:
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


def pivot(frame: pd.DataFrame, cell) -> pd.DataFrame:
    """Rows: variant; columns: test size (in size order); cells: ``cell(row)`` (a string)."""
    out = frame.assign(_text=[cell(r) for r in frame.itertuples(index=False)])
    piv = out.pivot(index="variant", columns="test_resolution", values="_text")[size_order(frame)]
    piv = piv.fillna("").reset_index()
    piv.columns.name = None
    return piv.rename(columns={"variant": "encoding variant", **{c: f"{c} px" for c in piv.columns[1:]}})


def accuracy_cell(plain=str) -> Any:
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


def by_regime(frame: pd.DataFrame):
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
                           "paired by seed. A − B with its 95% Student-t interval over seeds (it excludes 0 "
                           "exactly when the paired t-test's p before Holm is below 0.05); P(A > B): the chance "
                           "that a run of A beats a run of B at the same test size (ties count one half), averaged "
                           "over the sizes, with a bootstrap interval over seeds stratified by size (it cannot "
                           "reach past what the seeds show: 1.00 [1.00, 1.00] when every run of A beats every run "
                           "of B); two-sided paired t-test, Holm-corrected over this family alone; the seeds one "
                           "two-sided paired t-test at alpha (before the Holm correction) would need for 80% power, "
                           "taking the observed effect and spread as the truth, and at alpha / m for the m tested "
                           "comparisons, the level Holm's correction asks of its first test.",
                           ans.primary_table(primary)))
    out += _gain_sections(tables.get("gain"))
    friedman = tables.get("friedman")
    if friedman is not None and len(friedman):
        alpha = float(friedman["alpha"].iloc[0])
        out.append(Section("ranking", "Ranking of the encodings (exploratory)", ans.ranking_note(alpha),
                           ans.ranking_table(friedman)))
    for i, (name, regime, g) in enumerate(by_regime(acc)):
        out.append(Section("accuracy" if i == 0 else f"accuracy-{regime}-{g.train_resolution.iloc[0]}",
                            f"Test accuracy per encoding variant: {name}",
                            f"Every variant (exploratory). Mean test accuracy [{st.INTERVAL_METHOD}]. A variant is "
                            "(encoding, new-grid policy, attention temperature), evaluated on the same trained "
                            "weights. No cell is marked best: the best of a column is chosen on the images it is "
                            "scored on (the tables above choose on the other half).",
                            pivot(untrained_once(g), accuracy_cell()), collapsed=True))
    for name, regime, g in by_regime(ret):
        out.append(Section(f"retention-{regime}-{g.train_resolution.iloc[0]}", f"Retention: {name}",
                            "Chance-normalised retention of each run, (acc − chance) / (acc at the training size − "
                            f"chance), mean over seeds [{st.INTERVAL_METHOD}]. 1: as good as at the training size; "
                            f"0: chance. – : undefined (the runs did not train or were within {st.CHANCE_MARGIN} of "
                            "chance at the training size).", pivot(g, _retention_cell), collapsed=True))
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
                        "not a benchmark (`harness bench` is one)."
                        + (f" {warning}" if (warning := st.throughput_warning(tables["cost"])) else ""),
                        _counts(tables["cost"])))
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
