"""What the report's figures share: the theme, one colour and marker per encoding, the order of test sizes,
the legend, counts written as numbers (``142k``), the labelled chance line, saving (PNG and PDF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import math

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

__all__ = ["COLOURS", "MARKERS", "chance_line", "count_axis", "count_format", "encoding_palette", "encoding_styles",
           "legend_outside", "save", "size_order", "theme"]

_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def theme() -> None:
    """The look of every report figure (files only: no window opens)."""
    matplotlib.use("Agg")
    sns.set_theme(style="whitegrid", context="notebook")


#: twenty colours: tab20's ten strong shades first, then its ten light ones (tab10's palette ran out
#: at ten, and fourteen encodings shared colours)
COLOURS = tuple(sns.color_palette("tab20", 20)[0::2] + sns.color_palette("tab20", 20)[1::2])
#: seven markers; with twenty colours, no two of the first 140 encodings share both
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def encoding_styles(encodings: Any) -> dict[str, tuple[Any, str]]:
    """(colour, marker) per encoding, in sorted order: the i-th gets ``COLOURS[i % 20]`` and
    ``MARKERS[i % 7]``, so up to twenty encodings have a colour each, and no two of up to 140
    share both a colour and a marker. ``encodings``: names, or the report's tables (the
    encodings of their accuracy table), so that every figure gives an encoding the same style."""
    if isinstance(encodings, dict):
        encodings = encodings["accuracy"]["encoding"]
    names = sorted({str(e) for e in encodings})
    return {e: (COLOURS[i % len(COLOURS)], MARKERS[i % len(MARKERS)]) for i, e in enumerate(names)}


def encoding_palette(tables: dict[str, Any]) -> dict[str, Any]:
    """One colour per encoding of the accuracy table, the same in every figure (the colours of
    :func:`encoding_styles`; a figure that draws points or lines uses its markers too)."""
    return {e: colour for e, (colour, _) in encoding_styles(tables).items()}


def size_order(frame: pd.DataFrame) -> list[str]:
    """The test sizes (``test_resolution`` labels) of a table, ordered by rows, then columns."""
    sizes = frame[["test_rows", "test_cols", "test_resolution"]].drop_duplicates()
    return list(sizes.sort_values(["test_rows", "test_cols"])["test_resolution"])


def legend_outside(ax: Axes) -> None:
    """The encodings' legend, right of the axes."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), title="encoding")


def count_format(value: Any) -> str:
    """A count or a rate as people write it: three significant digits with k / M / G / T
    (``142k``, ``1.2M``, ``10.3k``, ``-4.1k``), plainly below a thousand (``950``, ``12.5``);
    "–" for a missing value."""
    if value is None or pd.isna(value):
        return "–"
    v = float(value)
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    for scale, prefix in _PREFIXES:
        # the prefix whose 3-digit rounding stays below 1000 of it (999,950 is 1M, not 1000k)
        if abs(float(f"{v:.3g}")) >= scale:
            return f"{float(f'{v / scale:.3g}'):g}{prefix}"
    return f"{float(f'{v:.3g}'):g}"


def count_axis(ax: Axes, which: str = "x") -> None:
    """Tick labels of ``ax``'s x (or y) axis written by :func:`count_format`."""
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: count_format(v)))


def chance_line(ax: Axes, results: pd.DataFrame, label: bool = True) -> list[Line2D]:
    """The dataset's chance level (the ``chance`` column of the results table: 1 / classes) as a
    dotted grey line across ``ax``, labelled on the axes ("chance 0.1"; not with ``label=False``,
    for small multiples that label it once) and named in a legend built from the axes' artists;
    nothing when chance is unknown. Returns the lines drawn."""
    lines = []
    values = sorted(pd.to_numeric(results["chance"], errors="coerce").dropna().unique()) if len(results) else []
    for value in values:
        text = f"chance ({value:.3g})"
        lines.append(ax.axhline(float(value), color="grey", linestyle=":", linewidth=1.2, label=text, zorder=1))
        if label:
            ax.text(0.01, float(value), text, transform=ax.get_yaxis_transform(), ha="left", va="bottom",
                    fontsize=7, color="dimgrey")
    return lines


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (what the page embeds) and as a PDF beside it (the same
    name, ``.pdf``: vector, for a paper), and close it. Returns the PNG's path."""
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)
    return path
