"""The answer of a report, in sentences and main tables: the declared primary analysis, each
encoding under its selected variant (with its default variant and the labelled upper bound),
the exploratory leaders, what the position-free control says, and the ranking of the encodings. Pure functions of the tables of
:func:`harness.report.summary_tables`; :mod:`harness.report.pages` lays them out."""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.report import comparisons as cmp
from harness.report import curves as rc
from harness.report import stats as st
from harness.report import selection as sel
from harness.report.analysis import MIN_BLOCKS, seeds_text

__all__ = ["GAIN_NOTE", "SIDES", "budget_line", "control_lines", "gain_table", "leader_line", "main_table",
           "primary_lines", "primary_table", "ranking_note", "ranking_table", "selection_line"]

#: the sides of the training size the main tables and the headline answer for
SIDES = ("above", "below")


def _ci(mean: float, low: float, high: float, n: int) -> str:
    if n == 0 or pd.isna(mean):
        return "–"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]" if n > 1 else f"{mean:.3f} (1 seed)"


def _inner(label: Any, encoding: str) -> str:
    """``rope_axial (interpolate, temp log)`` -> ``interpolate, temp log``."""
    if not isinstance(label, str) or pd.isna(label):
        return "–"
    head = f"{encoding} ("
    return label[len(head):-1] if label.startswith(head) and label.endswith(")") else label


def _p(v: float) -> str:
    return "–" if pd.isna(v) else f"{v:.3g}"


# ------------------------------------------------------------------------------ sentences
def primary_lines(primary: pd.DataFrame, analysis: Any) -> list[str]:
    """The declared comparisons in sentences: per regime, side and training size, A against B
    under their selected variants, the difference with its interval, P(A > B) with its
    interval, the test with Holm over the primary family, and the seeds 80% power would need."""
    if analysis is None:
        return ["**No primary analysis declared** (`analysis:` in the spec): every test in this report is "
                "exploratory."]
    tested = int(primary["p_value"].notna().sum())
    lines = [f"**Primary analysis** (declared in the spec): {', '.join(analysis.primary)}; endpoint: each seed's "
             f"mean test accuracy over the sizes {' / '.join(analysis.endpoint.sides)} the training size, per "
             f"regime; the family is these {len(primary)} comparisons ({tested} tested), Holm-corrected over "
             f"them alone, at alpha = {analysis.alpha:g}."]
    for r in primary.itertuples(index=False):
        where = f"**{r.regime.capitalize()}** regime, {r.side} the training size ({r.train_resolution} px)"
        if r.n_pairs == 0:
            lines.append(f"{where}: {r.a} vs {r.b}: not tested ({r.note}).")
            continue
        line = (f"{where}: **{r.a_label}** vs **{r.b_label}**: difference {r.mean_diff:+.3f} "
                f"[{r.diff_low:+.3f}, {r.diff_high:+.3f}] over {r.n_pairs} seeds; P({r.a} > {r.b}) = {r.prob:.2f} "
                f"[{r.prob_low:.2f}, {r.prob_high:.2f}]")
        if pd.isna(r.p_value):
            line += f"; not tested ({r.note})"
        else:
            line += (f"; paired t-test p = {r.p_value:.3g}, Holm over the primary family p = {r.p_holm:.3g}: "
                     f"{'' if r.significant else 'not '}significant")
        line += _power(r.seeds_needed, r.seeds_note, r.n_pairs, analysis.power, _family_level(r, analysis, tested))
        line += "."
        if min(round(r.a_mean, 9), round(r.b_mean, 9)) >= st.CEILING:
            line += (f" Both are at the ceiling ({r.a_mean:.3f} and {r.b_mean:.3f}, >= {st.CEILING}): this task "
                     "cannot rank them here, whatever the seeds.")
        lines.append(line)
    return lines


def _known(n: Any, note: str) -> bool:
    """Whether a seeds-needed answer is a number or "more than N" (not: no variance, too few pairs)."""
    return not pd.isna(n) or str(note).startswith("more than")


def _power(n: Any, note: str, have: int, power: float = 0.8, family: str = "") -> str:
    """``; 80% power at this effect and spread needs 7 seeds (this study has 3)``, or nothing
    when it cannot be said (no variance, fewer than two pairs: the test's note says why);
    ``family``: the same at the family's corrected level, said after it."""
    if not _known(n, note):
        return ""
    return (f"; {power:.0%} power at this effect and spread needs {seeds_text(n, note)}{family} "
            f"(this study has {have})")


def _family_level(r: Any, analysis: Any, tested: int) -> str:
    """`` at alpha 0.05, 9 seeds at 0.05 / 6 (Holm's first step)``: a primary comparison's seeds
    for 80 % power before and after the family's correction; nothing for a family of one."""
    if tested < 2 or not _known(r.seeds_needed_family, r.seeds_note_family):
        return ""
    return (f" at alpha {analysis.alpha:g}, {seeds_text(r.seeds_needed_family, r.seeds_note_family)} at "
            f"{analysis.alpha:g} / {tested} (Holm's first step)")


def leader_line(h: Any) -> str:
    """One exploratory leader of :func:`harness.report.comparisons.headline`: the best encoding on a side
    under its selected variant, its interval, its lead over the next encoding, the test of
    that lead (Holm over the leaders), P(lead) and the seeds 80% power would need."""
    where = f"{h.side} the training resolution ({h.train_resolution} px)"
    ci = (f" [{h.ci_low:.3f}, {h.ci_high:.3f}] ({h.n_seeds} seeds)" if h.n_seeds > 1
          else f" ({h.n_seeds} seed: no interval)")
    line = f"**{h.regime.capitalize()}** regime, {where}: best **{h.best}**, mean test accuracy {h.best_mean:.3f}{ci}"
    if pd.isna(h.runner_up):
        return line + "; no other encoding to compare with."
    if h.note == cmp.TOO_FEW:
        verdict = f"not tested (only {h.n_pairs} paired seeds; a test needs {st.MIN_PAIRS})"
    elif h.note:
        verdict = f"not tested ({h.note})"
    else:
        verdict = (f"{'' if h.significant else 'not '}significant after Holm (paired t-test over "
                   f"{h.n_pairs} seeds, Holm-adjusted p = {h.p_holm:.3g})")
    line += f"; ahead of the best other encoding, {h.runner_up} ({h.runner_up_mean:.3f}), by {h.margin:.3f}: {verdict}."
    if not pd.isna(h.prob):
        line += (f" P(lead) = {h.prob:.2f} [{h.prob_low:.2f}, {h.prob_high:.2f}]"
                 f"{_power(h.seeds_needed, h.seeds_note, h.n_pairs)}.")
    if round(h.runner_up_mean, 9) >= st.CEILING:  # a mean of 0.99s is 0.99
        line += (f" Both are at the ceiling (mean accuracy >= {st.CEILING}): this task does not rank the "
                 "encodings here; a harder one would.")
    return line


def selection_line(selection: pd.DataFrame) -> str:
    """How the report chose each encoding's variant, and which encodings could not be chosen for."""
    line = ("**Selection**: each encoding's variant (new-grid policy, temperature) is chosen on one half of the "
            "test images and scored on the other, both ways, and the two scores averaged (2-fold cross-fitting of a "
            "fixed, seeded, class-stratified split); the best variant on the test images themselves appears only "
            "as an optimistic upper bound.")
    old = sorted(set(selection.loc[selection["method"].isin([sel.DEFAULT_ONLY, sel.NO_DEFAULT]), "encoding"]))
    if old:
        line += (f" Runs logged before the half metrics cannot be cross-fitted: {', '.join(old)} "
                 "shown under their default variant, no choice made (`harness evaluate` adds the half metrics "
                 "from the kept weights).")
    return line


def control_lines(control: pd.DataFrame) -> list[str]:
    """What the position-free control says about the task (:func:`harness.report.stats.control_runs`):
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
                         f"without positions; what positions add is an encoding's gain over {name} (\"What "
                         f"position adds\" below). Whether an encoding trained is still judged against chance, "
                         f"not against {name}.")
    return lines


def budget_line(head: pd.DataFrame, convergence: pd.DataFrame) -> str | None:
    """A line when a run of a leader of :func:`harness.report.comparisons.headline` (or of the encoding
    it leads) had not converged (:func:`harness.report.curves.convergence`): a ranking of runs
    still rising when the budget ran out is a statement about the budget. None when no such run."""
    if head.empty or convergence.empty:
        return None
    named = {(str(label).split(" (")[0], int(t)) for col in ("best", "runner_up")
             for label, t in zip(head[col], head["train_resolution"]) if isinstance(label, str)}
    counts = rc.convergence_counts(convergence)
    parts = [f"{r.n_not_converged} of {r.n_runs} run(s) of {r.encoding} (trained at {r.train_resolution} px)"
             for r in counts.itertuples(index=False) if (r.encoding, int(r.train_resolution)) in named
             and r.n_not_converged]
    if not parts:
        return None
    return (f"**Budget**: {'; '.join(parts)} had not converged (validation accuracy still rising over the last "
            "epochs, see \"Runs that had not converged\"): the leaders above are ranked at this study's budget, "
            "a statement about the budget rather than about what the encodings can reach.")


# ------------------------------------------------------------------------------ tables
#: what the gain tables are, in words, under their titles
GAIN_NOTE = (f"What position adds: each encoding's selected accuracy (its variant chosen on one half of the test "
             f"images and scored on the other) minus that of the position-free control `{st.CONTROL}` at the same "
             "test size, paired by seed; the mean over the pairs and its interval over them "
             f"[{st.INTERVAL_METHOD}], \"(1 pair)\" without one. Positive: the encoding's position signal adds "
             f"accuracy beyond what a model without positions learns. The first row is `{st.CONTROL}`'s own "
             "accuracy (every run of it counts, at chance or not). \"did not train\": no run of the encoding beat "
             f"chance (judged against chance, never against `{st.CONTROL}`); a seed that did not train has no pair. "
             "Every number is in gain.csv.")


def gain_table(gain: pd.DataFrame) -> pd.DataFrame:
    """One (regime, training resolution) of :func:`harness.report.comparisons.gain_over_control` as the
    page shows it: the control's accuracy first, then one row per encoding, one column per test
    size (in size order): ``+0.052 [+0.031, +0.070]``, ``+0.052 (1 pair)``, "did not train (3
    runs)" for an encoding none of whose runs trained, "–" where nothing pairs; and how many of
    the encoding's runs trained."""
    order = gain[["test_rows", "test_cols", "test_resolution"]].drop_duplicates().sort_values(["test_rows",
                                                                                              "test_cols"])
    rows = []
    for enc, g in gain.groupby("encoding", sort=False):
        first = g.iloc[0]
        control = enc == st.CONTROL
        by_size = g.set_index("test_resolution")
        out = {"encoding": f"{enc} (control): its accuracy" if control else enc}
        for size in order["test_resolution"]:
            r = by_size.loc[size] if size in by_size.index else None
            if r is None:
                text = "–"
            elif control:
                text = f"{r.control_acc:.3f}"
            elif r.n_runs == r.n_untrained:
                text = f"did not train ({r.n_runs} run{'s' if r.n_runs != 1 else ''})"
            elif r.n_pairs == 0:
                text = "–"
            elif r.n_pairs == 1:
                text = f"{r.gain:+.3f} (1 pair)"
            else:
                text = f"{r.gain:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
            out[f"{size} px"] = text
        out["runs that trained"] = f"{first.n_runs - first.n_untrained}/{first.n_runs}"
        rows.append(out)
    return pd.DataFrame(rows)


def main_table(selection: pd.DataFrame, selected: pd.DataFrame | None = None,
               convergence: pd.DataFrame | None = None) -> pd.DataFrame:
    """One (regime, training resolution, side) of :func:`harness.report.selection.selection_table` as
    the page shows it: one row per encoding, its selected variant, its selected accuracy per
    test size (with ``selected``, :func:`harness.report.selection.selected_scores`) and over the side
    [interval], its default variant and accuracy, and the best variant on the test images
    labelled as an optimistic upper bound; with ``convergence``
    (:func:`harness.report.curves.convergence`), how many of the encoding's runs at this
    training size had not converged (:func:`harness.report.curves.convergence_text`)."""
    selected = selected if selected is not None else pd.DataFrame(columns=sel.SELECTED_COLUMNS)
    sizes = (selected.loc[selected["encoding"].isin(selection["encoding"])]
             .merge(selection[["regime", "train_resolution", "side"]].drop_duplicates())
             .groupby(["encoding", "test_rows", "test_cols", "test_resolution"], sort=True)["test_acc"].mean()
             .reset_index())
    order = sizes[["test_rows", "test_cols", "test_resolution"]].drop_duplicates().sort_values(["test_rows",
                                                                                                 "test_cols"])
    counts = None if convergence is None else {
        (c.encoding, int(c.train_resolution)): (c.n_runs, c.n_not_converged, c.n_cannot_tell)
        for c in rc.convergence_counts(convergence).itertuples(index=False)}
    rows = []
    for r in selection.itertuples(index=False):
        out = {"encoding": r.encoding}
        if r.method == sel.UNTRAINED:
            out["selected variant"] = f"did not train ({r.n_untrained} run{'s' if r.n_untrained != 1 else ''})"
        else:
            note = {sel.DEFAULT_ONLY: " (default; runs predate the half metrics)", sel.NO_DEFAULT:
                    "no selection (runs predate the half metrics)", sel.ONLY_VARIANT: " (its only variant)"}
            text = "" if r.method == sel.NO_DEFAULT else _inner(r.selected, r.encoding)
            out["selected variant"] = text + note.get(r.method, "")
        mine = sizes.loc[sizes["encoding"] == r.encoding].set_index("test_resolution")["test_acc"]
        for size in order["test_resolution"]:
            out[f"{size} px"] = f"{mine[size]:.3f}" if size in mine.index else "–"
        acc = _ci(r.mean, r.ci_low, r.ci_high, r.n_seeds)
        if r.n_untrained and r.n_seeds:
            acc += f" ({r.n_seeds}/{r.n_seeds + r.n_untrained} trained)"
        out["selected: mean [interval]"] = acc
        out["default variant"] = _inner(r.default, r.encoding) if r.method != sel.UNTRAINED else "–"
        out["default: mean [interval]"] = _ci(r.default_mean, r.default_ci_low, r.default_ci_high, r.n_seeds)
        out["best on test (optimistic upper bound)"] = (
            "–" if pd.isna(r.upper_mean) else f"{r.upper_mean:.3f} ({_inner(r.upper, r.encoding)})")
        if counts is not None:
            c = counts.get((r.encoding, int(r.train_resolution)))
            out["had not converged"] = rc.convergence_text(*c) if c else "–"
        rows.append(out)
    return pd.DataFrame(rows)


def primary_table(primary: pd.DataFrame) -> pd.DataFrame:
    """The primary family as the page shows it: one row per declared comparison, regime, side
    and training size."""
    return pd.DataFrame({
        "regime": primary["regime"], "side": primary["side"], "trained at": primary["train_resolution"],
        "A (selected variant)": primary["a_label"], "B (selected variant)": primary["b_label"],
        "seeds": primary["n_pairs"],
        "A − B [interval]": [("–" if pd.isna(m) else f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]")
                             for m, lo, hi in zip(primary["mean_diff"], primary["diff_low"], primary["diff_high"])],
        "P(A > B) [interval]": [("–" if pd.isna(m) else f"{m:.2f} [{lo:.2f}, {hi:.2f}]")
                                for m, lo, hi in zip(primary["prob"], primary["prob_low"], primary["prob_high"])],
        "p": [_p(v) for v in primary["p_value"]], "p (Holm, primary family)": [_p(v) for v in primary["p_holm"]],
        "significant": ["yes" if s else "no" for s in primary["significant"]],
        "seeds for 80% power": [seeds_text(n, note) if _known(n, note) else "–"
                                for n, note in zip(primary["seeds_needed"], primary["seeds_note"])],
        "at Holm's first step": [seeds_text(n, note) if _known(n, note) else "–"
                                 for n, note in zip(primary["seeds_needed_family"], primary["seeds_note_family"])],
        "note": primary["note"],
    })


def ranking_table(friedman: pd.DataFrame) -> pd.DataFrame:
    """The encodings' mean ranks (1: the best) as one column per regime, side and training size,
    with Friedman's p, Nemenyi's critical difference and the number of blocks under them; a
    side that could not be ranked says why."""
    if friedman.empty:
        return pd.DataFrame()
    cols, extra = {}, {"Friedman p": {}, "critical difference (Nemenyi)": {}, "blocks (seed, size)": {}, "note": {}}
    for (regime, train, side), g in friedman.groupby(["regime", "train_resolution", "side"], sort=True):
        name = f"{regime}, {side} ({train} px)"
        ranked = g.dropna(subset=["encoding"])
        cols[name] = dict(zip(ranked["encoding"], (f"{v:.2f}" for v in ranked["mean_rank"])))
        first = g.iloc[0]
        extra["Friedman p"][name] = _p(first["friedman_p"])
        extra["critical difference (Nemenyi)"][name] = "–" if pd.isna(first["cd"]) else f"{first['cd']:.2f}"
        extra["blocks (seed, size)"][name] = str(int(first["n_blocks"]))
        extra["note"][name] = first["note"] or ""
    encodings = sorted({e for c in cols.values() for e in c})
    rows = [{"encoding": e, **{n: c.get(e, "–") for n, c in cols.items()}} for e in encodings]
    rows += [{"encoding": k, **{n: v.get(n, "") for n in cols}} for k, v in extra.items()
             if k != "note" or any(v.values())]
    return pd.DataFrame(rows)


def ranking_note(alpha: float) -> str:
    """What the ranking table is, in words, under its title."""
    return (f"Exploratory, with its own test: autorank's Friedman test over blocks of (seed, test size) on each "
            f"side, then Nemenyi's critical difference at alpha = {alpha:g}; mean rank 1 is the best, and two "
            "encodings whose mean ranks differ by less than the critical difference are not told apart. Each "
            "encoding under its selected variant; the blocks of one seed share its weights (not independent). A "
            f"side needs 3 encodings and {MIN_BLOCKS} blocks; an encoding missing a block (a seed that did not "
            "train) is left out of that side's ranking. The critical-difference diagram is among the figures.")
