"""The dataset conformance kit, run over every registered dataset: the built-ins, the documentation's
example (examples/my_dataset.py) and a throw-away plugin file; and the kit catching broken ones."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import torch

from harness.data import DATASETS, build_dataset
from harness.data.conformance import CHECKS, check_all, example
from harness.registry import PluginError, load_plugin

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "my_dataset.py"
DOCS_EXAMPLE = load_plugin(str(EXAMPLE))  # before collection reads DATASETS.names()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", DATASETS.names())
def test_conformance(name, check, tmp_path):
    check(name, example(name, tmp_path))


def test_the_builtins_and_the_example_are_listed():
    assert {"rendered", "cifar10", "cifar100", "imagefolder", "fashion_mnist", "diagonal"} <= set(DATASETS.names())
    assert "dataset diagonal" in DOCS_EXAMPLE
    assert DATASETS.source("diagonal") == str(EXAMPLE) and DATASETS.source("cifar100") == "built-in"


def test_the_example_is_what_the_docs_show():
    # examples/my_dataset.py is the "Adding a dataset" page's block, byte for byte.
    page = (ROOT / "docs" / "adding-a-dataset.md").read_text(encoding="utf-8")
    assert page.startswith("# Adding a dataset")
    blocks = re.findall(r"```python\n(# my_dataset\.py\n.*?)```", page, flags=re.S)
    assert blocks == [EXAMPLE.read_text()]


def test_the_example_learns_its_labels_from_pixels():
    # Independent of the class: the brightest pixel lies above the diagonal (row < column)
    # exactly for label 1 ("above"), at two resolutions.
    ds = build_dataset("diagonal", num_train=64, num_val=8, num_test=8, seed=3)
    assert ds.classes == ["below", "above"] and ds.in_chans == 1
    for r in (16, 31):
        split = ds.split("train", r)
        flat = split.images[:, 0].flatten(1).argmax(1)
        row, col = flat // r, flat % r
        assert torch.equal((row < col).long(), split.labels)
        assert sorted(split.labels.tolist()) == [0] * 32 + [1] * 32
    with pytest.raises(Exception, match=r"dataset.radius: must be below 0.25.*got 0.3"):
        build_dataset("diagonal", radius=0.3)


PLUGIN = '''
from dataclasses import dataclass
import torch
from harness.config import option
from harness.data import DatasetOptions, ImageDataset, Split, register_dataset


@register_dataset("{name}")
class Checker(ImageDataset):
    """Checkerboards of {{2, 3, 4}} squares per side (3 classes), random colours; {flaw} is broken."""

    classes = ["2", "3", "4"]
    num_classes = 3
    regimes = ("zoom", "canvas") if "{flaw}" == "canvas" else ("zoom",)

    @dataclass(frozen=True)
    class Options(DatasetOptions):
        num: int = option(12, gt=0)
        seed: int = 0

    def __init__(self, options):
        g = torch.Generator().manual_seed(options.seed)
        self.labels = {{w: torch.randint(0, 3, (options.num,), generator=g) for w in ("train", "val", "test")}}
        self.colours = {{w: torch.rand(options.num, 2, 3, generator=g) for w in ("train", "val", "test")}}
        if "{flaw}" == "overlap":
            self.labels["test"], self.colours["test"] = self.labels["train"], self.colours["train"]

    def _load(self, which, size, device):
        cols = size.rows if "{flaw}" == "square" else size.cols
        cy, cx = ((torch.arange(n) + 0.5) / n for n in (size.rows, cols))
        squares = (self.labels[which] + 2).view(-1, 1, 1)
        parity = ((cx.view(1, 1, -1) * squares).floor() + (cy.view(1, -1, 1) * squares).floor()) % 2  # (N, R, C)
        a, b = self.colours[which].unbind(1)
        images = a[:, :, None, None] + parity[:, None] * (b - a)[:, :, None, None]
        labels = self.labels[which]
        if "{flaw}" == "random":
            images = images + torch.rand(images.shape)
        if "{flaw}" == "channels":
            images = images[:, :1]
        if "{flaw}" == "labels":
            labels = labels + 1
        return Split(images.to(device), labels.to(device))

    def _load_canvas(self, which, size, train_size, device):  # a zoom, mirrored: not the training image
        split = self._load(which, size, device)
        return Split(split.images.flip(-1), split.labels)

    def cache_token(self):  # token: differs between two builds, so the disk cache is never read back
        return id(self) if "{flaw}" == "token" else None
'''


def write_plugin(folder: Path, name: str, flaw: str = "none") -> Path:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(PLUGIN.format(name=name, flaw=flaw)))
    return path


def test_a_plugin_file_is_listed_and_passes_the_kit(tmp_path):
    path = write_plugin(tmp_path, "throwaway_checker")
    assert load_plugin(str(path)) == ["dataset throwaway_checker"]
    assert "throwaway_checker" in DATASETS.names() and DATASETS.source("throwaway_checker") == str(path)
    check_all("throwaway_checker", tmp_path / "example")
    ds = build_dataset("throwaway_checker", num=5, seed=1)
    assert ds.split("val", 12).images.shape == (5, 3, 12, 12)


@pytest.mark.parametrize("flaw, failing", [
    ("random", ["check_deterministic"]),
    ("overlap", ["check_disjoint"]),
    ("channels", ["check_splits", "check_resolutions"]),
    ("labels", ["check_splits"]),
    ("square", ["check_resolutions"]),
    ("canvas", ["check_regimes"]),
    ("token", ["check_disk_cache"]),
])
def test_the_kit_catches_a_broken_dataset(tmp_path, flaw, failing):
    name = f"zz_broken_{flaw}"
    load_plugin(str(write_plugin(tmp_path, name, flaw)))
    options = example(name, tmp_path / "example")
    failed = []
    for check in CHECKS:
        try:
            check(name, options)
        except AssertionError:
            failed.append(check.__name__)
    assert failed == failing


def test_options_that_are_not_dataset_options_fail_the_kit(tmp_path):
    path = tmp_path / "plain_options.py"
    path.write_text(PLUGIN.format(name="zz_plain_options", flaw="none").replace("(DatasetOptions)", ""))
    load_plugin(str(path))
    with pytest.raises(AssertionError, match="Options must subclass harness.data.DatasetOptions"):
        CHECKS[0]("zz_plain_options", DATASETS.get("zz_plain_options").Options())


def test_a_plugin_that_registers_nothing_is_refused(tmp_path):
    path = tmp_path / "empty_plugin.py"
    path.write_text("from harness.data import ImageDataset\n\nclass NotRegistered(ImageDataset):\n    pass\n")
    with pytest.raises(PluginError, match="registered no encoding, dataset or figure"):
        load_plugin(str(path))
