"""Test accuracy against test size: small multiples, one panel per regime (and training
resolution) and policy, one line per encoding (its own colour and marker; temperature as the
line style), every seed's run as a point."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.lines import Line2D

from harness.report.figures import ReportFigure, register_figure
from harness.report.figures.plotting import chance_line, encoding_styles, size_order
from harness.report.stats import INTERVAL_METHOD
from harness.schema import NO_POLICY

__all__ = ["AccuracyVsResolution"]

_DASHES = {"none": "-", "log": "--"}


@register_figure("accuracy_vs_resolution")
class AccuracyVsResolution(ReportFigure):
    title = "Accuracy against test size"
    caption = ("Test accuracy against test size: one row of panels per regime (and training resolution), one "
               "column per new-grid policy; encodings without a policy (policy na) are drawn in every column. "
               "Line (colour and marker: the encoding): mean over the seeds that trained, joining the square sizes "
               "only (a non-square size, right of the grey rule, changes the aspect ratio, not just the size), "
               "bars: its interval "
               f"({INTERVAL_METHOD}); dots: each seed's run; crosses: runs that did not train (not in the mean); "
               "line style: attention temperature; dotted grey: chance (1 / number of classes, labelled); dashed: the "
               "training size.")
    order = 10

    def draw(self, runs, tables):
        acc = tables["accuracy"]
        if acc.empty:
            return None
        res = runs.results.dropna(subset=["test_acc", "regime"])
        res = res.loc[res["status"] == "FINISHED"]
        styles = encoding_styles(tables)
        panels = acc[["regime", "train_resolution"]].drop_duplicates().sort_values(["regime", "train_resolution"])
        policies = sorted(set(acc["policy"]) - {NO_POLICY}) or [NO_POLICY]
        temps = sorted(set(acc["temperature"]), key=lambda t: (t != "none", t))
        fig, axes = plt.subplots(len(panels), len(policies), figsize=(5.2 * len(policies) + 2.5, 3.6 * len(panels)),
                                 squeeze=False, sharey=True)
        chance = []  # the chance line(s) of a panel, for the legend
        width = 0.5 / max(1, acc["variant"].nunique() // max(1, len(policies)))
        for (regime, train), row in zip(panels.itertuples(index=False), axes):
            part = acc.loc[(acc["regime"] == regime) & (acc["train_resolution"] == train)]
            # square sizes first, in order, joined by the lines; then the non-square ones, apart
            square = set(part.loc[part["test_rows"] == part["test_cols"], "test_resolution"])
            sizes = [s for s in size_order(part) if s in square] + [s for s in size_order(part) if s not in square]
            pos = {s: i + (0.5 if s not in square else 0.0) for i, s in enumerate(sizes)}
            pts = res.loc[(res["regime"] == regime) & (res["train_resolution"] == train)]
            for pol, ax in zip(policies, row):
                shown = part.loc[part["policy"].isin([pol, NO_POLICY])]
                for k, ((enc, p, temp), g) in enumerate(shown.groupby(["encoding", "policy", "temperature"])):
                    g = g.loc[g["n_seeds"] > 0].sort_values(["test_rows", "test_cols"])
                    dx = (k - len(shown.groupby(["encoding", "policy", "temperature"])) / 2) * width / 4
                    x = np.array([pos[s] for s in g["test_resolution"]], dtype=float) + dx
                    style = _DASHES.get(temp, ":")
                    # the interval's ends may round a hair inside the mean: no negative error bar
                    low = (g["mean"] - g["ci_low"].fillna(g["mean"])).clip(lower=0)
                    high = (g["ci_high"].fillna(g["mean"]) - g["mean"]).clip(lower=0)
                    colour, marker = styles[enc]
                    ax.errorbar(x, g["mean"], yerr=[low, high], color=colour, ecolor=to_rgba(colour, 0.45),
                                linestyle="none", marker=marker, markersize=4, capsize=2, elinewidth=0.9)
                    joined = g["test_resolution"].isin(square).to_numpy()
                    ax.plot(x[joined], g["mean"].to_numpy()[joined], color=colour, linestyle=style, linewidth=1.4)
                    seeds = pts.loc[(pts["encoding"] == enc) & (pts["policy"] == p) & (pts["temperature"] == temp)]
                    for ok, marker in ((True, "."), (False, "x")):
                        s = seeds.loc[seeds["trained"] == ok]
                        ax.scatter([pos[v] + dx for v in s["test_resolution"]], s["test_acc"], color=colour,
                                   marker=marker, s=14 if ok else 22, alpha=0.6, linewidths=1, zorder=3)
                chance = chance_line(ax, pts) or chance
                if str(train) in pos:
                    ax.axvline(pos[str(train)], color="black", linestyle="--", linewidth=0.8)
                if len(square) < len(sizes):
                    ax.axvline(len(square) - 0.25, color="grey", linewidth=0.8, alpha=0.6)
                ax.set_xticks([pos[s] for s in sizes], [f"{s}" for s in sizes])
                ax.set(ylim=(0, 1.03), xlabel="test size (px)", ylabel="test accuracy",
                       title=f"{regime}, trained at {train} px, policy {pol}")
        handles = [Line2D([], [], color=c, marker=m, label=e) for e, (c, m) in styles.items()]
        handles += [Line2D([], [], color="black", linestyle=_DASHES.get(t, ":"), label=f"temperature {t}")
                    for t in temps]
        handles += [Line2D([], [], color="black", marker="x", linestyle="", label="did not train")]
        handles += [Line2D([], [], color="grey", linestyle=":", label=line.get_label()) for line in chance]
        # on the top-right panel, right of it: the saved figure makes room for it
        axes[0][-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
        return fig
