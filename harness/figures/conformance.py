"""The figure conformance kit: checks every registered report figure must pass, built-in or plugin.

A plugin's own test suite can run it too::

    import pytest
    from harness.figures.conformance import CHECKS

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    def test_my_figure(check):
        check("my_figure")

Each check takes a figure's name (or its class, registered or not) and raises
``AssertionError`` on failure. The figure is drawn
on handmade studies (:data:`STUDIES`): a plain one (three encodings, two training
resolutions, two seeds, four test resolutions), the same with a tune stage, and an edge
case (one seed, no ``none`` encoding, an encoding at chance everywhere).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.figure import Figure

from harness.figures import FIGURES, ReportFigure
from harness.figures.plotting import save, theme
from harness.report import CURVE_COLUMNS, RESULT_COLUMNS, StudyRuns, summary_tables
from harness.schema import Cell

__all__ = ["CHECKS", "STUDIES", "check_all", "handmade_study"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def handmade_study(encodings: tuple[str, ...] = ("none", "learned", "rope_axial"), *,
                   train_resolutions: tuple[int, ...] = (16, 24), seeds: tuple[int, ...] = (0, 1),
                   test_resolutions: tuple[int, ...] = (8, 16, 24, 32), tuned: bool = False,
                   at_chance: tuple[str, ...] = ()) -> tuple[StudyRuns, dict[str, Any]]:
    """A small study built in code, as the report would read it from MLflow, with its tables.

    Accuracies fall off away from the training resolution, a little less for each further
    encoding, and vary by seed; an encoding in ``at_chance`` scores 0.1 everywhere.
    """
    rows, curves, tuning = [], [], []
    for e, enc in enumerate(encodings):
        for train in train_resolutions:
            for seed in seeds:
                run_id = f"{enc}-r{train}-s{seed}"
                for test in test_resolutions:
                    acc = 0.1 if enc in at_chance else \
                        max(0.1, 0.9 - (0.3 - 0.08 * e) * abs(math.log2(test / train)) - 0.03 * seed)
                    rows.append({"study": "handmade", "stage": "evaluate", "encoding": enc, "options": "{}",
                                 "train_resolution": train, "test_resolution": test, "seed": seed,
                                 "test_acc": acc, "test_loss": 2.3 * (1 - acc), "params": 10_000 + 256 * e,
                                 "images_per_s": 1000.0 - 50 * e + seed, "run_id": run_id, "status": "FINISHED"})
                for epoch in range(3):
                    curves.append({"encoding": enc, "train_resolution": train, "seed": seed, "epoch": epoch,
                                   "val_acc": 0.1 if enc in at_chance else 0.3 + 0.2 * epoch - 0.02 * seed})
            for trial in range(6) if tuned else ():
                lr, wd = 1e-4 * 2 ** trial, 0.01 * (1 + trial % 3)
                tuning.append({"encoding": enc, "train_resolution": train, "trial": trial,
                               "val_acc": 0.5 + 0.05 * trial - 0.02 * e - 2 * wd,
                               "state": "pruned" if trial == 5 else "finished", "train.lr": lr,
                               "train.weight_decay": wd})
    results = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    results["test_resolution"] = results["test_resolution"].astype("Int64")
    cells = sorted({Cell(r["encoding"], r["train_resolution"], r["seed"]) for r in rows})
    spec = {"name": "handmade", "encodings": [{"name": e, "label": e} for e in encodings],
            "train_resolutions": list(train_resolutions), "test_resolutions": list(test_resolutions),
            "seeds": list(seeds)}
    runs = StudyRuns(results, pd.DataFrame(curves, columns=CURVE_COLUMNS), pd.DataFrame(tuning), spec,
                     {"git commit": "handmade"}, cells)
    tables, _ = summary_tables(results, cells, "learned" if "learned" in encodings else None)
    return runs, tables


#: the studies every figure is drawn on: name -> (runs, tables) builder
STUDIES: dict[str, Callable[[], tuple[StudyRuns, dict[str, Any]]]] = {
    "plain": lambda: handmade_study(),
    "tuned": lambda: handmade_study(tuned=True),
    "one seed, no none, one at chance": lambda: handmade_study(("learned", "alibi2d", "sincos2d"),
                                                               train_resolutions=(16,), seeds=(3,),
                                                               at_chance=("alibi2d",)),
}


FigureRef = str | type[ReportFigure]


def _resolve(figure: FigureRef) -> tuple[str, type[ReportFigure]]:
    """(name, class) of a registered name or of a class."""
    if isinstance(figure, str):
        return figure, FIGURES.get(figure)
    return figure.name or figure.__qualname__, figure


def _draw(figure: FigureRef, study: str) -> tuple[Figure | None, StudyRuns, dict[str, Any]]:
    name, cls = _resolve(figure)
    theme()
    runs, tables = STUDIES[study]()
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
        runs, tables = STUDIES[study]()
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


CHECKS = [check_text, check_draws_a_full_study, check_saves_png, check_closes_figures, check_leaves_inputs_alone]


def check_all(figure: FigureRef) -> None:
    """Every check on one figure."""
    for check in CHECKS:
        check(figure)
