"""The figure conformance kit over every registered figure, the kit's power to fail, and a
throw-away figure plugin written by the test."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import pytest

from harness.figures import FIGURES, ReportFigure
from harness.figures.conformance import CHECKS, STUDIES, check_all, handmade_study
from harness.registry import PluginError, RegistryError, load_plugin
from harness.report import TABLES, summary_tables

THROWAWAY = '''
import matplotlib.pyplot as plt
from harness.figures import ReportFigure, register_figure


@register_figure("{name}")
class Throwaway(ReportFigure):
    title = "Throw-away"
    caption = "Mean test accuracy per encoding (a test plugin)."

    def draw(self, runs, tables):
        means = tables["accuracy"].groupby("encoding")["mean"].mean()
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.bar(means.index, means.values)
        return fig
'''


def write_plugin(folder, name: str):
    path = folder / f"{name}.py"
    path.write_text(THROWAWAY.format(name=name))
    return path


@pytest.mark.parametrize("name", FIGURES.names())
@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_figure_conformance(check, name):
    check(name)


def test_the_handmade_studies_are_what_the_kit_says():
    runs, tables = STUDIES["plain"]()
    res = runs.results
    assert res.encoding.nunique() == 3 and res.seed.nunique() == 2
    assert res.train_resolution.nunique() == 2 and res.test_resolution.nunique() == 5
    assert "24x48" in set(res.test_resolution)
    assert set(res.regime) == {"zoom", "canvas"} and set(res.temperature) == {"none", "log"}
    assert set(res.policy) == {"na", "extrapolate", "interpolate"}
    assert set(res[res.encoding == "rope_axial"].policy) == {"extrapolate", "interpolate"}
    # the canvas regime only grows the image: no size smaller than the training size
    canvas = res[res.regime == "canvas"]
    assert (canvas[["test_rows", "test_cols"]].min(axis=1) >= canvas.train_resolution).all()
    assert res.trained.all() and runs.tuning.empty and not STUDIES["tuned"]()[0].tuning.empty
    edge, edge_tables = STUDIES["one seed, no none, one at chance"]()
    assert edge.results.seed.nunique() == 1 and "none" not in set(edge.results.encoding)
    assert edge_tables["accuracy"]["std"].isna().all()  # one seed: no spread, no interval
    chance = edge.results[edge.results.encoding == "alibi2d"]
    assert (chance.test_acc == 0.1).all() and not chance.trained.any() and chance.retention.isna().all()
    assert set(edge_tables["untrained"].encoding) == {"alibi2d"}
    simple, _ = STUDIES["one regime, policy and temperature"]()
    assert simple.results.groupby("run_id").size().eq(2).all() and simple.results.seed.nunique() == 3
    # every expected cell has a finished run: nothing is listed as missing
    assert tables["missing"].empty and len(runs.cells) == 3 * 2 * 2


# --------------------------------------------------------------- the kit fails on broken figures
class Good(ReportFigure):
    title, caption = "Good", "A figure that follows the rules."

    def draw(self, runs, tables):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        return fig


class NoCaption(Good):
    caption = ""


class OrderNotANumber(Good):
    order = "first"


class ReturnsAxes(Good):
    def draw(self, runs, tables):
        return super().draw(runs, tables).axes[0]


class NeverDraws(Good):
    def draw(self, runs, tables):
        return None


class LeavesOneOpen(Good):
    def draw(self, runs, tables):
        plt.figure()  # a scratch figure, never closed
        return super().draw(runs, tables)


class OverwritesAColumn(Good):
    def draw(self, runs, tables):
        tables["accuracy"]["mean"] = tables["accuracy"]["mean"].clip(0, 0.5)  # for its own plot
        return super().draw(runs, tables)


class AddsATable(Good):
    def draw(self, runs, tables):
        tables["mine"] = tables["accuracy"]
        return super().draw(runs, tables)


@pytest.mark.parametrize("bad, check, message", [
    (NoCaption, "check_text", "caption must be a non-empty string"),
    (OrderNotANumber, "check_text", "order must be a number"),
    (ReturnsAxes, "check_saves_png", "returned Axes, expected a matplotlib Figure or None"),
    (NeverDraws, "check_draws_a_full_study", "returned None on the tuned study"),
    (LeavesOneOpen, "check_closes_figures", "left 1 matplotlib figure(s) open"),
    (OverwritesAColumn, "check_leaves_inputs_alone", "changed tables['accuracy']"),
    (AddsATable, "check_leaves_inputs_alone", "changed the keys of tables"),
])
def test_the_kit_catches_a_broken_figure(bad, check, message):
    check_all(Good)
    by_name = {c.__name__: c for c in CHECKS}
    with pytest.raises(AssertionError, match=re.escape(message)):
        by_name[check](bad)
    assert not plt.get_fignums()


# --------------------------------------------------------------- a figure plugin in one file
def test_a_figure_plugin_file_is_registered_listed_and_conformant(tmp_path):
    before = FIGURES.names()
    path = write_plugin(tmp_path, "throwaway_kit")
    assert load_plugin(str(path)) == ["figure throwaway_kit"]
    assert FIGURES.names() == sorted([*before, "throwaway_kit"])
    assert FIGURES.source("throwaway_kit") == str(path.resolve())
    check_all("throwaway_kit")
    # a second figure under the same name is refused, naming where the first came from
    clash = tmp_path / "clash.py"
    clash.write_text(THROWAWAY.format(name="throwaway_kit"))
    with pytest.raises(PluginError, match="figure name .throwaway_kit. is already registered by .*throwaway_kit.py"):
        load_plugin(str(clash))
    assert "throwaway_kit" in FIGURES.names()


def test_an_unknown_figure_name_suggests_the_nearest():
    near = FIGURES.names()[0][:-1]
    with pytest.raises(RegistryError, match=f"unknown figure '{near}'; did you mean '{FIGURES.names()[0]}'"):
        FIGURES.get(near)


def test_handmade_study_tables_are_the_reports(tmp_path):
    runs, tables = handmade_study(("none", "learned"), train_resolutions=(16,), seeds=(0, 1, 2))
    assert set(tables) == set(TABLES)
    assert set(tables["comparisons"].kind) == {"encoding", "temperature"}  # no encoding with two policies
    assert set(tables["comparisons"].query("kind == 'encoding'").b) == {"learned (no policy, temp none)",
                                                                          "learned (no policy, temp log)"}
    for key, table in tables.items():
        assert table.equals(summary_tables(runs.results, runs.cells, "learned", curves=runs.curves)[0][key]), key


def test_the_accuracy_figure_takes_intervals_that_round_inside_the_mean():
    # an interval's end computed in another summation order may land 1e-16 inside the mean
    # (the main study had one): the error bars must not go negative
    runs, tables = handmade_study(seeds=(0, 1, 2))
    acc = tables["accuracy"]
    acc["ci_low"] = acc["mean"] + 1e-16
    acc["ci_high"] = acc["mean"] - 1e-16
    fig = FIGURES.get("accuracy_vs_resolution")().draw(runs, tables)
    assert fig is not None
    plt.close(fig)


# --------------------------------------------------------------- fifteen encodings told apart (issue #21)
def test_every_figure_tells_the_fourteen_encodings_and_a_plugin_fifteenth_apart(tmp_path):
    """tab10 gave fourteen encodings ten colours (alibi2d and rope_mixed both blue, cpe and
    sincos2d both green). On a study of the fourteen built-ins and a fifteenth registered from a
    plugin file, every registered figure names each encoding, and no two of its legend's encodings
    share a colour and a marker."""
    from harness.encodings import ENCODINGS
    from harness.figures.conformance import check_tells_encodings_apart
    from harness.figures.plotting import encoding_styles
    from tests.plugins import write_plugin

    builtin = [n for n in ENCODINGS.names() if ENCODINGS.source(n) == "built-in"]
    assert len(builtin) == 14
    assert load_plugin(str(write_plugin(tmp_path, "fifteenth_mod", "fifteenth_pe"))) == ["encoding fifteenth_pe"]
    names = (*builtin, "fifteenth_pe")
    styles = encoding_styles(names)
    assert len(set(styles.values())) == 15 and len({c for c, _ in styles.values()}) == 15  # 20 colours
    assert len(set(encoding_styles([f"e{i:03d}" for i in range(140)]).values())) == 140  # colour x marker
    for figure in FIGURES.names():
        check_tells_encodings_apart(figure, names)
    assert not plt.get_fignums()


class TenColours(Good):
    """What the accuracy figure did before issue #21: tab10 colours, one marker."""

    def draw(self, runs, tables):
        import seaborn as sns
        from matplotlib.lines import Line2D

        encodings = sorted(tables["accuracy"]["encoding"].unique())
        colours = sns.color_palette("tab10", len(encodings))
        fig, ax = plt.subplots()
        for i, (enc, colour) in enumerate(zip(encodings, colours)):
            ax.plot([0, 1], [i, i], color=colour, marker="o")
        ax.legend(handles=[Line2D([], [], color=c, marker="o", label=e) for e, c in zip(encodings, colours)])
        return fig


class DropsOne(Good):
    def draw(self, runs, tables):
        encodings = sorted(tables["accuracy"]["encoding"].unique())[1:]
        fig, ax = plt.subplots()
        ax.bar(encodings, range(len(encodings)))
        return fig


def test_the_kit_catches_repeated_colours_and_a_missing_encoding():
    from harness.figures.conformance import check_tells_encodings_apart

    names = tuple(f"enc{i:02d}" for i in range(12))
    with pytest.raises(AssertionError, match="share the colour .* and the marker 'o'"):
        check_tells_encodings_apart(TenColours, names)
    with pytest.raises(AssertionError, match="does not name enc00"):
        check_tells_encodings_apart(DropsOne, names)
    check_tells_encodings_apart(TenColours, names[:10])  # ten: tab10 had enough
    assert not plt.get_fignums()


# --------------------------------------------------------------- the accuracy figure: one panel per encoding
def _variant_artists(ax):
    """{variant gid: (joining line, marker line)} of one panel of the accuracy figure."""
    found: dict[str, list] = {}
    for line in ax.get_lines():
        gid = line.get_gid() or ""
        if gid.startswith("variant: "):
            found.setdefault(gid[len("variant: "):], []).append(line)
    return {k: (next(ln for ln in v if ln.get_linestyle() not in ("None", "none", "")),
                next(ln for ln in v if ln.get_linestyle() in ("None", "none", ""))) for k, v in found.items()}


def test_the_accuracy_figure_has_a_panel_per_encoding_whose_lines_are_the_seeds_means():
    """Fourteen encodings drew 28 lines in one panel, and they could not be told apart: now one
    panel per encoding and training resolution, and each line is the mean over the seeds that
    trained, recomputed here from the runs (not from the report's table)."""
    import numpy as np

    runs, tables = handmade_study(seeds=(0, 1, 2))
    fig = FIGURES.get("accuracy_vs_resolution")().draw(runs, tables)
    try:
        panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
        assert set(panels) == {f"{e} (trained at {t} px)" for e in ("none", "learned", "rope_axial") for t in (16, 24)}
        res = runs.results
        for title, ax in panels.items():
            enc, train = title.split(" (trained at ")[0], int(title.split(" at ")[1].split()[0])
            artists = _variant_artists(ax)
            mine = res.loc[(res["encoding"] == enc) & (res["train_resolution"] == train)]
            want = {f"{r} | {p} | {t}" for r, p, t in mine[["regime", "policy", "temperature"]].drop_duplicates()
                    .itertuples(index=False)}
            assert set(artists) == want, title
            for key, (line, markers) in artists.items():
                regime, policy, temp = key.split(" | ")
                rows = mine.loc[(mine["regime"] == regime) & (mine["policy"] == policy)
                                & (mine["temperature"] == temp) & mine["trained"]]
                square = rows.loc[rows["test_rows"] == rows["test_cols"]]
                means = square.groupby("test_rows")["test_acc"].mean().sort_index()
                assert np.allclose(line.get_ydata(), means.to_numpy()), (title, key)
                assert len(markers.get_ydata()) == rows["test_resolution"].nunique()  # non-square too
            # within a panel no two variants look alike: colour, line style, marker and its fill
            looks = {(line.get_color(), line.get_linestyle(), markers.get_marker(), str(markers.get_markerfacecolor()))
                     for line, markers in artists.values()}
            assert len(looks) == len(artists), title
    finally:
        plt.close(fig)


def test_the_accuracy_figure_marks_an_encoding_that_never_trained_and_labels_its_legend():
    runs, tables = handmade_study(("learned", "alibi2d", "sincos2d"), train_resolutions=(16,), seeds=(0, 1),
                                  at_chance=("alibi2d",))
    fig = FIGURES.get("accuracy_vs_resolution")().draw(runs, tables)
    try:
        panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
        assert set(panels) == {"learned", "alibi2d", "sincos2d"}  # one training resolution: the name alone
        assert not _variant_artists(panels["alibi2d"]) and _variant_artists(panels["sincos2d"])
        assert any(t.get_text() == "no seed trained" for t in panels["alibi2d"].texts)
        assert not any(t.get_text() == "no seed trained" for t in panels["learned"].texts)
        crosses = [c for c in panels["alibi2d"].collections if len(c.get_offsets())]
        assert crosses  # its runs are there, as crosses at chance
        labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        assert {"regime zoom", "regime canvas", "policy extrapolate, or no policy", "policy interpolate",
                "temperature none", "temperature log", "did not train", "training size", "chance (0.1)"} <= set(labels)
    finally:
        plt.close(fig)


def test_the_accuracy_figure_names_runs_that_had_not_converged_and_labels_chance_once_per_row():
    """A panel's title says how many of its runs were still rising when training ended (the report's
    tables say so; the panels did not), and chance is labelled in the first column only (the text
    hid points in every panel), drawn in all."""
    import pandas as pd

    from harness.report import CURVE_COLUMNS

    runs, _ = handmade_study(seeds=(0, 1))
    rows = [{"encoding": e, "train_resolution": t, "seed": s, "epoch": k, "run_id": f"{e}-r{t}-s{s}",
             "val_acc": 0.1 * k if (e, t) == ("learned", 16) else 0.8}  # learned at 16 px: still rising by 0.1
            for e in ("none", "learned", "rope_axial") for t in (16, 24) for s in (0, 1) for k in range(8)]
    runs.curves = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    tables, _ = summary_tables(runs.results, runs.cells, "learned", curves=runs.curves)
    fig = FIGURES.get("accuracy_vs_resolution")().draw(runs, tables)
    try:
        panels = [ax for ax in fig.axes if ax.get_title()]
        titles = sorted(ax.get_title() for ax in panels)
        assert "learned (trained at 16 px; 2 of 2 runs not converged)" in titles
        assert sum("not converged" in t for t in titles) == 1
        ncols = fig.axes[0].get_gridspec().ncols
        for i, ax in enumerate(panels):
            labelled = any(t.get_text().startswith("chance") for t in ax.texts)
            assert labelled == (i % ncols == 0), (i, ax.get_title())
            assert any(ln.get_linestyle() == ":" and ln.get_ydata()[0] == 0.1 for ln in ax.get_lines())
    finally:
        plt.close(fig)
