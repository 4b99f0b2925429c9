"""The report end to end on the smoke study: every file, one CSV row per run and test
resolution, and the HTML page opened in headless Chromium with every figure loaded."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"
FILES = ["results.csv", "report.md", "report.html", "accuracy_vs_resolution.png", "retention_heatmap.png",
         "cost.png", "validation_curves.png"]
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


def dump_dom(page: Path, tmp: Path) -> str:
    browser = chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs it from the system's packages)")
        pytest.skip("chromium is not installed here (apt-get install chromium)")
    r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
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
    df = pd.read_csv(folder / "results.csv")
    assert len(df) == 6 * 3  # runs x test resolutions
    assert sorted(df.test_resolution.unique()) == [8, 16, 24]
    assert set(df.encoding) == {"none", "rope_axial", "alibi2d"} and (df.status == "FINISHED").all()

    page = folder / "report.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained
    figures = text.count("<img ")
    assert figures >= 4
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

    uri = f"sqlite:///{tmp_path / 'runs' / 'smoke' / 'mlflow.db'}"
    r = harness(tmp_path, "report", "--experiment", "smoke", "--tracking-uri", uri, "--out", str(tmp_path / "byexp"))
    assert r.returncode == 0 and (tmp_path / "byexp" / "report.html").is_file(), r.stderr[-2000:]


def test_no_finished_runs_is_a_clear_error(tmp_path):
    r = harness(tmp_path, "report", "--experiment", "nothing", "--tracking-uri", f"sqlite:///{tmp_path / 'x.db'}")
    assert r.returncode == 2 and "no MLflow tracking store" in r.stderr and "Traceback" not in r.stderr
    from harness.tracking import Tracker

    Tracker(f"sqlite:///{tmp_path / 'y.db'}", "empty")
    r = harness(tmp_path, "report", "--experiment", "empty", "--tracking-uri", f"sqlite:///{tmp_path / 'y.db'}")
    assert r.returncode == 2 and "no finished evaluate runs" in r.stderr, r.stderr
    assert not (tmp_path / "reports").exists()
