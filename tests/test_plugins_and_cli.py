"""The registry, plugins by path / module:attr / entry point, the CLI listing and figures,
and the clear errors for bad input (one message, exit status 2, no traceback)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.encodings import registry
from harness.encodings.base import EncodingConfigError, ModelDims, PositionalEncoding, build_encoding
from harness.errors import HarnessError
from harness.models.vit import ModelConfigError, ViTConfig, build_model
from tests.plugins import NAMES, make_plugin_site, write_dist, write_plugin

BUILTINS = ["alibi2d", "learned", "liere", "none", "rope1d", "rope_axial", "rope_golden", "rope_mixed", "sincos2d"]
ROOT = Path(__file__).resolve().parents[1]


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
def test_listing_shows_the_nine_without_importing_torch():
    code = ("import sys; from harness.cli import main; rc = main(['encodings', '--preset', 'tiny']); "
            "assert 'torch' not in sys.modules, 'listing imported torch'; sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert listed(r.stdout) == BUILTINS
    rows = {line.split()[0]: re.split(r"\s{2,}", line) for line in r.stdout.splitlines()[1:]}
    # parameter counts for the tiny preset (dim 32, depth 2, heads 4, 4x4 grid) worked out by hand
    assert rows["learned"][3] == "512"  # 16 positions x 32
    assert rows["rope_mixed"][3] == "64"  # 2 layers x 4 heads x 4 pairs x 2
    assert rows["liere"][3] == "448"  # 2 x 2 layers x 4 heads x 1 block x 28 entries
    assert rows["rope_golden"][2] == "interpolate (or extrapolate)"
    assert rows["learned"][2] == "interpolate" and rows["none"][1:3] == ["-", "-"]
    assert rows["alibi2d"][1] == "attn_bias" and rows["rope1d"][1] == "qk" and rows["sincos2d"][1] == "tokens"


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
    with pytest.raises(registry.PluginError, match=expected) as err:
        registry.load_plugin(str(path))
    assert str(path) in str(err.value) or "plug.py" in str(err.value)
    r = harness("show", "none", "--plugin", str(path), "--out", str(tmp_path / "figs"))
    assert r.returncode == 2 and expected in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "figs").exists()


def test_bad_module_plugin():
    with pytest.raises(registry.PluginError, match="no_such_module"):
        registry.load_plugin("no_such_module:Thing")


# ------------------------------------------------------------------------------ registry errors
def test_unknown_name_lists_known_and_nearest():
    with pytest.raises(registry.RegistryError) as err:
        registry.get_encoding("rope_axal")
    msg = str(err.value)
    assert "'rope_axial'" in msg and "did you mean" in msg and all(n in msg for n in BUILTINS)


def test_duplicate_name_is_an_error():
    with pytest.raises(registry.RegistryError, match="already registered"):

        @registry.register_encoding("rope_axial")
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
        ("liere", DIMS, {"block_size": "8"}, "wrong type; expected an integer"),
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
    expected = {
        "alibi2d": ["slopes", "distance_matrix", "bias_per_head", "bias_from_centre"],
        "learned": ["embedding_similarity"], "sincos2d": ["embedding_similarity"],
    }.get(name, ["logits_vs_offset"])
    for stem in expected:
        assert f"{name}_{stem}.png" in files
    for p in tmp_path.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000


def test_overlapping_stem_grid():
    cfg = ViTConfig(image_size=16, dim=32, depth=1, heads=4, patch_kernel=4, patch_stride=2)
    model = build_model(cfg, "rope_axial")
    g = model.grid(16, 20)
    assert (g.rows, g.cols, g.train_rows) == (7, 9, 7)
    assert model(torch.randn(1, 3, 16, 20)).shape == (1, 10)
