"""What people paste into papers, and code a library already writes (issue #13): the accuracy
tables as booktabs LaTeX, every figure as PDF beside its PNG, counts written as numbers (142k,
1.2M), a labelled chance line on the accuracy figures, and the t-tests of scipy.stats."""

from __future__ import annotations

import inspect
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.lines import Line2D
from scipy import stats

from harness import comparisons as cmp
from harness import report
from harness import report_pages as pages
from harness import report_stats as st
from harness.figures import FIGURES
from harness.figures.conformance import handmade_study
from harness.figures.plotting import count_format, save, theme

# ------------------------------------------------------------------ a small synthetic results table
#: per encoding: the accuracy of seeds 0, 1, 2 at the training size (16) and above it (32)
ACC = {"rope_axial": ([0.90, 0.88, 0.86], [0.70, 0.74, 0.72]),
       "my_enc": ([0.92, 0.91, 0.89], [0.60, 0.62, 0.61]),
       "none": ([0.10, 0.10, 0.10], [0.10, 0.10, 0.10])}  # at chance: did not train
PARAMS = {"rope_axial": 142_000, "my_enc": 1_200_000, "none": 141_952}
IPS = {"rope_axial": 950.0, "my_enc": 12_345.0, "none": 1_500_000.0}


def results(encodings=tuple(ACC)) -> pd.DataFrame:
    """The tidy results table of three encodings, three seeds, one regime, sizes 16 (trained) and 32."""
    rows = []
    for enc in encodings:
        for seed in range(3):
            for test, accs in zip((16, 32), ACC[enc]):
                rows.append({"study": "s", "stage": "evaluate", "encoding": enc, "options": "{}", "policy": "na",
                             "temperature": "none", "regime": "zoom", "train_resolution": 16,
                             "test_resolution": test, "seed": seed, "test_acc": accs[seed],
                             "test_loss": 1 - accs[seed], "chance": 0.1,
                             "final_val_acc": 0.1 if enc == "none" else 0.9, "params": PARAMS[enc],
                             "images_per_s": IPS[enc], "device": "cpu", "run_id": f"{enc}-{seed}",
                             "status": "FINISHED"})
    return report.tidy_results(rows)


# ------------------------------------------------------------------ 1. report.tex
def table_body(tex: str) -> list[str]:
    """The rows between \\midrule and \\bottomrule of the first table."""
    return tex.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0].strip().splitlines()


def test_the_accuracy_tables_are_booktabs_latex():
    acc = st.accuracy_summary(results())
    tex = pages.latex_tables(acc, "my_study")
    # one table per regime and training resolution, booktabs rules in order, no vertical rules
    assert tex.count("\\begin{table}") == 1 and tex.count("\\end{table}") == 1
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    assert "\\hline" not in tex and "\\begin{tabular}{lcc}" in tex
    assert "\\label{tab:accuracy-zoom-16}" in tex
    header = tex.split("\\toprule\n", 1)[1].split("\n", 1)[0]
    assert header == "Encoding variant & 16 px & 32 px \\\\"
    # one row per encoding variant, a cell per test size
    body = table_body(tex)
    assert len(body) == acc["variant"].nunique() == 3
    assert all(line.endswith(" \\\\") and line.count(" & ") == 2 for line in body)
    # the caption says what the cell is: mean and [lo, hi]
    caption = re.search(r"\\caption\{(.*)\}\n", tex).group(1)
    assert "[lo, hi]" in caption and "no cell is marked best" in caption
    assert "95\\% Student-t interval" in caption and "zoom regime, trained at 16 px" in caption


def test_latex_marks_no_best_on_test_and_did_not_train_stays():
    # a bold best of a column would be chosen on the images it is scored on (issue #21): none is
    acc = st.accuracy_summary(results())
    tex = pages.latex_tables(acc)
    body = table_body(tex)
    cells = {line.split(" & ")[0]: line.removesuffix(" \\\\").split(" & ")[1:] for line in body}
    # the encoding names escaped, the runs at chance kept as a row of "did not train"
    assert set(cells) == {"my\\_enc (no policy, temp none)", "none (no policy, temp none)",
                          "rope\\_axial (no policy, temp none)"}
    assert cells["none (no policy, temp none)"] == ["did not train (3 runs)"] * 2
    assert "\\textbf" not in tex
    for r in acc.loc[acc["n_seeds"] > 0].itertuples(index=False):
        j = ("16", "32").index(r.test_resolution)
        assert cells[pages.tex_escape(r.variant)][j] == f"{r.mean:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"


def test_latex_escapes_every_special_character():
    assert pages.tex_escape("a_b&c%d$e#f{g}h~i^j\\k") == (
        "a\\_b\\&c\\%d\\$e\\#f\\{g\\}h\\textasciitilde{}i\\textasciicircum{}j\\textbackslash{}k")
    tex = pages.latex_tables(st.accuracy_summary(results()), "my_study")
    text = "\n".join(line for line in tex.splitlines() if not line.startswith("%"))
    assert not re.search(r"(?<!\\)[_&%#]", text.replace(" & ", " ")), "an unescaped special character"
    assert "rope\\_axial" in text and "rope_axial" not in text
    assert pages.latex_tables(st.accuracy_summary(results()).iloc[:0]).count("\\begin{table}") == 0


def test_build_report_writes_report_tex_and_pdfs(tmp_path):
    from tests.test_report import STUDY, log_study

    runs, _ = handmade_study(("none", "learned", "rope_axial"), train_resolutions=(16,), seeds=(0, 1, 2),
                             at_chance=("none",), regimes=("zoom",), temperatures=("none",))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_study(uri, runs)
    page = report.build_report(uri, STUDY, tmp_path / "r")
    tex = (tmp_path / "r" / "report.tex").read_text()
    # the main tables (one row per encoding, zoom below and above 16 px), the gain over none, then every variant's
    assert tex.count("\\begin{table}") == 4 and "\\toprule" in tex and "\\bottomrule" in tex
    assert (tex.index("tab:encodings-zoom-16-above") < tex.index("tab:gain-zoom-16")
            < tex.index("tab:accuracy-zoom-16"))
    assert "tab:encodings-zoom-16-below" in tex
    main = tex.split("tab:encodings-zoom-16-above")[1].split("\\bottomrule")[0]
    assert "Best on test (upper bound)" in main and "none & did not train (3 runs)" in main
    assert re.search(r"rope\\_axial & (inter|extra)polate, temp none & 0\.\d{3} \[", main)
    assert "rope\\_axial (interpolate, temp none)" in tex and "did not train (3 runs)" in tex
    assert "\\textbf{" not in tex
    pngs = sorted(p.stem for p in (tmp_path / "r").glob("*.png"))
    assert pngs and pngs == sorted(p.stem for p in (tmp_path / "r").glob("*.pdf"))
    html = page.read_text()
    assert html.count("data:image/png;base64,") == len(pngs) and ".pdf" not in html
    md = (tmp_path / "r" / "report.md").read_text()
    cost = md.split("## Cost")[1].split("\n## ")[0]
    assert "10k" in cost and "e+" not in cost  # 10,000 parameters, not 1e+04


# ------------------------------------------------------------------ 2. PDF beside PNG
def test_save_writes_a_pdf_beside_the_png(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = save(fig, tmp_path / "x.png")
    assert path == tmp_path / "x.png" and path.read_bytes().startswith(b"\x89PNG")
    assert (tmp_path / "x.pdf").read_bytes().startswith(b"%PDF")
    assert not plt.get_fignums()


def test_every_report_figure_is_written_as_png_and_pdf(tmp_path):
    runs, tables = handmade_study(tuned=True)
    drawn = report._draw_figures(runs, tables, tmp_path)
    assert drawn and not any(d.error for d in drawn)
    assert sorted(d.name for d in drawn) == FIGURES.names()
    for d in drawn:
        assert d.path == tmp_path / f"{d.name}.png" and d.path.read_bytes().startswith(b"\x89PNG")
        assert (tmp_path / f"{d.name}.pdf").read_bytes().startswith(b"%PDF"), d.name
        page = pages._html_figure(d)  # the page still embeds the PNG
        assert "data:image/png;base64," in page and ".pdf" not in page


# ------------------------------------------------------------------ 3. counts as numbers
@pytest.mark.parametrize("value, text", [
    (142_000, "142k"), (141_952, "142k"), (1_200_000, "1.2M"), (1_234_567, "1.23M"), (10_256.0, "10.3k"),
    (-4096, "-4.1k"), (999_950, "1M"), (2.5e9, "2.5G"), (950.0, "950"), (12.5, "12.5"), (256, "256"), (0, "0"),
    (math.nan, "–"), (None, "–"),
])
def test_count_format(value, text):
    assert count_format(value) == text


def test_the_report_tables_write_counts_as_numbers():
    res = results()
    tables, _ = report.summary_tables(res, [], None)
    cost = next(s for s in pages.sections(tables, None) if s.key == "cost")
    md = pages._md_table(cost.table)
    row = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines()[2:]}
    assert "| 142k | 48 | 950 |" in row["rope_axial"]
    assert "| 1.2M | 1.06M | 12.3k |" in row["my_enc"] and "| 142k | 0 | 1.5M |" in row["none"]
    assert "e+" not in md
    assert pages._fmt(142_000.0) == "142k" and pages._fmt(1.42e5) == "142k" and pages._fmt(0.5) == "0.500"
    assert pages._fmt(1.2e-5) == "1.2e-05"  # p-values stay as they are


def test_the_cost_figure_writes_counts_as_numbers():
    theme()
    res = results(("rope_axial", "my_enc"))  # no none: absolute parameters and images / s
    tables, _ = report.summary_tables(res, [], None)
    fig = FIGURES.get("cost")().draw(None, tables)
    try:
        fig.canvas.draw()
        for ax, want in zip(fig.axes, (["1.2M", "142k"], ["12.3k", "950"])):
            assert [t.get_text() for t in ax.texts] == want  # each bar's value, by encoding name
            ticks = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
            assert ticks and not any("e+" in t or "e-" in t for t in ticks), ticks
            assert ax.xaxis.get_offset_text().get_text() == ""
        assert any(t.endswith("M") for t in (t.get_text() for t in fig.axes[0].get_xticklabels()))
    finally:
        plt.close(fig)


def test_the_cost_figure_shows_each_runs_throughput_beside_the_mean():
    """A mean over runs hides how far apart they were (load changes during a study): each run is a
    dot at its images / s over none's mean, recomputed here from the handmade study's own rule."""
    from harness.report.figures.conformance import handmade_study

    theme()
    runs, tables = handmade_study(seeds=(0, 1, 2))  # images / s: 1000 - 50 x (encoding's index) + seed
    fig = FIGURES.get("cost")().draw(runs, tables)
    try:
        dots = sorted(round(float(x), 9) for c in fig.axes[1].collections for x, _ in c.get_offsets())
        none = 1000 + (0 + 1 + 2) / 3
        want = sorted(round((1000 - 50 * e + seed) / none, 9) for e in range(3) for seed in (0, 1, 2)
                      for _train in (16, 24))
        assert dots == want
        bars = [t.get_text() for t in fig.axes[1].texts]
        assert "1.00" in bars  # none's bar, against itself
    finally:
        plt.close(fig)


# ------------------------------------------------------------------ 4. the chance line
@pytest.mark.parametrize("name", ["accuracy_vs_resolution", "validation_curves", "tuning_history"])
def test_accuracy_figures_draw_a_labelled_chance_line(name):
    theme()
    runs, tables = handmade_study(tuned=True, chance=0.125)
    fig = FIGURES.get(name)().draw(runs, tables)
    try:
        axes = [ax for ax in fig.axes if ax.get_ylabel().endswith("accuracy")]
        assert axes
        for ax in axes:
            flat = [ln for ln in ax.get_lines() if isinstance(ln, Line2D) and len(set(ln.get_ydata())) == 1
                    and float(ln.get_ydata()[0]) == 0.125 and list(ln.get_xdata()) == [0, 1]]
            assert flat, f"{name}: no chance line at 0.125"
            assert any("chance" in t.get_text() and "0.125" in t.get_text() for t in ax.texts), f"{name}: no label"
    finally:
        plt.close(fig)
    assert "chance" in FIGURES.get(name).caption


def test_the_accuracy_legend_names_chance():
    theme()
    runs, tables = handmade_study()
    fig = FIGURES.get("accuracy_vs_resolution")().draw(runs, tables)
    try:
        labels = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        assert "chance (0.1)" in labels
    finally:
        plt.close(fig)


# ------------------------------------------------------------------ 5. scipy.stats, no hand-written fallback
def test_no_hand_written_t_distribution_is_left():
    source = inspect.getsource(cmp)
    assert not hasattr(cmp, "_betainc") and "Lentz" not in source and "lgamma" not in source
    assert "except ImportError" not in source


def test_t_p_values_are_scipys():
    for t, df in ((0.0, 1), (0.5, 2), (2.0, 3), (-3.1, 10), (25.0, 4)):
        assert cmp.t_two_sided_p(t, df) == 2 * stats.t.sf(abs(t), df)
    for df in (2, 3, 10):
        assert cmp.t_two_sided_p(stats.t.ppf(0.975, df), df) == pytest.approx(0.05, abs=1e-12)
    assert cmp.t_two_sided_p(math.inf, 4) == 0.0 and math.isnan(cmp.t_two_sided_p(math.nan, 4))


def test_paired_comparisons_and_headline_are_scipys_paired_t_test():
    learned = [0.50, 0.61, 0.72, 0.55]
    rope = [0.62, 0.70, 0.86, 0.60]
    rows = []
    for enc, accs in (("learned", learned), ("rope", rope)):
        for seed, a in enumerate(accs):
            for test in (16, 32):
                rows.append({"study": "s", "stage": "evaluate", "encoding": enc, "options": "{}", "policy": "na",
                             "temperature": "none", "regime": "zoom", "train_resolution": 16,
                             "test_resolution": test, "seed": seed, "test_acc": a - 0.1 * (test == 32),
                             "test_loss": 0.5, "chance": 0.1, "final_val_acc": 0.9, "params": 1, "images_per_s": 1.0,
                             "device": "cpu", "run_id": f"{enc}-{seed}", "status": "FINISHED"})
    res = report.tidy_results(rows)
    above = np.array(rope) - 0.1, np.array(learned) - 0.1
    want = stats.ttest_rel(*above).pvalue
    comp = cmp.paired_comparisons(res, "learned")
    r = comp.loc[(comp["kind"] == "encoding") & (comp["test_resolution"] == "32")].iloc[0]
    assert r["p_value"] == pytest.approx(want, rel=1e-12) and r["n_pairs"] == 4
    assert r["mean_diff"] == pytest.approx(np.mean(above[0] - above[1]))
    head = cmp.headline(res).iloc[0]
    assert head["best"].startswith("rope") and head["p_value"] == pytest.approx(want, rel=1e-12)
    # the headline's interval: scipy's Student-t interval of the mean, cut to [0, 1]
    lo, hi = stats.t.interval(0.95, len(above[0]) - 1, loc=above[0].mean(), scale=stats.sem(above[0]))
    assert (head["ci_low"], head["ci_high"]) == pytest.approx((max(lo, 0.0), min(hi, 1.0)), abs=1e-12)
