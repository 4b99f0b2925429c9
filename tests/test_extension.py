"""One extension pattern: a new encoding, a new dataset and a new report figure, each one new
file written here, appear in the listings, pass their conformance kits, run in a study and
show in its report, with no other edit anywhere."""

from __future__ import annotations

import csv
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ENCODING = '''
"""Throw-away encoding: a learned linear map of the patch position, added to the patch tokens."""
from dataclasses import dataclass

import torch
from torch import nn

from harness.config import option
from harness.encodings import Policy, PositionalEncoding, register_encoding, rescale


@register_encoding("throwaway_pe")
class ThrowawayPE(PositionalEncoding):
    """Throw-away test encoding: a learned linear map of (x, y) added to the patch tokens."""

    @dataclass(frozen=True)
    class Options:
        scale: float = option(1.0, gt=0)
        policy: Policy = "interpolate"

    def __init__(self, dims, **options):
        super().__init__(dims, **options)
        self.proj = nn.Linear(2, dims.dim)

    def build(self, grid, device):
        y, x = grid.yx(device)
        x = rescale(x, grid.cols, grid.train_cols, self.opts.policy)
        y = rescale(y, grid.rows, grid.train_rows, self.opts.policy)
        return self.proj(torch.stack([x, y], 1) * self.opts.scale)  # (N, D)

    def tokens(self, x, grid, state):
        return x + state.to(x.dtype)
'''

DATASET = '''
"""Throw-away dataset: is the blob in the left or the right half of the image?"""
from dataclasses import dataclass

import torch

from harness.config import option
from harness.data import DatasetOptions, ImageDataset, Split, register_dataset


@register_dataset("throwaway_data")
class LeftRight(ImageDataset):
    """Throw-away test dataset: a soft blob in the left or the right half (2 classes)."""

    classes = ["left", "right"]
    num_classes = 2
    in_chans = 3

    @dataclass(frozen=True)
    class Options(DatasetOptions):
        num_train: int = option(64, gt=0)
        num_val: int = option(32, gt=0)
        num_test: int = option(32, gt=0)
        seed: int = 0

    def __init__(self, options):
        self.options = options
        g = torch.Generator().manual_seed(options.seed)
        self.centres, self.labels = {}, {}
        for which, n in (("train", options.num_train), ("val", options.num_val), ("test", options.num_test)):
            labels = (torch.arange(n) % 2)[torch.randperm(n, generator=g)]
            u = torch.rand(n, 2, generator=g)
            self.centres[which] = torch.stack([0.1 + 0.3 * u[:, 0] + 0.5 * labels, 0.1 + 0.8 * u[:, 1]], 1)
            self.labels[which] = labels

    def _load(self, which, size, device):
        cy = (torch.arange(size.rows, dtype=torch.float32) + 0.5) / size.rows
        cx = (torch.arange(size.cols, dtype=torch.float32) + 0.5) / size.cols
        x, y = self.centres[which].T[:, :, None, None]
        blob = torch.exp(-((cx.view(1, 1, -1) - x) ** 2 + (cy.view(1, -1, 1) - y) ** 2) / 0.005)
        return Split(blob[:, None].expand(-1, 3, -1, -1).contiguous().to(device), self.labels[which].to(device))
'''

FIGURE = '''
"""Throw-away report figure: finished runs per encoding."""
import matplotlib.pyplot as plt

from harness.figures import ReportFigure, register_figure


@register_figure("throwaway_fig")
class RunsPerEncoding(ReportFigure):
    """Throw-away test figure."""

    title = "Runs per encoding"
    caption = "How many runs each encoding has in the study."
    order = 99

    def draw(self, runs, tables):
        counts = runs.results.drop_duplicates("run_id").groupby("encoding").size()
        if counts.empty:
            return None
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.bar(list(counts.index), list(counts.values))
        ax.set(ylabel="runs")
        return fig
'''

KITS = """
import sys, tempfile
from harness.registry import load_plugin
from harness import conformance
from harness.data import conformance as data_kit
from harness.figures import conformance as figure_kit
for path in sys.argv[1:]:
    print(load_plugin(path))
conformance.check_all("throwaway_pe")
data_kit.check_all("throwaway_data", tempfile.mkdtemp())
figure_kit.check_all("throwaway_fig")
print("kits passed")
"""


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


@pytest.mark.slow
def test_one_new_file_each_reaches_listing_kits_study_and_report(tmp_path):
    files = {}
    for kind, text in (("encoding", ENCODING), ("dataset", DATASET), ("figure", FIGURE)):
        files[kind] = tmp_path / f"my_{kind}.py"
        files[kind].write_text(textwrap.dedent(text))

    # the listings
    for command, kind, name in (("encodings", "encoding", "throwaway_pe"), ("datasets", "dataset", "throwaway_data"),
                                ("figures", "figure", "throwaway_fig")):
        r = harness(command, "--plugin", str(files[kind]), cwd=tmp_path)
        assert r.returncode == 0 and not r.stderr.strip(), r.stderr
        row = next(line for line in r.stdout.splitlines() if line.startswith(name + " "))
        assert str(files[kind]) in row or command == "encodings", row

    # the conformance kits
    r = subprocess.run([sys.executable, "-c", KITS, *map(str, files.values())], capture_output=True, text=True,
                       cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "['encoding throwaway_pe']" in r.stdout and "['dataset throwaway_data']" in r.stdout
    assert "['figure throwaway_fig']" in r.stdout and "kits passed" in r.stdout

    # a study that names all three in its plugins, and its report
    spec = tmp_path / "ext.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: ext
        plugins: [{files['encoding']}, {files['dataset']}, {files['figure']}]
        dataset: {{name: throwaway_data, num_train: 64, num_val: 32, num_test: 32}}
        model: tiny
        train: {{epochs: 1, batch_size: 32, device: cpu}}
        encodings: [none, throwaway_pe]
        train_resolutions: [16]
        test_resolutions: [8, 16]
        seeds: [0]
        """))
    r = harness("run", str(spec), "--set", f"output={tmp_path / 'runs'}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = tmp_path / "reports" / "ext"
    assert (report / "throwaway_fig.png").stat().st_size > 0
    page = (report / "report.html").read_text()
    assert 'id="throwaway_fig"' in page and "Runs per encoding" in page
    with open(report / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["encoding"] for r in rows} == {"none", "throwaway_pe"}
    assert {(r["encoding"], r["test_resolution"]) for r in rows if r["status"] == "FINISHED"} == {
        (e, t) for e in ("none", "throwaway_pe") for t in ("8", "16")}
