"""Test plugins: one small encoding, written to files outside the package and registered
three ways (file path, ``module:attr``, entry point)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from harness.encodings import ENCODINGS, load_plugin

TEMPLATE = '''
"""A test plugin: a learned linear map of the normalised patch position, added to the tokens."""
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from harness.encodings import PositionalEncoding, register_encoding, rescale


@register_encoding("{name}")
class {cls}(PositionalEncoding):
    """Test plugin: a learned linear function of the patch position added to the patch tokens."""

    @dataclass(frozen=True)
    class Options:
        scale: float = 1.0
        policy: Literal["interpolate", "extrapolate"] = "interpolate"

    def __init__(self, dims, **options):
        super().__init__(dims, **options)
        self.proj = nn.Linear(2, dims.dim)

    def build(self, grid, device):
        y, x = grid.yx(device)
        p = self.opts.policy
        x = rescale(x, grid.cols, grid.train_cols, p) / max(grid.train_cols - 1, 1)
        y = rescale(y, grid.rows, grid.train_rows, p) / max(grid.train_rows - 1, 1)
        return self.proj(torch.stack([x, y], 1) * self.opts.scale)  # (N, D)

    def tokens(self, x, grid, state):
        return x + state.to(x.dtype)
'''

NAMES = {"path": "plugin_by_path", "module": "plugin_by_module", "entry_point": "plugin_by_entry_point"}


def write_plugin(folder: Path, module: str, name: str) -> Path:
    path = folder / f"{module}.py"
    path.write_text(TEMPLATE.format(name=name, cls="".join(w.title() for w in name.split("_"))))
    return path


def write_dist(site: Path, dist: str, entry_points: dict[str, str]) -> None:
    """A minimal installed distribution (dist-info) declaring entry points in harness.encodings."""
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "\n".join(f"{k} = {v}" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[harness.encodings]\n{lines}\n")


def make_plugin_site() -> tuple[Path, Path]:
    """A folder with the three plugins (and a dist-info for the entry point); returns
    (site folder, path of the file plugin)."""
    site = Path(tempfile.mkdtemp(prefix="harness-plugins-"))
    (site / "loose").mkdir()  # not on sys.path: reachable only by its file path
    file_plugin = write_plugin(site / "loose", "my_file_plugin", NAMES["path"])
    write_plugin(site, "my_module_plugin", NAMES["module"])
    write_plugin(site, "my_ep_plugin", NAMES["entry_point"])
    write_dist(site, "my-ep-plugin", {NAMES["entry_point"]: "my_ep_plugin:PluginByEntryPoint"})
    return site, file_plugin


def register_all() -> list[str]:
    """Register the three test plugins in this process, each its own way; return their names."""
    site, file_plugin = make_plugin_site()
    load_plugin(str(file_plugin))
    sys.path.insert(0, str(site))
    load_plugin("my_module_plugin:PluginByModule")
    ENCODINGS.forget_entry_points()
    ENCODINGS.load_entry_points(strict=True)
    return list(NAMES.values())

