"""What the report's figures share: the theme, one colour per encoding, the order of test sizes, the legend, saving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["encoding_palette", "legend_outside", "save", "size_order", "theme"]


def theme() -> None:
    """The look of every report figure (files only: no window opens)."""
    matplotlib.use("Agg")
    sns.set_theme(style="whitegrid", context="notebook")


def encoding_palette(tables: dict[str, Any]) -> dict[str, Any]:
    """One colour per encoding of the accuracy table, the same in every figure."""
    acc = tables["accuracy"]
    return dict(zip(sorted(acc.encoding.unique()), sns.color_palette("tab10", acc.encoding.nunique())))


def size_order(frame: pd.DataFrame) -> list[str]:
    """The test sizes (``test_resolution`` labels) of a table, ordered by rows, then columns."""
    sizes = frame[["test_rows", "test_cols", "test_resolution"]].drop_duplicates()
    return list(sizes.sort_values(["test_rows", "test_cols"])["test_resolution"])


def legend_outside(ax: Axes) -> None:
    """The encodings' legend, right of the axes."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), title="encoding")


def save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` and close it."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
