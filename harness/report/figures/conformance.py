"""The figure conformance kit: checks every registered report figure must pass, built-in or plugin.

A plugin's own test suite can run it too::

    import pytest
    from harness.report.figures.conformance import CHECKS

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    def test_my_figure(check):
        check("my_figure")

Each check takes a figure's name (or its class, registered or not) and raises
``AssertionError`` on failure. The figure is drawn
on handmade studies (:data:`STUDIES`): a plain one (three encodings, two training
resolutions, two seeds, five test sizes (one not square), two regimes, two policies, two
temperatures), the same with a tune stage, an edge case (one seed, no ``none`` encoding, an
encoding at chance everywhere: its runs did not train), and one regime, policy and
temperature with three seeds; and one of every registered encoding (:func:`encodings_study`),
on which no two encodings may share a colour and a marker.
"""

from __future__ import annotations

import copy
import itertools
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from harness.report.figures import FIGURES, ReportFigure
from harness.report.figures.plotting import save, theme
from harness.report import CURVE_COLUMNS, StudyRuns, summary_tables, tidy_results
from harness.schema import NO_POLICY, Cell, Size

__all__ = ["CHECKS", "STUDIES", "check_all", "encodings_study", "handmade_study"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def handmade_study(encodings: tuple[str, ...] = ("none", "learned", "rope_axial"), *,
                   train_resolutions: tuple[int, ...] = (16, 24), seeds: tuple[int, ...] = (0, 1),
                   test_resolutions: tuple[int | str, ...] = (8, 16, 24, 32, "24x48"), tuned: bool = False,
                   at_chance: tuple[str, ...] = (), regimes: tuple[str, ...] = ("zoom", "canvas"),
                   policies: tuple[str, ...] = ("extrapolate", "interpolate"),
                   temperatures: tuple[str, ...] = ("none", "log"), chance: float = 0.1,
                   ) -> tuple[StudyRuns, dict[str, Any]]:
    """A small study built in code, as the report would read it from MLflow, with its tables.

    Every run is evaluated under every regime x policy x temperature (``none`` and
    ``learned`` have no policy: evaluated once, policy ``na``) at every test size (the canvas
    regime: sizes no smaller than the training size). Accuracies fall off away from the
    training size, a little less for each further encoding, better under ``interpolate`` in
    the zoom regime and under ``extrapolate`` on a canvas, and vary by seed; an encoding in
    ``at_chance`` scores ``chance`` everywhere and its runs did not train. The accuracies on the
    two test halves are the accuracy plus and minus up to 2% of it; an encoding's default policy
    is the first of ``policies``.
    """
    rows, curves, tuning = [], [], []
    for e, enc in enumerate(encodings):
        own = (NO_POLICY,) if enc in ("none", "learned") else policies
        for train in train_resolutions:
            for seed in seeds:
                run_id = f"{enc}-r{train}-s{seed}"
                val = [chance if enc in at_chance else 0.3 + 0.2 * epoch - 0.02 * seed for epoch in range(3)]
                base = {"study": "handmade", "stage": "evaluate", "encoding": enc, "options": "{}",
                        "default_policy": own[0],
                        "train_resolution": train, "seed": seed, "chance": chance, "final_val_acc": val[-1],
                        "val_images": 1000,
                        "params": 10_000 + 256 * e, "images_per_s": 1000.0 - 50 * e + seed, "device": "cpu",
                        "run_id": run_id, "status": "FINISHED"}
                for regime, policy, temp, test in itertools.product(regimes, own, temperatures, test_resolutions):
                    size = Size.parse(test)
                    if regime == "canvas" and min(size.rows, size.cols) < train:
                        continue
                    off = abs(math.log2(size.rows * size.cols / train ** 2)) / 2
                    fit = 0.05 if (regime, policy) in (("zoom", "interpolate"), ("canvas", "extrapolate")) else 0.0
                    acc = chance if enc in at_chance else min(1.0, max(
                        chance, 0.9 - (0.3 - 0.08 * e) * off - 0.03 * seed + fit * (off > 0)
                        + 0.01 * (temp != "none") * (off > 0) * (1 + seed)))
                    # the two halves of the test images: acc is their mean, each off it by up to 2% (the
                    # same for every variant on the training grid, where they are the same model)
                    tilt = min(acc, 1 - acc) * 0.02 * ((3 * e + 5 * seed + (len(policy) + len(temp)) * (off > 0) + size.rows) % 5 - 2)
                    rows.append({**base, "regime": regime, "policy": policy, "temperature": temp,
                                 "test_resolution": size.label, "test_acc": acc, "test_acc_a": acc + tilt,
                                 "test_acc_b": acc - tilt, "test_loss": 2.3 * (1 - acc)})
                for epoch, v in enumerate(val):
                    curves.append({"encoding": enc, "train_resolution": train, "seed": seed, "epoch": epoch,
                                   "val_acc": v, "run_id": run_id})
            for trial in range(6) if tuned else ():
                lr, wd = 1e-4 * 2 ** trial, 0.01 * (1 + trial % 3)
                tuning.append({"encoding": enc, "train_resolution": train, "trial": trial,
                               "val_acc": 0.5 + 0.05 * trial - 0.02 * e - 2 * wd,
                               "state": "pruned" if trial == 5 else "finished", "train.lr": lr,
                               "train.weight_decay": wd})
    results = tidy_results(rows)
    cells = sorted({Cell(r["encoding"], r["train_resolution"], r["seed"]) for r in rows})
    spec = {"name": "handmade", "encodings": [{"name": e, "label": e} for e in encodings],
            "train_resolutions": list(train_resolutions), "test_resolutions": list(test_resolutions),
            "seeds": list(seeds), "regimes": list(regimes), "policies": list(policies),
            "temperatures": list(temperatures)}
    runs = StudyRuns(results, pd.DataFrame(curves, columns=CURVE_COLUMNS), pd.DataFrame(tuning), spec,
                     {"git commit": "handmade", "devices": "cpu"}, cells)
    tables, _ = summary_tables(results, cells, "learned" if "learned" in encodings else None,
                               curves=runs.curves)
    return runs, tables


#: the studies every figure is drawn on: name -> (runs, tables) builder
STUDIES: dict[str, Callable[[], tuple[StudyRuns, dict[str, Any]]]] = {
    "plain": lambda: handmade_study(),
    "tuned": lambda: handmade_study(tuned=True),
    "one seed, no none, one at chance": lambda: handmade_study(("learned", "alibi2d", "sincos2d"),
                                                               train_resolutions=(16,), seeds=(3,),
                                                               at_chance=("alibi2d",)),
    "one regime, policy and temperature": lambda: handmade_study(("rope_axial", "sincos2d"), seeds=(0, 1, 2),
                                                                 regimes=("zoom",), policies=("interpolate",),
                                                                 temperatures=("none",), test_resolutions=(8, 16)),
}


_BUILT: dict[str, tuple[StudyRuns, dict[str, Any]]] = {}


def _study(name: str) -> tuple[StudyRuns, dict[str, Any]]:
    """A fresh copy of a handmade study (each is built once: a figure that changes its copy
    changes no other check's)."""
    if name not in _BUILT:
        _BUILT[name] = STUDIES[name]()
    return copy.deepcopy(_BUILT[name])


FigureRef = str | type[ReportFigure]


def _resolve(figure: FigureRef) -> tuple[str, type[ReportFigure]]:
    """(name, class) of a registered name or of a class."""
    if isinstance(figure, str):
        return figure, FIGURES.get(figure)
    return figure.name or figure.__qualname__, figure


def _draw(figure: FigureRef, study: str) -> tuple[Figure | None, StudyRuns, dict[str, Any]]:
    name, cls = _resolve(figure)
    theme()
    runs, tables = _study(study)
    before = set(plt.get_fignums())
    fig = cls().draw(runs, tables)
    if not (fig is None or isinstance(fig, Figure)):
        for num in set(plt.get_fignums()) - before:
            plt.close(num)
    assert fig is None or isinstance(fig, Figure), (
        f"figure {name!r} on the {study} study: draw() returned {type(fig).__name__}, "
        "expected a matplotlib Figure or None")
    return fig, runs, tables


def check_text(figure: FigureRef) -> None:
    """A title and a caption to show on the page, and a number for its place."""
    name, cls = _resolve(figure)
    for attr in ("title", "caption"):
        value = getattr(cls, attr, None)
        assert isinstance(value, str) and value.strip(), f"figure {name!r}: {attr} must be a non-empty string"
    assert isinstance(cls.order, (int, float)) and not isinstance(cls.order, bool), (
        f"figure {name!r}: order must be a number, got {cls.order!r}")


def check_draws_a_full_study(figure: FigureRef) -> None:
    """On a study with everything (tune stage, curves, baseline, ``none``) there is a figure."""
    name, _ = _resolve(figure)
    fig, _, _ = _draw(figure, "tuned")
    assert fig is not None, f"figure {name!r}: draw() returned None on the tuned study, which has every table"
    plt.close(fig)


def check_saves_png(figure: FigureRef) -> None:
    """Every figure drawn saves as a non-empty PNG image."""
    name, _ = _resolve(figure)
    with tempfile.TemporaryDirectory() as tmp:
        for study in STUDIES:
            fig, _, _ = _draw(figure, study)
            if fig is None:
                continue
            path = save(fig, Path(tmp) / f"{name}.png")
            data = path.read_bytes()
            assert data.startswith(PNG_SIGNATURE), f"figure {name!r} on the {study} study: not a PNG file"
            height, width = plt.imread(path).shape[:2]
            assert width > 0 and height > 0, f"figure {name!r} on the {study} study: an empty image"


def check_closes_figures(figure: FigureRef) -> None:
    """Drawing opens no figure but the one returned (closed once saved): none is left open."""
    name, _ = _resolve(figure)
    with tempfile.TemporaryDirectory() as tmp:
        for study in STUDIES:
            before = set(plt.get_fignums())
            fig, _, _ = _draw(figure, study)
            if fig is not None:
                save(fig, Path(tmp) / f"{name}.png")
            left = set(plt.get_fignums()) - before
            for num in left:
                plt.close(num)
            assert not left, (f"figure {name!r} on the {study} study left {len(left)} matplotlib figure(s) open "
                              "(close what draw() opens and does not return)")


def check_leaves_inputs_alone(figure: FigureRef) -> None:
    """Drawing changes neither the runs nor the tables (the next figure reads them too)."""
    name, cls = _resolve(figure)
    for study in STUDIES:
        theme()
        runs, tables = _study(study)
        frames = {"results": runs.results, "curves": runs.curves, "tuning": runs.tuning,
                  **{f"tables[{k!r}]": v for k, v in tables.items() if v is not None}}
        copies, keys = {k: v.copy(deep=True) for k, v in frames.items()}, set(tables)
        fig = cls().draw(runs, tables)
        if isinstance(fig, Figure):
            plt.close(fig)
        assert set(tables) == keys, f"figure {name!r} on the {study} study changed the keys of tables"
        for key, frame in frames.items():
            assert frame.equals(copies[key]) and list(frame.columns) == list(copies[key].columns), (
                f"figure {name!r} on the {study} study changed {key}")


def encodings_study(encodings: tuple[str, ...]) -> tuple[StudyRuns, dict[str, Any]]:
    """A handmade study of many encodings (one training resolution, three seeds, a tune stage,
    one regime and temperature), built once per tuple of names."""
    key = f"encodings: {', '.join(encodings)}"
    if key not in _BUILT:
        _BUILT[key] = handmade_study(encodings, train_resolutions=(16,), seeds=(0, 1, 2), tuned=True,
                                     regimes=("zoom",), temperatures=("none",), test_resolutions=(8, 16, 24, 32))
    return copy.deepcopy(_BUILT[key])


def _style(handle: Any) -> tuple[str, str | None]:
    """(colour as #rrggbb, marker or None) of a legend handle: a line, a collection of points, a patch."""
    from matplotlib.collections import Collection
    from matplotlib.colors import to_hex
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    marker = None
    if isinstance(handle, Line2D):
        colour, marker = handle.get_color(), handle.get_marker()
    elif isinstance(handle, Collection):
        colours = handle.get_facecolor() if len(handle.get_facecolor()) else handle.get_edgecolor()
        colour = colours[0]
        paths = handle.get_paths()
        marker = str(paths[0].vertices.round(3).tolist()) if len(paths) else None
    elif isinstance(handle, Patch):
        colour = handle.get_facecolor()
    else:
        raise AssertionError(f"a legend entry of type {type(handle).__name__}: the kit cannot read its style")
    return to_hex(colour), None if marker in (None, "None", "", " ", "none") else str(marker)


def _texts(fig: Figure) -> tuple[list[str], list[tuple[str, Any]]]:
    """Every text a reader sees on ``fig`` (titles, tick labels, texts, legend entries), and the
    legend entries as (text, handle)."""
    texts, entries = [t.get_text() for t in fig.texts], []
    legends = [ax.get_legend() for ax in fig.axes] + list(fig.legends)
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), *(t.get_text() for t in ax.texts)]
        texts += [t.get_text() for t in (*ax.get_xticklabels(), *ax.get_yticklabels())]
    for legend in (lg for lg in legends if lg is not None):
        for text, handle in zip(legend.get_texts(), legend.legend_handles):
            texts.append(text.get_text())
            entries.append((text.get_text(), handle))
    return texts, entries


def check_tells_encodings_apart(figure: FigureRef, encodings: tuple[str, ...] | None = None) -> None:
    """On a study of every registered encoding (built-in and plugin; or ``encodings``), a
    figure that names encodings names every one (in a legend, tick labels or texts), and no two
    encodings in its legends share both a colour and a marker
    (``harness.report.figures.plotting.encoding_styles`` gives every encoding its own). A figure that
    names no encoding (not about them) passes."""
    from harness.encodings import ENCODINGS

    name, cls = _resolve(figure)
    names = tuple(sorted(encodings or ENCODINGS.names()))
    theme()
    runs, tables = encodings_study(names)
    fig = cls().draw(runs, tables)
    if fig is None:
        return
    try:
        texts, entries = _texts(fig)
        missing = [e for e in names if not any(t == e or t.startswith(f"{e} ") for t in texts)]
        assert not missing or len(missing) == len(names), (  # a figure that names none is not about encodings
            f"figure {name!r} on a study of {len(names)} encodings does not name {', '.join(missing)}")
        styles: dict[tuple[str, str | None], str] = {}
        for text, handle in entries:
            if text not in names:
                continue
            style = _style(handle)
            assert style not in styles or styles[style] == text, (
                f"figure {name!r}: encodings {styles.get(style)!r} and {text!r} share the colour {style[0]} and "
                f"the marker {style[1]!r} (use harness.report.figures.plotting.encoding_styles)")
            styles[style] = text
    finally:
        plt.close(fig)


CHECKS = [check_text, check_draws_a_full_study, check_saves_png, check_closes_figures, check_leaves_inputs_alone,
          check_tells_encodings_apart]


def check_all(figure: FigureRef) -> None:
    """Every check on one figure."""
    for check in CHECKS:
        check(figure)
