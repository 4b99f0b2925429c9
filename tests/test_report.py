"""The report end to end on the smoke study: every file, one CSV row per run and test
resolution, and the HTML page opened in headless Chromium with every figure loaded. Then
reports of a handmade study logged to MLflow in code: what the report reads back, its
figures (every registered one, a throw-away plugin, the documentation's example, a broken one)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from harness import schema
from harness.figures import FIGURES
from harness.figures.conformance import handmade_study
from harness.registry import load_plugin
from harness.comparisons import GAIN_COLUMNS
from harness.report import RESULT_COLUMNS, StudyRuns, build_report, results_table, summary_tables
from harness.schema import Cell
from harness.tracking import Tracker

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"
EXAMPLE = ROOT / "examples" / "my_figure.py"
FILES = ["results.csv", "report.md", "report.html"]
CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images', imgs.length + '/' + ok);
});
</script></body>"""


def harness(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def chromium() -> str | None:
    """Headless Chromium; the test set-up installs Debian's package when it is missing and we are root."""
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, env=env, timeout=900)
        found = shutil.which("chromium")
    return found


def require_chromium() -> str:
    """:func:`chromium`, else the test fails under CI (``.ci/run`` installs it) and is skipped elsewhere."""
    found = chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it from the system's packages)")
        pytest.skip("chromium is not installed here (apt-get install chromium)")
    return found


def dump_dom(page: Path, tmp: Path) -> str:
    r = subprocess.run([require_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp / 'chrome'}", "--virtual-time-budget=10000", "--dump-dom",
                        page.as_uri()], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


@pytest.mark.slow
def test_report_of_the_smoke_study(tmp_path):
    r = harness(tmp_path, "run", str(SMOKE), "--set", f"output={tmp_path / 'runs'}")
    assert r.returncode == 0, r.stderr[-3000:]
    folder = tmp_path / "reports" / "smoke"
    for name in FILES:
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name
    # one PNG per built-in figure that has something to draw for this study (no tune stage)
    uri = f"sqlite:///{tmp_path / 'runs' / 'smoke' / 'mlflow.db'}"
    drawn = drawable(results_table(Tracker(uri, "smoke", create=False), "smoke"), builtin_only=True)
    assert len(drawn) >= 4
    assert {p.stem for p in folder.glob("*.png")} == set(drawn)
    df = pd.read_csv(folder / "results.csv")
    # one row per run, regime, policy, temperature and test size: every variant of every run at every size
    assert df.run_id.nunique() == 6 and len(df) % 3 == 0
    per_variant = df.groupby(["run_id", "regime", "policy", "temperature"]).test_resolution.apply(sorted)
    assert all(sizes == [8, 16, 24] for sizes in per_variant)
    assert {"chance", "trained", "retention", "final_val_acc", "variant"} <= set(df.columns)
    assert set(df.encoding) == {"none", "rope_axial", "alibi2d"} and (df.status == "FINISHED").all()

    page = folder / "report.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained
    figures = text.count("<img ")
    assert figures >= 4 and figures == len(drawn)
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", CHECK))
    dom = dump_dom(probe, tmp_path)
    assert f'data-images="{figures}/{figures}"' in dom, "an image did not load"
    main = re.search(r'<table class="main">.*?</table>', dom, re.S)
    assert main and all(enc in main.group(0) for enc in ("none", "rope_axial", "alibi2d"))
    assert "Provenance" in dom and "git commit" in dom

    # the same report from the experiment alone, with a gap: a spec that asks for a third seed
    r = harness(tmp_path, "report", str(SMOKE), "--set", f"output={tmp_path / 'runs'}", "--set", "seeds=[0, 1, 2]",
                "--out", str(tmp_path / "partial"))
    assert r.returncode == 0, r.stderr[-3000:]
    md = (tmp_path / "partial" / "report.md").read_text()
    gaps = md.split("Cells of the study that are missing or failed")[1]
    assert gaps.count("| missing |") == 3  # seed 2 of each encoding

    r = harness(tmp_path, "report", "--experiment", "smoke", "--tracking-uri", uri, "--out", str(tmp_path / "byexp"))
    assert r.returncode == 0 and (tmp_path / "byexp" / "report.html").is_file(), r.stderr[-2000:]

    # a figure plugin named in the spec's plugins: joins the report, with no other edit
    r = harness(tmp_path, "report", str(SMOKE), "--set", f"output={tmp_path / 'runs'}", "--set",
                f"plugins=[{EXAMPLE}]", "--out", str(tmp_path / "plugin"))
    assert r.returncode == 0, r.stderr[-3000:]
    # the example draws when some cell has two seeds that trained (the smoke recipe may train none)
    spread = bool((df[df.trained].groupby(["regime", "variant", "test_resolution"]).seed.nunique() > 1).any())
    assert {p.stem for p in (tmp_path / "plugin").glob("*.png")} == {*drawn, *["seed_spread"] * int(spread)}
    assert ('<figure id="seed_spread">' in (tmp_path / "plugin" / "report.html").read_text()) == spread


def test_no_finished_runs_is_a_clear_error(tmp_path):
    r = harness(tmp_path, "report", "--experiment", "nothing", "--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}")
    assert r.returncode == 2 and "no MLflow tracking store" in r.stderr and "Traceback" not in r.stderr
    from harness.tracking import Tracker

    Tracker(f"sqlite:///{tmp_path / 'y.db'}", "empty")
    r = harness(tmp_path, "report", "--experiment", "empty", "--tracking-uri", f"sqlite:///{tmp_path / 'y.db'}")
    assert r.returncode == 2 and "no finished evaluate runs" in r.stderr, r.stderr
    assert not (tmp_path / "reports").exists()


# ------------------------------------------------------------------ a handmade study in MLflow
STUDY = "handmade"
PLUGIN = '''
import matplotlib.pyplot as plt
from harness.figures import ReportFigure, register_figure


@register_figure("throwaway_report")
class Throwaway(ReportFigure):
    title = "Throw-away <figure>"
    caption = "Runs per encoding & seed (a test plugin)."
    order = 1  # first on the page

    def draw(self, runs, tables):
        fig, ax = plt.subplots(figsize=(4, 3))
        runs.results.groupby("encoding").run_id.nunique().plot.bar(ax=ax)
        return fig
'''


def drawable(runs: StudyRuns, *, builtin_only: bool = False) -> list[str]:
    """The registered figures that draw something for these runs, in page order."""
    tables, _ = summary_tables(runs.results, runs.cells, None)
    names = []
    for name, cls in sorted(FIGURES.items(), key=lambda item: (item[1].order, item[0])):
        if builtin_only and FIGURES.source(name) != "built-in":
            continue
        fig = cls().draw(runs, tables)
        if fig is not None:
            names.append(name)
            plt.close(fig)
    return names


def log_study(uri: str, runs: StudyRuns, *, with_spec: bool = True, failed: Cell | None = None,
              old_keys: bool = False) -> None:
    """Log a handmade study to MLflow the way a study does, through the schema's names (with
    ``old_keys``, test metrics as runs logged them before evaluation variants existed, and before
    the half metrics and the default policy)."""
    tracker = Tracker(uri, STUDY)
    parent = tracker.parent_run(STUDY, schema.EVALUATE)
    config = {"encoding": {"options": {}}, "train": {"lr": 0.001}}
    for _, g in runs.results.groupby("run_id", sort=True):
        first = g.iloc[0]
        cell = Cell(first.encoding, int(first.train_resolution), int(first.seed))
        extra = {} if old_keys else {schema.P_DEFAULT_POLICY: first.default_policy}
        run_id = tracker.child_run(parent, cell.tag, study=STUDY, stage=schema.EVALUATE,
                                   params={**cell.params(), schema.P_CONFIG: config, **extra},
                                   tags={schema.T_CELL: cell.key, schema.T_GIT_COMMIT: "abc123",
                                         schema.T_VERSIONS: json.dumps({"torch": "9.9"})})
        if with_spec:
            tracker.log_text(run_id, json.dumps(runs.spec), schema.SPEC_ARTIFACT)
        curve = runs.curves[(runs.curves.encoding == cell.encoding) & (runs.curves.seed == cell.seed)
                            & (runs.curves.train_resolution == cell.train_resolution)]
        for epoch, acc in zip(curve.epoch, curve.val_acc):
            tracker.log_metrics(run_id, {schema.VAL_ACC: acc}, step=int(epoch))
        final = {schema.PARAM_COUNT: first.params, schema.IMAGES_PER_S: first.images_per_s,
                 schema.CHANCE: first.chance}
        if not old_keys and not pd.isna(first.val_images):
            final[schema.VAL_IMAGES] = first.val_images
        for r in g.itertuples(index=False):
            variant = schema.Variant(r.regime, r.policy, r.temperature)
            if old_keys:  # as runs logged before variants existed: test/acc/r32
                final.update({f"test/acc/r{r.test_resolution}": r.test_acc,
                              f"test/loss/r{r.test_resolution}": r.test_loss})
            else:
                final.update({schema.eval_metric("acc", variant, r.test_resolution): r.test_acc,
                              schema.eval_metric("loss", variant, r.test_resolution): r.test_loss,
                              schema.eval_metric("acc_a", variant, r.test_resolution): r.test_acc_a,
                              schema.eval_metric("acc_b", variant, r.test_resolution): r.test_acc_b})
        tracker.log_metrics(run_id, final, step=3)
        tracker.set_tags(run_id, {schema.T_DEVICE: first.device})
        tracker.end(run_id)
    if failed is not None:
        run_id = tracker.child_run(parent, failed.tag, study=STUDY, stage=schema.EVALUATE, params=failed.params(),
                                   tags={schema.T_CELL: failed.key, schema.T_GIT_COMMIT: "abc123"})
        tracker.end(run_id, "FAILED")
    tune = tracker.parent_run(STUDY, schema.TUNE)
    space = {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True},
             "train.weight_decay": {"low": 0.0, "high": 0.1, "log": False}}
    for t in runs.tuning.itertuples(index=False):
        run_id = tracker.child_run(tune, f"{t.encoding}_r{t.train_resolution}_t{t.trial}", study=STUDY,
                                   stage=schema.TUNE, params={
                                       schema.P_ENCODING: t.encoding, schema.P_TRAIN_RESOLUTION: t.train_resolution,
                                       schema.P_CONFIG: {"tune": {"space": space},
                                                         "train": {"lr": t[5], "weight_decay": t[6]}}},
                                   tags={schema.T_TRIAL_NUMBER: str(t.trial)})
        tracker.log_metrics(run_id, {schema.VAL_ACC: t.val_acc}, step=0)
        if t.state == "pruned":
            tracker.set_tags(run_id, {schema.T_PRUNED_AT: "0"})
        tracker.end(run_id)


@pytest.fixture(scope="module")
def handmade():
    """(runs, tables) of a small tuned study: four encodings (two without a policy option), one
    training resolution, three seeds, two regimes, two policies, two temperatures, five test
    sizes (one not square); ``none`` is at chance: its runs did not train (three encodings that
    trained: enough to rank them)."""
    return handmade_study(("alibi2d", "none", "learned", "rope_axial"), train_resolutions=(16,), seeds=(0, 1, 2),
                          tuned=True, at_chance=("none",))


@pytest.fixture(scope="module")
def logged(tmp_path_factory, handmade):
    """The MLflow URI where the handmade study is logged, with its spec and one failed run."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    log_study(uri, handmade[0], failed=Cell("learned", 16, 9))
    return uri


def figure_ids(page: Path) -> list[str]:
    return re.findall(r'<figure id="(\w+)"', page.read_text())


def test_the_report_reads_back_what_was_logged(logged, handmade, tmp_path):
    runs = handmade[0]
    back = results_table(Tracker(logged, STUDY, create=False), STUDY)
    assert list(back.results.columns) == RESULT_COLUMNS
    keys = ["encoding", "train_resolution", "seed", "regime", "test_rows", "test_cols", "policy", "temperature"]
    finished = back.results[back.results.status == "FINISHED"].sort_values(keys).reset_index(drop=True)
    want = runs.results.sort_values(keys).reset_index(drop=True)
    assert len(finished) == len(want) and finished.run_id.nunique() == 12
    for col in ["test_acc", "test_loss", "params", "images_per_s", "chance", "final_val_acc", "val_images",
                "retention"]:
        assert finished[col].astype(float).tolist() == pytest.approx(want[col].astype(float).tolist(),
                                                                     nan_ok=True), col
    for col in ["encoding", "variant", "regime", "policy", "temperature", "test_resolution", "trained", "device"]:
        assert finished[col].tolist() == want[col].tolist(), col
    assert finished[keys[1:3]].astype(int).values.tolist() == want[keys[1:3]].astype(int).values.tolist()
    assert set(finished.options) == {"{}"}
    # what was logged: several regimes, policies (na for an encoding without the option), temperatures, a
    # non-square size; chance from the data; the runs at chance flagged, with no retention (not 1.0)
    assert set(finished.regime) == {"zoom", "canvas"} and set(finished.temperature) == {"none", "log"}
    assert set(finished.policy) == {"na", "extrapolate", "interpolate"} and "24x48" in set(finished.test_resolution)
    assert (finished.chance == 0.1).all()
    untrained = finished[~finished.trained]
    assert set(untrained.encoding) == {"none"} and untrained.seed.nunique() == 3
    assert untrained.retention.isna().all()
    assert (finished[finished.trained & (finished.test_resolution == "16")].retention == 1.0).all()
    assert sorted(back.cells) == sorted([*runs.cells, Cell("learned", 16, 9)])
    curves = ["encoding", "train_resolution", "seed", "epoch"]
    assert back.curves.sort_values(curves).val_acc.tolist() == pytest.approx(
        runs.curves.sort_values(curves).val_acc.tolist())
    tune = ["encoding", "train_resolution", "trial"]
    got = back.tuning.sort_values(tune).reset_index(drop=True)
    want = runs.tuning.sort_values(tune).reset_index(drop=True)
    assert got[tune].values.tolist() == want[tune].values.tolist() and got.state.tolist() == want.state.tolist()
    for col in ["val_acc", "train.lr", "train.weight_decay"]:
        assert got[col].tolist() == pytest.approx(want[col].tolist()), col
    assert back.spec == runs.spec
    assert back.provenance["git commit"] == "abc123" and back.provenance["version of torch"] == "9.9"

    page = build_report(logged, STUDY, tmp_path / "r")
    # the study's cells come from its spec: the failed seed-9 run is not a cell of it
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| failed |" not in md.split("missing or failed")[1].split("##")[0]
    # a tuned study with seeds has something for every registered figure: all of them, in page
    # order, each with its file and caption
    expected = drawable(back)
    assert figure_ids(page) == expected and sorted(expected) == FIGURES.names()
    text = page.read_text()
    for name in expected:
        cls = FIGURES.get(name)
        assert (tmp_path / "r" / f"{name}.png").stat().st_size > 0
        assert f"{cls.caption}" in text.replace("&#x27;", "'") and f"({name}.png)" in md
    assert "http://" not in text and "https://" not in text
    assert not plt.get_fignums()


def test_without_a_spec_the_cells_are_those_of_the_runs(tmp_path, handmade):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_study(uri, handmade[0], with_spec=False, failed=Cell("learned", 16, 9))
    build_report(uri, STUDY, tmp_path / "r")
    gaps = (tmp_path / "r" / "report.md").read_text().split("missing or failed")[1].split("##")[0]
    assert gaps.count("| failed |") == 1 and "| learned | 16 | 9 | failed |" in gaps


def test_the_report_reads_honestly(logged, tmp_path):
    build_report(logged, STUDY, tmp_path / "r")
    out = tmp_path / "r"
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    csv = pd.read_csv(out / "results.csv")
    # the runs at chance: flagged, their retention empty (not 1.0), listed, and in no mean
    none = csv[csv.encoding == "none"]
    assert (~none.trained).all() and none.retention.isna().all()
    assert csv[csv.trained].retention.notna().any()
    assert set(csv.columns) >= {"regime", "test_resolution", "policy", "temperature", "chance"}
    untrained = md.split("## Runs that did not train")[1].split("\n## ")[0]
    assert untrained.count("| none | 16 |") == 3
    for regime in ("zoom", "canvas"):
        title = f"## Test accuracy per encoding variant: {regime} regime, trained at 16 px"
        pivot = md.split(title)[1].split("\n## ")[0]
        # every variant, and no cell marked best: the best of a column is chosen on the images it scores
        assert "| encoding variant | " in pivot and "24x48 px" in pivot and "**" not in pivot
        assert "| none (all 2 variants) | did not train (3 runs) |" in pivot  # one row, not one per variant
        assert "none (no policy, temp log)" not in pivot
        assert "95% Student-t interval of the mean over seeds" in pivot
        retention = md.split(f"## Retention: {regime} regime, trained at 16 px")[1].split("\n## ")[0]
        assert re.search(r"\| none \(no policy, temp none\) \| – \| – \|", retention)
    # the main tables come first: one row per encoding, its selected variant, its default one, the upper bound
    for regime, side in (("zoom", "above"), ("zoom", "below"), ("canvas", "above")):
        title = f"## Encodings: {regime} regime, {side} the training size (16 px)"
        assert md.index(title) < md.index("## Test accuracy per encoding variant")
        main = md.split(title)[1].split("\n## ")[0]
        rows = [line for line in main.splitlines() if line.startswith("| ") and not line.startswith("| encoding")]
        assert [r.split(" | ")[0] for r in rows] == ["| alibi2d", "| learned", "| none", "| rope_axial"]
        assert "| none | did not train (3 runs) |" in main
        assert "| selected variant |" in main and "| default variant |" in main
        assert "best on test (optimistic upper bound)" in main
    assert "## Canvas: below" not in md and "canvas regime, below" not in md  # a canvas only grows
    assert "## Ranking of the encodings (exploratory)" in md
    # the headline names variants (encoding, policy, temperature) with the margin and the verdict
    head = md.split("## ")[0]
    assert "**No primary analysis declared**" in head and "**Selection**: each encoding's variant" in head
    assert re.search(r"\*\*Zoom\*\* regime, above the training resolution \(16 px\): best \*\*rope_axial "
                     r"\((interpolate|extrapolate), temp (log|none)\)\*\*", head)
    # the runner-up is the best variant of another encoding (rope_axial's other variants are
    # closer); the handmade accuracies differ by a constant per encoding: nothing to test
    assert re.search(r"ahead of the best other encoding, learned \(no policy, temp (log|none)\) \([0-9.]+\), "
                     r"by [0-9.]+: not tested \(no variance in the differences\)", head)
    assert "3 run(s) did not train" in head
    assert "**Control**: `none` (no position signal), trained at 16 px, stayed at chance in all 3 run(s)" in head
    assert "<p><strong>Control</strong>: <code>none</code> (no position signal)" in page  # Markdown's marks, as HTML
    assert "95% Student-t interval of the mean over seeds" in head
    # the main tables are the page's main tables; the full ones fold under them
    assert page.count('<table class="main">') == 3 and "<td><strong>" not in page
    assert '<details id="accuracy"><summary>Test accuracy per encoding variant' in page
    assert page.index('<table class="main">') < page.index('<details id="accuracy">')
    assert "measured during the study (device: cpu)" in md and "not a benchmark" in md
    comparisons = pd.read_csv(out / "comparisons.csv")
    assert set(comparisons.kind) == {"policy", "temperature", "encoding"}
    # each encoding against the baseline under their selected variants (learned has no policy)
    assert all(b.startswith("learned (") for b in comparisons[comparisons.kind == "encoding"].b)
    assert set(comparisons[comparisons.kind == "encoding"].a.str.split(" ").str[0]) == {"alibi2d", "rope_axial"}


def test_the_report_shows_the_gain_over_none_and_which_runs_had_not_converged(logged, tmp_path):
    build_report(logged, STUDY, tmp_path / "r")
    out = tmp_path / "r"
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    # none is at chance (0.1) in the handmade study: the gain is each encoding's accuracy over 0.1
    gain = pd.read_csv(out / "gain.csv")
    assert list(gain.columns) == GAIN_COLUMNS
    rope = gain[(gain.encoding == "rope_axial") & (gain.regime == "zoom") & (gain.test_resolution == "16")]
    assert rope.n_pairs.tolist() == [3] and rope.gain.tolist() == pytest.approx((rope.encoding_acc - 0.1).tolist())
    for regime in ("zoom", "canvas"):
        section = md.split(f"## What position adds: gain over `none`: {regime} regime, trained at 16 px")[1]
        section = section.split("\n## ")[0]
        (control,) = [line for line in section.splitlines() if line.startswith("| none (control): its accuracy |")]
        assert "| 0.100 |" in control and control.endswith("| 0/3 |") and "| runs that trained |" in section
        assert re.search(r"\| rope_axial \| \+0\.\d{3} \[\+0\.\d{3}, \+0\.\d{3}\] \|", section)
    assert md.index("## Encodings: zoom regime, above") < md.index("## What position adds") < md.index(
        "## Ranking of the encodings")
    assert '<h2 id="gain-zoom-16">What position adds: gain over <code>none</code>: zoom regime' in page
    # three epochs: too few to tell (two windows of two); the validation size read back from the run
    conv = pd.read_csv(out / "convergence.csv")
    assert len(conv) == 12 and set(conv.status) == {"cannot tell"} and set(conv.n_val) == {1000}
    main = md.split("## Encodings: zoom regime, above the training size (16 px)")[1].split("\n## ")[0]
    assert "| had not converged |" in main and "cannot tell (3 runs)" in main
    assert "## Runs that had not converged" in md and "0 of 12 finished run(s) had not converged; 12 cannot tell" in md
    assert "**Budget**" not in md


def test_runs_logged_before_variants_read_as_the_default_policy(tmp_path):
    runs, _ = handmade_study(("learned", "rope_axial"), train_resolutions=(16,), seeds=(0, 1, 2), regimes=("zoom",),
                             policies=("interpolate",), temperatures=("none",), test_resolutions=(8, 16, 24))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_study(uri, runs, old_keys=True)
    back = results_table(Tracker(uri, STUDY, create=False), STUDY).results
    assert len(back) == len(runs.results) and set(back.regime) == {"zoom"} and set(back.policy) == {"default"}
    assert "rope_axial (default policy, temp none)" in set(back.variant)
    page = build_report(uri, STUDY, tmp_path / "r")
    assert "rope_axial (default policy, temp none)" in page.read_text()


def test_a_figure_plugin_appears_in_the_report(logged, tmp_path):
    plugin = tmp_path / "throwaway_report.py"
    plugin.write_text(PLUGIN)
    assert load_plugin(str(plugin)) == ["figure throwaway_report"]
    page = build_report(logged, STUDY, tmp_path / "r")
    assert figure_ids(page)[0] == "throwaway_report"  # order = 1: before the built-ins
    assert (tmp_path / "r" / "throwaway_report.png").stat().st_size > 0
    text = page.read_text()
    assert "<strong>Throw-away &lt;figure&gt;.</strong> Runs per encoding &amp; seed (a test plugin)." in text


def test_the_docs_show_the_example_figure():
    page = (ROOT / "docs" / "adding-a-figure.md").read_text(encoding="utf-8")
    assert page.startswith("# Adding a report figure")
    section = page.split("# Adding a report figure", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block and block.group(1) == EXAMPLE.read_text(), "docs/adding-a-figure.md's example differs from examples/my_figure.py"


def test_the_example_figure_runs_in_a_report(logged, tmp_path):
    assert load_plugin(str(EXAMPLE)) == ["figure seed_spread"]
    page = build_report(logged, STUDY, tmp_path / "r")
    assert "seed_spread" in figure_ids(page) and (tmp_path / "r" / "seed_spread.png").stat().st_size > 0


def test_a_broken_figure_is_named_and_the_others_stay(logged, tmp_path, monkeypatch):
    name = FIGURES.names()[0]
    cls = FIGURES.get(name)

    def broken(self, runs, tables):
        plt.figure()  # opened, then the figure fails
        raise KeyError("no_such_column")

    monkeypatch.setattr(cls, "draw", broken)
    with pytest.warns(UserWarning, match=f"report figure '{name}' \\(built-in\\) could not be drawn: KeyError"):
        page = build_report(logged, STUDY, tmp_path / "r")
    text = page.read_text()
    assert f'<figure id="{name}" class="failed">' in text
    assert "Could not be drawn: KeyError: &#x27;no_such_column" in text
    assert not (tmp_path / "r" / f"{name}.png").exists()
    assert len(figure_ids(page)) > 1 and not plt.get_fignums()


def test_a_report_that_cannot_be_written_leaves_the_previous_one(logged, tmp_path, monkeypatch):
    """A full disk or a Ctrl-C half-way through a report: the previous report is left byte for
    byte (the new files are written beside it, then moved over it), no staging folder is left, and
    the full disk is one line naming the folder."""
    import errno

    import harness.report as report_mod
    from harness.report import ReportError

    out = tmp_path / "r"
    build_report(logged, STUDY, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"report.html", "report.md", "results.csv"} <= set(before)

    def full(*args, **kwargs):  # the disk fills while the page is written, after the tables and figures
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report_mod.pages, "html_page", full)
    with pytest.raises(ReportError) as info:
        build_report(logged, STUDY, out)
    assert str(info.value) == (f"no space left on device in {out} (writing the report); the previous report "
                               "there, if any, is left as it was")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    monkeypatch.setattr(report_mod.pages, "html_page", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        build_report(logged, STUDY, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a folder the failed call created is not left behind
    with pytest.raises(KeyboardInterrupt):
        build_report(logged, STUDY, tmp_path / "new" / "r")
    assert not (tmp_path / "new" / "r").exists()


def test_report_past_a_file_size_limit_is_one_line_and_writes_nothing(logged, tmp_path):
    """A real failed write (``ulimit -f``: EFBIG once a figure's PNG passes 16 kB): `harness report`
    exits 2 with one line naming the folder, and leaves no file (a figure's failed write is the
    disk's fault, not a figure that "could not be drawn")."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 << 10, 16 << 10))

    out = tmp_path / "r"
    r = subprocess.run([sys.executable, "-m", "harness", "report", "--experiment", STUDY, "--tracking-uri", logged,
                        "--out", str(out)], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       preexec_fn=limit)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip() == (f"error: file too large in {out} (writing the report); the previous report there, "
                                "if any, is left as it was"), r.stderr[-2000:]
    assert not out.exists()


def test_the_report_answers_the_declared_question(tmp_path):
    """Issue #21: a study with an `analysis:` section. Per regime and side: each encoding's selected
    variant and accuracy, its default variant, the labelled upper bound; the primary family's tests
    with P(improvement), its interval and the seeds 80% power needs, in the headline and a table;
    the ranking and its critical-difference diagram."""
    import numpy as np

    from harness.comparisons import holm

    runs, _ = handmade_study(("alibi2d", "none", "learned", "rope_axial"), train_resolutions=(16,), seeds=(0, 1, 2),
                             at_chance=("none",))
    rng = np.random.default_rng(4)  # seeds that disagree a little, so that every test has a spread
    res = runs.results.copy()
    noise = rng.normal(0.0, 0.02, size=(len(res), 2)) * res["trained"].to_numpy()[:, None]
    res["test_acc_a"] = (res["test_acc_a"] + noise[:, 0]).clip(0, 1)
    res["test_acc_b"] = (res["test_acc_b"] + noise[:, 1]).clip(0, 1)
    res["test_acc"] = (res["test_acc_a"] + res["test_acc_b"]) / 2
    runs.results = res
    runs.spec = {**runs.spec, "analysis": {"endpoint": {"sides": ["above"]}, "primary": ["rope_axial vs learned"]}}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_study(uri, runs)
    build_report(uri, STUDY, tmp_path / "r")
    out = tmp_path / "r"
    md = (out / "report.md").read_text()
    head = md.split("\n## ")[0]
    assert "**Primary analysis** (declared in the spec): rope_axial vs learned" in head
    for regime in ("Zoom", "Canvas"):
        line = next(x for x in head.splitlines() if x.startswith(f"**{regime}** regime, above the training size"))
        assert re.search(r"\*\*rope_axial \([a-z]+, temp (none|log)\)\*\* vs \*\*learned \(no policy, temp "
                         r"(none|log)\)\*\*: difference [+-]0\.\d{3} \[[+-]0\.\d{3}, [+-]0\.\d{3}\] over 3 seeds; "
                         r"P\(rope_axial > learned\) = \d\.\d\d \[\d\.\d\d, \d\.\d\d\]; paired t-test p = ", line), line
        # before and after the family's correction (two tested comparisons: alpha / 2)
        assert re.search(r"80% power at this effect and spread needs (\d+ seeds|more than 30) at alpha 0\.05, "
                         r"(\d+ seeds|more than 30) at 0\.05 / 2 \(Holm's first step\) \(this study has 3\)\.$",
                         line), line
    assert "**Leaders** (exploratory" in head
    primary = pd.read_csv(out / "primary.csv")
    assert len(primary) == 2 and set(primary.regime) == {"zoom", "canvas"} and set(primary.side) == {"above"}
    assert primary.p_holm.tolist() == pytest.approx(holm(primary.p_value))
    assert "## Primary analysis: the declared comparisons" in md and "P(A > B) [interval]" in md
    section = md.split("## Primary analysis: the declared comparisons")[1].split("\n## ")[0]
    assert section.count("| rope_axial (") == 2
    # per regime and side: the selected variant, the default variant, the upper bound, labelled
    selection = pd.read_csv(out / "selection.csv")
    assert {"selected", "default", "upper", "chosen_a", "chosen_b"} <= set(selection.columns)
    main = md.split("## Encodings: zoom regime, above the training size (16 px)")[1].split("\n## ")[0]
    assert "| selected variant |" in main and "| default variant |" in main
    assert "| best on test (optimistic upper bound) |" in main
    # the ranking, and its diagram among the figures
    assert "## Ranking of the encodings (exploratory)" in md and "Friedman p" in md
    assert (out / "critical_difference.png").stat().st_size > 0 and "(critical_difference.png)" in md
