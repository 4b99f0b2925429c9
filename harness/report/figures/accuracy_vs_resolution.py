"""Test accuracy against test size: small multiples, one panel per encoding (and training
resolution), its variants as a few lines each told apart by colour (regime), line style
(new-grid policy) and marker (attention temperature), every seed's run as a point.

One panel per encoding rather than one line per encoding: fourteen encodings, each under two
temperatures, drew 28 lines in 14 colours on one panel, and lines could not be told apart. The
encodings are compared side by side by the tables and the retention heatmap; this figure shows
how each one's accuracy moves with the size, on the same y scale in every panel."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgba
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from harness.report.figures import ReportFigure, register_figure
from harness.report.figures.plotting import chance_line, size_order
from harness.report.stats import INTERVAL_METHOD
from harness.report.tidy import tested_rows
from harness.schema import NO_POLICY

__all__ = ["AccuracyVsResolution", "variant_styles"]

#: the regimes' colours (tab10 blue and orange: told apart in colour-blind vision too); a regime
#: a plugin adds takes the next of tab10
_REGIME_COLOURS = {"canvas": "#1f77b4", "zoom": "#ff7f0e"}
_MORE_COLOURS = ("#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
#: the policies' line styles: the first policy (and no policy) solid, the others dashed, dash-dot, dotted
_POLICY_STYLES = ("-", "--", "-.", ":")
#: the temperatures' markers: none filled circles, the others open triangles, squares, diamonds
_TEMPERATURE_MARKERS = ("o", "^", "s", "D")
_PANEL_COLUMNS = 4
_TRAIN_BAND = "#d9d9d9"  # the training size: a band, not a line (the policies are lines)
_RULE = "#555555"  # the rule before the non-square sizes: darker than the grid


def variant_styles(regimes, policies, temperatures) -> tuple[dict, dict, dict]:
    """(colour per regime, line style per policy, marker per temperature) for the lines of a
    panel: no two (regime, policy, temperature) triples of up to 10 regimes, 4 policies and 4
    temperatures share all three. ``na`` (no policy) is drawn like the first policy: an encoding
    is evaluated under named policies or under none, never both, so they never share a panel."""
    regimes = sorted(set(regimes), key=lambda r: (r not in _REGIME_COLOURS, r))
    extra = iter(_MORE_COLOURS)
    colours = {r: _REGIME_COLOURS.get(r) or next(extra) for r in regimes}
    named = sorted(set(policies) - {NO_POLICY})
    styles = {p: _POLICY_STYLES[i % len(_POLICY_STYLES)] for i, p in enumerate(named)}
    styles[NO_POLICY] = _POLICY_STYLES[0]
    temps = sorted(set(temperatures), key=lambda t: (t != "none", t))
    markers = {t: _TEMPERATURE_MARKERS[i % len(_TEMPERATURE_MARKERS)] for i, t in enumerate(temps)}
    return colours, styles, markers


@register_figure("accuracy_vs_resolution")
class AccuracyVsResolution(ReportFigure):
    title = "Accuracy against test size"
    caption = ("Test accuracy against test size, one panel per encoding (and training resolution), all on the same "
               "y scale; a title says how many of the panel's runs had not converged, if any. In a panel, a line per "
               "evaluation variant: colour, the regime; line style, the new-grid policy as the legend names it "
               "(solid also for an encoding without a policy; whatever the encoding's default policy); "
               "marker, the attention temperature (filled circle: none; the others open and larger, so that a tie "
               "shows as a dot inside the open marker). "
               "A line is the mean over the seeds that trained, joining the square sizes only (a non-square size, "
               "right of the dark vertical rule, changes the aspect ratio, not just the size, and has no line: at "
               "every size a panel's variants sit side by side, left to right in the legend's order of regime, "
               "then policy); bars: its interval "
               f"({INTERVAL_METHOD}); small dots: each seed's run; crosses: runs that did not train (not in the "
               "mean); dotted grey: chance (1 / number of classes, labelled in the first column); grey band: the "
               "training size. The sizes are evenly spaced, not to scale; the canvas regime has no size below the "
               "training size (a canvas is never smaller than the image). Lines that lie on each other are variants "
               "that score the same.")
    order = 10

    def draw(self, runs, tables):
        acc = tables["accuracy"]
        if acc.empty:
            return None
        res = tested_rows(runs.results)  # FINISHED runs' rows with an accuracy, trained or not
        colours, styles, markers = variant_styles(acc["regime"], acc["policy"], acc["temperature"])
        panels = acc[["encoding", "train_resolution"]].drop_duplicates().sort_values(["encoding", "train_resolution"])
        several = acc["train_resolution"].nunique() > 1
        unsettled = _not_converged(tables)
        ncols = min(_PANEL_COLUMNS, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        spare = nrows * ncols > len(panels)  # an empty slot holds the legend
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.7 * ncols + (0 if spare else 2.6), 3.0 * nrows),
                                 squeeze=False, sharey=True)
        flat = list(axes.flat)
        chance = []
        for i, ((enc, train), ax) in enumerate(zip(panels.itertuples(index=False), flat)):
            part = acc.loc[(acc["encoding"] == enc) & (acc["train_resolution"] == train)]
            pts = res.loc[(res["encoding"] == enc) & (res["train_resolution"] == train)]
            # written on the first column's panels only (the legend names it too): elsewhere it hid points
            chance = chance_line(ax, pts, label=i % ncols == 0) or chance
            self._panel(ax, part, pts, train, (colours, styles, markers))
            notes = ([f"trained at {train} px"] if several else []) + unsettled.get((str(enc), int(train)), [])
            ax.set_title(f"{enc} ({'; '.join(notes)})" if notes else str(enc), fontsize=10)
            ax.set(ylim=(-0.03, 1.03))  # a mean at 0 whole, not cut in half by the axis
        for i, ax in enumerate(flat):
            if i >= len(panels):
                ax.axis("off")
                continue
            ax.set_xlabel("test size (px)" if i + ncols >= len(panels) else "")  # the lowest panel of a column
            ax.set_ylabel("test accuracy" if i % ncols == 0 else "")
        handles = [Line2D([], [], color=c, linewidth=2, label=f"regime {r}") for r, c in colours.items()]
        shown = set(acc["policy"])
        handles += [Line2D([], [], color="black", linestyle=s, label=_policy_label(p, s, shown))
                    for p, s in styles.items() if p in shown and not (p == NO_POLICY and len(shown) > 1)]
        handles += [Line2D([], [], color="black", linestyle="", marker=m, markerfacecolor=_face(t, "black"),
                           label=f"temperature {t}") for t, m in markers.items()]
        handles += [Line2D([], [], color="dimgrey", marker=".", linestyle="", label="a seed's run"),
                    Line2D([], [], color="dimgrey", marker="x", linestyle="", label="did not train"),
                    Patch(facecolor=_TRAIN_BAND, label="training size")]
        if (acc["test_rows"] != acc["test_cols"]).any():
            handles += [Line2D([], [], color=_RULE, marker="|", markersize=12, markeredgewidth=1.4, linestyle="",
                               label="non-square sizes: right of it")]
        handles += [Line2D([], [], color="grey", linestyle=":", label=line.get_label()) for line in chance]
        if spare:
            flat[-1].legend(handles=handles, loc="center", fontsize=8, frameon=False)
        else:  # right of the top-right panel: the saved figure makes room for it
            flat[ncols - 1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
        return fig

    @staticmethod
    def _panel(ax, part: pd.DataFrame, pts: pd.DataFrame, train, looks) -> None:
        """One encoding's lines: one per (regime, policy, temperature), at its own x offset."""
        colours, styles, markers = looks
        # square sizes first, in order, joined by the lines; then the non-square ones, apart
        square = set(part.loc[part["test_rows"] == part["test_cols"], "test_resolution"])
        sizes = [s for s in size_order(part) if s in square] + [s for s in size_order(part) if s not in square]
        pos = {s: i + (0.5 if s not in square else 0.0) for i, s in enumerate(sizes)}
        groups = list(part.groupby(["regime", "policy", "temperature"]))
        # side by side per (regime, policy), so that their bars do not hide each other; the
        # temperatures of one (regime, policy) at the same x, so that equal scores lie on each other
        pairs = sorted({(regime, policy) for (regime, policy, _), _ in groups})
        width = 0.36 / max(1, len(pairs))
        for (regime, policy, temp), g in groups:
            dx = (pairs.index((regime, policy)) - (len(pairs) - 1) / 2) * width
            colour, style, marker = colours[regime], styles[policy], markers[temp]
            seeds = pts.loc[(pts["regime"] == regime) & (pts["policy"] == policy) & (pts["temperature"] == temp)]
            for ok, mark in ((True, "."), (False, "x")):
                s = seeds.loc[seeds["trained"] == ok]
                ax.scatter([pos[v] + dx for v in s["test_resolution"]], s["test_acc"], color=colour, marker=mark,
                           s=10 if ok else 20, alpha=0.5, linewidths=1, zorder=3)
            g = g.loc[g["n_seeds"] > 0].sort_values(["test_rows", "test_cols"])
            if g.empty:
                continue
            x = np.array([pos[v] for v in g["test_resolution"]], dtype=float) + dx
            # the interval's ends may round a hair inside the mean: no negative error bar
            low = (g["mean"] - g["ci_low"].fillna(g["mean"])).clip(lower=0)
            high = (g["ci_high"].fillna(g["mean"]) - g["mean"]).clip(lower=0)
            filled = temp == "none"  # the others open and larger, under it: a dot in a triangle where they tie
            bars = ax.errorbar(x, g["mean"], yerr=[low, high], color=colour, ecolor=to_rgba(colour, 0.4),
                               linestyle="none", marker=marker, markersize=3.5 if filled else 8,
                               markerfacecolor=_face(temp, colour), markeredgewidth=1.0 if filled else 1.2,
                               capsize=1.5, elinewidth=0.8, zorder=4 if filled else 3)
            joined = g["test_resolution"].isin(square).to_numpy()
            (line,) = ax.plot(x[joined], g["mean"].to_numpy()[joined], color=colour, linestyle=style, linewidth=1.3)
            # named for whoever reads the figure back (the tests): the variant each line and its markers draw
            for artist in (line, bars.lines[0]):
                artist.set_gid(f"variant: {regime} | {policy} | {temp}")
        if not (part["n_seeds"] > 0).any():
            ax.text(0.5, 0.55, "no seed trained", transform=ax.transAxes, ha="center", fontsize=9, color="dimgrey")
        if str(train) in pos:
            ax.axvspan(pos[str(train)] - 0.3, pos[str(train)] + 0.3, color=_TRAIN_BAND, zorder=0, linewidth=0)
        if len(square) < len(sizes):
            ax.axvline(len(square) - 0.25, color=_RULE, linewidth=1.4)
        ax.set_xticks([pos[s] for s in sizes], [f"{s}" for s in sizes])
        ax.tick_params(axis="x", labelsize=8)


def _not_converged(tables) -> dict[tuple[str, int], list[str]]:
    """(encoding, training resolution) -> ["k of n runs had not converged"] where k > 0
    (:mod:`harness.report.curves`' check, the same as the tables')."""
    from harness.report.curves import convergence_counts

    conv = tables.get("convergence")
    if conv is None or conv.empty:
        return {}
    return {(str(r.encoding), int(r.train_resolution)): [f"{r.n_not_converged} of {r.n_runs} runs not converged"]
            for r in convergence_counts(conv).itertuples(index=False) if r.n_not_converged}


def _policy_label(policy: str, style: str, shown: set) -> str:
    """The legend's words for a policy's line style; the solid one also stands for no policy."""
    if policy == NO_POLICY:
        return "no policy"
    return f"policy {policy}" + (", or no policy" if style == _POLICY_STYLES[0] and NO_POLICY in shown else "")


def _face(temperature: str, colour) -> object:
    """A marker's fill: the colour for temperature ``none``, open (white) for the others."""
    return colour if temperature == "none" else "white"
