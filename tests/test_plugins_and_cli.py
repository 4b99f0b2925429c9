"""The registry, plugins by path / module:attr / entry point, the CLI listing and figures,
the conformance kit on new plugin files (and its metadata check failing on broken ones), and
the clear errors for bad input (one message, exit status 2, no traceback)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.config import Invalid, option
from harness.conformance import check_all
from harness.encodings import (
    ENCODINGS,
    EncodingConfigError,
    ModelDims,
    PluginError,
    PositionalEncoding,
    RegistryError,
    build_encoding,
    get_encoding,
    load_plugin,
    register_encoding,
)
from harness.errors import HarnessError
from harness.models.vit import ModelConfigError, ViTConfig, build_model
from tests.plugins import NAMES, make_plugin_site, write_dist

ROOT = Path(__file__).resolve().parents[1]
#: the built-in encodings: those the registry found in the files of encodings/
BUILTINS = [n for n in ENCODINGS.names(entry_points=False) if ENCODINGS.source(n) == "built-in"]


def harness(*args: str, pythonpath: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath:
        # never an empty entry: that would put the repository root on the start-up path, where
        # the folder `encodings/` shadows the standard library's `encodings`
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=120)


def listed(stdout: str) -> list[str]:
    return [line.split()[0] for line in stdout.splitlines()[1:] if line.strip()]


# ------------------------------------------------------------------------------ listing
def test_builtins_are_the_files_of_the_encodings_folder():
    files = {p.stem for p in (ROOT / "encodings").glob("*.py") if not p.stem.startswith("_") and p.stem != "base"}
    assert sorted(get_encoding(n).__module__.rpartition(".")[2] for n in BUILTINS) == sorted(files)


def test_listing_shows_the_builtins_with_live_metadata():
    r = harness("encodings", "--preset", "tiny")
    assert r.returncode == 0, r.stderr
    assert listed(r.stdout) == BUILTINS
    rows = {line.split()[0]: re.split(r"\s{2,}", line) for line in r.stdout.splitlines()[1:]}
    # parameter counts for the tiny preset (dim 32, depth 2, heads 4, 4x4 grid) worked out by hand
    assert rows["learned"][3] == "512"  # 16 positions x 32
    assert rows["rope_mixed"][3] == "64"  # 2 layers x 4 heads x 4 pairs x 2
    assert rows["liere"][3] == "448"  # 2 x 2 layers x 4 heads x 1 block x 28 entries
    assert rows["rope_golden"][2] == "interpolate (or extrapolate, interpolate_eva)"
    assert rows["learned"][2] == "interpolate" and rows["none"][1:3] == ["-", "-"]
    assert rows["alibi2d"][1] == "attn_bias" and rows["rope1d"][1] == "qk" and rows["sincos2d"][1] == "tokens"
    # declared properties and option defaults, a computed one included (2 * math.pi)
    assert rows["alibi2d"][4] == "yes" and rows["liere"][4] == "-" and rows["sincos2d"][4] == "-"
    assert rows["liere"][5] == "block_size=8, init_max=6.283185307179586"
    assert rows["none"][5] == "-" and rows["rope_axial"][5] == "base=100.0"
    assert rows["none"][6] == "No position signal at all: the control, a bag of patches."


def test_plugins_by_path_module_and_entry_point_appear_in_the_listing():
    site, file_plugin = make_plugin_site()
    r = harness("encodings", "--plugin", str(file_plugin), "--plugin", "my_module_plugin:PluginByModule",
                pythonpath=str(site))
    assert r.returncode == 0, r.stderr
    names = listed(r.stdout)
    assert set(NAMES.values()) | set(BUILTINS) == set(names)


def test_broken_entry_point_is_named_and_does_not_hide_the_others(tmp_path):
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    write_dist(tmp_path, "broken-plugin", {"broken": "broken_plugin:Nothing"})
    r = harness("encodings", pythonpath=str(tmp_path))
    assert r.returncode == 0
    assert listed(r.stdout) == BUILTINS
    assert "broken" in r.stderr and "boom at import" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "body, expected",
    [
        (None, "file not found"),
        ("import not_a_module_anywhere\n", "ModuleNotFoundError"),
        ("x = 1\n", "registered no encoding"),
    ],
)
def test_bad_plugin_files(tmp_path, body, expected):
    path = tmp_path / "plug.py"
    if body is not None:
        path.write_text(body)
    with pytest.raises(PluginError, match=expected) as err:
        load_plugin(str(path))
    assert str(path) in str(err.value) or "plug.py" in str(err.value)
    r = harness("show", "none", "--plugin", str(path), "--out", str(tmp_path / "figs"))
    assert r.returncode == 2 and expected in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "figs").exists()


def test_bad_module_plugin():
    with pytest.raises(PluginError, match="no_such_module"):
        load_plugin("no_such_module:Thing")


# ------------------------------------------------------------------------------ registry errors
def test_unknown_name_lists_known_and_nearest():
    with pytest.raises(RegistryError) as err:
        get_encoding("rope_axal")
    msg = str(err.value)
    assert "'rope_axial'" in msg and "did you mean" in msg and all(n in msg for n in BUILTINS)


def test_duplicate_name_is_an_error():
    with pytest.raises(RegistryError, match="already registered"):

        @register_encoding("rope_axial")
        class Another(PositionalEncoding):
            """Another."""


def test_unknown_encoding_on_the_cli(tmp_path):
    r = harness("show", "alibi", "--out", str(tmp_path / "f"))
    assert r.returncode == 2 and "unknown encoding 'alibi'" in r.stderr and "alibi2d" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "f").exists()


# ------------------------------------------------------------------------------ bad input
DIMS = ModelDims(dim=32, depth=2, heads=4, train_rows=4, train_cols=4)


@pytest.mark.parametrize(
    "name, dims, options, expected",
    [
        ("rope_axial", ModelDims(24, 1, 4, 4, 4), {}, "head dimension divisible by 4; got 6"),
        ("rope_mixed", ModelDims(40, 1, 4, 4, 4), {}, "head dimension divisible by 4; got 10"),
        ("rope1d", ModelDims(12, 1, 4, 4, 4), {}, "divisible by 2; got 3"),
        ("sincos2d", ModelDims(30, 1, 3, 4, 4), {}, "model dim divisible by 4; got 30"),
        ("liere", DIMS, {"block_size": 3}, "must divide the head dimension 8"),
        ("liere", DIMS, {"block_size": "8"}, "option 'block_size': expected an integer, got '8'"),
        ("rope_axial", DIMS, {"base": -1.0}, "'base' must be > 1"),
        ("rope_golden", DIMS, {"zero_fraction": 1.5}, "zero_fraction"),
        ("rope_axial", DIMS, {"policy": "stretch"}, "expected one of 'extrapolate', 'interpolate'"),
        ("alibi2d", DIMS, {"max_bais": 4.0}, "did you mean 'max_bias'"),
        ("learned", DIMS, {"antialias": "yes"}, "expected a boolean"),
    ],
)
def test_bad_options_and_dims_name_the_encoding(name, dims, options, expected):
    with pytest.raises(EncodingConfigError) as err:
        build_encoding(name, dims, options)
    assert name in str(err.value) and expected in str(err.value)


def test_option_bounds_and_invalid_from_validate_name_the_option():
    """Bounds declared with harness.config.option, and harness.config.Invalid raised by an
    Options.validate(dims), give the same one-line message naming encoding and option."""

    @dataclass(frozen=True)
    class Options:
        width: int = option(2, ge=1)

        def validate(self, dims):
            if dims.head_dim % self.width:
                raise Invalid("width", f"must divide the head dimension {dims.head_dim}")

    class Banded(PositionalEncoding):
        """Unregistered: options only."""

    Banded.Options, Banded.name = Options, "banded"
    assert Banded(DIMS, width=4).opts == Options(4)
    with pytest.raises(EncodingConfigError, match=r"^encoding 'banded': option 'width': expected an integer >= 1, "
                                                  r"got 0$"):
        Banded(DIMS, width=0)
    with pytest.raises(EncodingConfigError, match=r"^encoding 'banded': option 'width': must divide the head "
                                                  r"dimension 8, got 3$"):
        Banded(DIMS, width=3)


def test_bad_option_on_the_cli_exits_2(tmp_path):
    r = harness("show", "rope_axial", "--option", "base=abc", "--out", str(tmp_path / "f"))
    assert r.returncode == 2 and "rope_axial" in r.stderr and "'base'" in r.stderr and "Traceback" not in r.stderr
    r = harness("show", "rope_axial", "--grid", "6by8", "--out", str(tmp_path / "f"))
    assert r.returncode == 2 and "ROWSxCOLS" in r.stderr


def test_input_smaller_than_the_kernel():
    model = build_model(ViTConfig(image_size=16, dim=32, depth=1, heads=4), "none")
    with pytest.raises(ModelConfigError, match="input height 3 is smaller than the patch kernel 4"):
        model(torch.zeros(1, 3, 3, 16))
    with pytest.raises(ModelConfigError, match="must be <= model.patch_kernel"):
        ViTConfig(patch_kernel=2, patch_stride=4)
    assert issubclass(ModelConfigError, HarnessError)


# ------------------------------------------------------------------------------ figures
@pytest.mark.parametrize("name", BUILTINS)
def test_show_draws_figures(name, tmp_path):
    assert main(["show", name, "--grid", "3x5", "--preset", "tiny", "--out", str(tmp_path)]) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert f"{name}_patch_grid.png" in files
    hooks = get_encoding(name).describe().hooks
    expected = {"attn_bias": ["bias_per_head", "bias_from_centre"], "tokens": ["embedding_similarity"],
                "qk": ["logits_vs_offset"], "after_block": ["after_block"]}
    stems = [s for h in hooks for s in expected[h]] or ["logits_vs_offset"]
    stems += ["slopes", "distance_matrix"] if name == "alibi2d" else []
    for stem in stems:
        assert f"{name}_{stem}.png" in files
    assert len(files) == 1 + len(stems)
    for p in tmp_path.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000


def test_overlapping_stem_grid():
    cfg = ViTConfig(image_size=16, dim=32, depth=1, heads=4, patch_kernel=4, patch_stride=2)
    model = build_model(cfg, "rope_axial")
    g = model.grid(16, 20)
    assert (g.rows, g.cols, g.train_rows) == (7, 9, 7)
    assert model(torch.randn(1, 3, 16, 20)).shape == (1, 10)


# ------------------------------------------------------------------------------ one new file is enough
NEW_ENCODING = '''
"""A throw-away encoding: a fixed per-head bias that decays with the horizontal distance."""
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from harness.config import option
from harness.encodings import Policy, PositionalEncoding, register_encoding, rescale


@register_encoding("{name}")
class HorizontalDecay(PositionalEncoding):
    """Fixed bias -rate_h * |dx| on the attention logits (a test plugin)."""

    @dataclass(frozen=True)
    class Options:
        rate: float = option(0.5, gt=0)
        policy: Policy = "extrapolate"

    relative = True
    fixed_tables = True

    def build(self, grid, device):
        y, x = grid.yx(device)
        x = rescale(x, grid.cols, grid.train_cols, self.opts.policy)
        rates = self.opts.rate * torch.arange(1, self.dims.heads + 1, device=device)
        bias = -rates[:, None, None] * (x[:, None] - x).abs()
        return F.pad(bias, (grid.num_prefix, 0, grid.num_prefix, 0))

    def attn_bias(self, grid, state, layer):
        return state
'''


def test_a_new_encoding_file_is_listed_and_passes_the_whole_kit(tmp_path):
    path = tmp_path / "horizontal_decay.py"
    path.write_text(NEW_ENCODING.replace("{name}", "horizontal_decay"))
    r = harness("encodings", "--preset", "tiny", "--plugin", str(path))
    assert r.returncode == 0 and not r.stderr, r.stderr
    assert listed(r.stdout) == sorted(BUILTINS + ["horizontal_decay"])
    row = next(line for line in r.stdout.splitlines() if line.startswith("horizontal_decay "))
    assert re.split(r"\s{2,}", row)[1:6] == ["attn_bias", "extrapolate (or interpolate, interpolate_eva)", "0", "yes", "rate=0.5"]
    assert load_plugin(str(path)) == ["encoding horizontal_decay"]
    check_all("horizontal_decay")


def test_the_docs_example_is_a_plugin_that_passes_the_whole_kit():
    example = ROOT / "examples" / "my_pe.py"
    assert load_plugin(str(example)) == ["encoding my_pe"]
    check_all("my_pe")
    pe = build_encoding("my_pe", DIMS)
    assert pe.num_trainable() == DIMS.heads * 2 and get_encoding("my_pe").relative


def test_the_docs_show_examples_my_pe_verbatim():
    page = (ROOT / "docs" / "adding-an-encoding.md").read_text(encoding="utf-8")
    section = page.split("# Adding an encoding", 1)[1].split("\n## ", 1)[0]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert block == (ROOT / "examples" / "my_pe.py").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------ the metadata check can fail
GOOD_PLUGIN = '''
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from harness.encodings import PositionalEncoding, register_encoding


@register_encoding("{name}")
class Plugin(PositionalEncoding):
    """A test plugin: a learned gain on the patch tokens."""

    @dataclass(frozen=True)
    class Options:
        scale: float = 1.0
        policy: Literal["interpolate", "extrapolate"] = "interpolate"

    relative = False

    def __init__(self, dims, **options):
        super().__init__(dims, **options)
        self.gain = nn.Parameter(torch.ones(dims.dim))

    def tokens(self, x, grid, state):
        return x * self.gain * self.opts.scale

    def no_weight_decay(self):
        return {"gain"}
'''

#: one defect each: (what is replaced, by what, what the metadata check says)
DEFECTS = {
    "no_docstring": ('"""A test plugin: a learned gain on the patch tokens."""', "", "needs a docstring"),
    "mutable_options": ("@dataclass(frozen=True)", "@dataclass", "must be a frozen dataclass"),
    "option_without_default": ("scale: float = 1.0", "scale: float", "option 'scale' has no default"),
    "policy_default_not_a_choice": ('= "interpolate"', '= "stretch"', "default policy 'stretch' is not one of"),
    "relative_not_a_bool": ("relative = False", 'relative = "yes"', "relative must be True or False"),
    "hook_with_wrong_arguments": ("def tokens(self, x, grid, state)", "def tokens(self, x)", "must take the arguments"),
    "decay_of_a_missing_parameter": ('return {"gain"}', 'return {"table"}', "which are not parameters"),
    "defaults_fail_their_own_check": ("scale: float = 1.0", 'scale: float = "big"', "default options fail"),
}

RUN_METADATA_CHECK = '''
import json, sys
from harness.conformance import check_metadata
from harness.encodings import load_plugin
out = {}
for path in sys.argv[1:]:
    (entry,) = load_plugin(path)
    name = entry.split()[1]
    try:
        check_metadata(name)
        out[name] = "passed"
    except AssertionError as exc:
        out[name] = str(exc)
print(json.dumps(out))
'''


def test_check_metadata_fails_on_broken_plugins(tmp_path):
    """Each plugin file has one defect and fails the metadata check, naming it; the same file
    without the defect passes. (In a subprocess: the broken plugins stay out of this registry.)"""
    paths = [tmp_path / "good.py"]
    paths[0].write_text(GOOD_PLUGIN.replace("{name}", "meta_good"))
    for defect, (old, new, _) in DEFECTS.items():
        assert old in GOOD_PLUGIN
        paths.append(tmp_path / f"{defect}.py")
        paths[-1].write_text(GOOD_PLUGIN.replace("{name}", f"meta_{defect}").replace(old, new, 1))
    r = subprocess.run([sys.executable, "-c", RUN_METADATA_CHECK, *map(str, paths)], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)
    assert results.pop("meta_good") == "passed"
    for defect, (_, _, message) in DEFECTS.items():
        assert message in results[f"meta_{defect}"], (defect, results[f"meta_{defect}"])
