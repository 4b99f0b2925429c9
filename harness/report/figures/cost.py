"""Parameters and the training throughput measured during the study, per encoding."""

from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import seaborn as sns

from harness.report.figures import ReportFigure, register_figure
from harness.report.figures.plotting import count_axis, count_format
from harness.report.stats import throughput_warning
from harness.report.tidy import finished

__all__ = ["Cost"]


@register_figure("cost")
class Cost(ReportFigure):
    title = "Cost"
    order = 30
    caption = ("Cost per encoding: parameters added over none, and the training throughput measured during the "
               "study on its device, relative to none's mean over its runs (bar: the mean over runs; dots: each run). "
               "Measured while the study trained, not a benchmark: the cells train in the spec's order, one per "
               "worker at a time, so whatever ran beside a run (another worker's training or evaluation, other "
               "programs) shows here as a difference between encodings; `harness bench` times the encodings side "
               "by side. Counts as numbers (14.4k: 14,400).")

    def draw(self, runs, tables):
        cost = tables["cost"]
        if cost.empty:
            return None
        devices = sorted({d for v in cost["device"] for d in str(v).split(", ")})
        fig, axes = plt.subplots(1, 2, figsize=(11, 0.4 * len(cost) + 2))
        rel = cost.dropna(subset=["params_vs_none"]).empty is False
        sns.barplot(data=cost, y="encoding", x="params_vs_none" if rel else "params", ax=axes[0], color="tab:blue")
        base = cost.loc[cost["encoding"] == "none", "params"]
        axes[0].set(title=(f"parameters added over none (none: {count_format(base.iloc[0])})" if rel
                           else "trainable parameters"), xlabel="parameters",
                    ylabel="")
        count_axis(axes[0])
        _label_bars(axes[0], count_format)
        rel = cost.dropna(subset=["throughput_vs_none"]).empty is False
        sns.barplot(data=cost, y="encoding", x="throughput_vs_none" if rel else "images_per_s", ax=axes[1],
                    color="tab:green")
        axes[1].set(title=f"training throughput measured during the study\n(device: {', '.join(devices)}; "
                          "not a benchmark)",
                    xlabel="ratio to none" if rel else "images / s", ylabel="")
        if rel:
            axes[1].axvline(1.0, color="black", linewidth=1)
            # written inside the bars: the runs' dots lie around their ends
            _label_bars(axes[1], lambda v: "–" if v != v else f"{v:.2f}", inside=True)
            _runs_as_dots(axes[1], runs, cost)
            axes[1].set_ylabel("")
            warning = throughput_warning(cost)
            if warning:  # on the figure itself, under its axis: a figure travels without the page's text
                axes[1].text(0.5, -0.1, textwrap.fill(warning, 80), transform=axes[1].transAxes, ha="center",
                             va="top", fontsize=8, color="firebrick")
        else:
            count_axis(axes[1])
            _label_bars(axes[1], count_format)
        return fig


def _runs_as_dots(ax, runs, cost) -> None:
    """Each run's throughput relative to none's mean, as a dot on its encoding's bar (the spread
    a mean hides); nothing without the runs."""
    if runs is None or runs.results.empty:
        return
    # one row per run, as cost_table takes them
    one = finished(runs.results, ["encoding", "images_per_s", "run_id"]).drop_duplicates("run_id")
    one = one.dropna(subset=["images_per_s"])
    none = cost.loc[cost["encoding"] == "none", "images_per_s"]
    if one.empty or none.empty or not none.iloc[0]:
        return
    one = one.assign(ratio=one["images_per_s"] / none.iloc[0])
    sns.stripplot(data=one, y="encoding", x="ratio", order=list(cost["encoding"]), ax=ax, color="black", size=3,
                  jitter=0.15, alpha=0.7)


def _label_bars(ax, fmt, inside: bool = False) -> None:
    """Each bar's value written by ``fmt`` at its end (with room for it right of the longest bar),
    or ``inside`` it, in the middle."""
    ax.margins(x=0.12)
    for bars in ax.containers:
        ax.bar_label(bars, labels=[fmt(b.get_width()) for b in bars], fontsize=7, padding=2,
                     label_type="center" if inside else "edge", color="white" if inside else None)
