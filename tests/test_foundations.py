"""The three shared pieces every extension goes through: the generic registry, the typed
configuration converter and the tracking schema, each against plain expectations."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import ClassVar, Literal

import pytest

from harness.config import Config, ConfigError, Invalid, TrainConfig, ViTConfig, check, convert, option
from harness.errors import did_you_mean, redact_url
from harness.registry import PluginError, Registry, RegistryError
from harness.schema import (
    Cell,
    Size,
    Variant,
    acc_at,
    cells,
    encoding_options,
    loss_at,
    parse_test_metric,
    tuned_values,
)


# ------------------------------------------------------------------------------ the registry
class Widget:
    pass


WIDGETS = Registry("testwidget", base=Widget)
TOOLS = Registry("testtool")  # functions: anything callable


@WIDGETS.register("round_widget")
class RoundWidget(Widget):
    pass


def test_registry_look_up_names_and_errors():
    assert WIDGETS.get("round_widget") is RoundWidget and RoundWidget.name == "round_widget"
    assert "round_widget" in WIDGETS and "square" not in WIDGETS
    with pytest.raises(RegistryError, match=r"unknown testwidget 'round_widgt'; did you mean 'round_widget'\? "
                                            r"Known testwidgets: round_widget"):
        WIDGETS.get("round_widgt")
    assert WIDGETS.source("round_widget") == f"{__name__}:RoundWidget"


def test_registry_refuses_duplicates_wrong_bases_and_bad_names():
    WIDGETS.register("round_widget")(RoundWidget)  # the same class again (a module imported twice): fine

    class Other(Widget):
        pass

    with pytest.raises(RegistryError, match="testwidget name 'round_widget' is already registered by"):
        WIDGETS.register("round_widget")(Other)
    with pytest.raises(RegistryError, match="must be a subclass of .*Widget"):
        WIDGETS.register("not_a_widget")(int)
    with pytest.raises(RegistryError, match="must be a Python identifier"):
        WIDGETS.register("has-dash")
    with pytest.raises(RegistryError, match="is not callable"):
        TOOLS.add("three", 3)
    with pytest.raises(RegistryError, match="exists already"):
        Registry("testwidget")
    assert WIDGETS.names() == ["round_widget"]


def test_a_function_registry():
    @TOOLS.register("double")
    def double(x):
        return 2 * x

    assert TOOLS.get("double")(4) == 8 and TOOLS.names() == ["double"]


def test_one_plugin_file_adds_to_every_registry_and_a_failed_one_leaves_nothing(tmp_path):
    # in a fresh interpreter, so that nothing it registers stays in this process
    good = tmp_path / "many.py"
    good.write_text(textwrap.dedent('''
        import torch
        from dataclasses import dataclass
        from harness.data import DatasetOptions, ImageDataset, register_dataset
        from harness.encodings import PositionalEncoding, register_encoding
        from harness.figures import ReportFigure, register_figure

        @register_encoding("many_pe")
        class ManyPE(PositionalEncoding):
            """An encoding that does nothing."""

        @register_dataset("many_data")
        class ManyData(ImageDataset):
            """A dataset."""
            @dataclass(frozen=True)
            class Options(DatasetOptions):
                seed: int = 0

        @register_figure("many_fig")
        class ManyFig(ReportFigure):
            title, caption = "t", "c"
    '''))
    bad = tmp_path / "half.py"
    bad.write_text("from harness.encodings import PositionalEncoding, register_encoding\n"
                   "@register_encoding('half_pe')\nclass Half(PositionalEncoding):\n    '''Half.'''\n"
                   "raise RuntimeError('fails after registering')\n")
    code = textwrap.dedent(f'''
        from harness.registry import PluginError, load_plugin, registries
        print(sorted(load_plugin({str(good)!r})))
        try:
            load_plugin({str(bad)!r})
        except PluginError as exc:
            print("error:", exc)
        print("half_pe" in registries()["encoding"])
    ''')
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "['dataset many_data', 'encoding many_pe', 'figure many_fig']"
    assert "failed to import: RuntimeError: fails after registering" in lines[1]
    assert lines[2] == "False"


def test_a_plugin_that_registers_nothing(tmp_path):
    from harness.registry import load_plugin

    path = tmp_path / "empty_plugin.py"
    path.write_text("x = 1\n")
    with pytest.raises(PluginError, match="registered no encoding, dataset or figure"):
        load_plugin(str(path))


# ------------------------------------------------------------------------------ the converter
@dataclass(frozen=True)
class Inner(Config):
    section: ClassVar[str] = "outer.inner"
    size: int = option(3, ge=1)


@dataclass(frozen=True)
class Outer(Config):
    section: ClassVar[str] = "outer"
    rate: float = option(0.5, gt=0, lt=1)
    mode: Literal["a", "b"] = "a"
    inner: Inner = Inner()
    sizes: tuple[int, ...] = (1, 2)
    low: int = 0
    high: int = 1

    def validate(self) -> None:
        if self.low > self.high:
            raise Invalid("low", f"must be <= outer.high ({self.high})")


@pytest.mark.parametrize("data, key, detail", [
    ({"rate": 0}, "outer.rate", "expected a finite number > 0, got 0"),
    ({"rate": 1.0}, "outer.rate", "expected a finite number < 1, got 1.0"),
    ({"rate": True}, "outer.rate", "expected a finite number, got True"),
    ({"mode": "c"}, "outer.mode", "expected one of 'a', 'b', got 'c'"),
    ({"inner": {"size": 0}}, "outer.inner.size", "expected an integer >= 1, got 0"),
    ({"inner": {"sise": 2}}, "outer.inner.sise", "unknown key 'outer.inner.sise'; did you mean 'outer.inner.size'?"),
    ({"sizes": [1, "x"]}, "outer.sizes", "expected a list of an integer, got [1, 'x']"),
    ({"low": 3, "high": 2}, "outer.low", "must be <= outer.high (2), got 3"),
    ({"rte": 0.1}, "outer.rte", "unknown key 'outer.rte'; did you mean 'outer.rate'?"),
])
def test_convert_names_the_dotted_key_and_what_was_expected(data, key, detail):
    with pytest.raises(ConfigError) as err:
        convert(Outer, data, "outer")
    assert err.value.key == key and err.value.detail.startswith(detail), (err.value.key, err.value.detail)


def test_convert_builds_typed_values():
    cfg = convert(Outer, {"rate": 0.25, "inner": {"size": 5}, "sizes": [3, 4]}, "outer")
    assert cfg == Outer(rate=0.25, inner=Inner(size=5), sizes=(3, 4)) and isinstance(cfg.sizes, tuple)
    assert isinstance(TrainConfig(lr=1).lr, float)  # an int where a float is expected becomes a float
    model = convert(ViTConfig, {"dim": 64, "heads": 4}, "model", exclude=ViTConfig.PER_TRIAL,
                    fixed={"image_size": 16})
    assert model.dims.train_rows == 4
    with pytest.raises(ConfigError, match="unknown key 'model.image_size'"):
        convert(ViTConfig, {"image_size": 16}, "model", exclude=ViTConfig.PER_TRIAL)


def test_plain_dataclasses_are_checked_with_a_context():
    @dataclass(frozen=True)
    class Options:
        width: int = option(4, ge=1)

        def validate(self, limit):
            if self.width > limit:
                raise Invalid("width", f"must be at most {limit}")

    assert convert(Options, {"width": 3}, "", context=(8,)).width == 3
    with pytest.raises(ConfigError, match="must be at most 2, got 3"):
        convert(Options, {"width": 3}, "", context=(2,))
    with pytest.raises(ConfigError, match="expected an integer >= 1, got 0"):
        check(Options(width=0), context=(8,))


def test_did_you_mean_and_redaction():
    assert did_you_mean("epoch", ["epochs", "lr"], prefix="train.") == "; did you mean 'train.epochs'?"
    assert did_you_mean("zzz", ["epochs"]) == ""
    assert redact_url("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"


# ------------------------------------------------------------------------------ the schema
@pytest.mark.parametrize("cell", [Cell("rope_axial", 32, 0), Cell("a_b_r3", 16, 12), Cell("x|y", 8, -1)])
def test_cell_key_and_tag_round_trip(cell):
    assert Cell.parse(cell.key) == cell and Cell.parse(cell.tag) == cell
    assert Cell.from_params({k: str(v) for k, v in cell.params().items()}) == cell


def test_metric_keys_and_cells_of_a_spec():
    canvas = Variant("canvas", "interpolate_eva", "log")
    assert acc_at(32) == "test/acc/zoom/na/none/r32" and loss_at("8x16", canvas) == "test/loss/canvas/interpolate_eva/log/r8x16"
    assert parse_test_metric(loss_at("8x16", canvas)) == ("loss", canvas, Size(8, 16))
    assert parse_test_metric(acc_at(Size(24, 24))) == ("acc", Variant(), Size(24, 24))
    # keys written before variants existed: the zoom regime under the encoding's own default policy
    assert parse_test_metric("test/acc/r32") == ("acc", Variant("zoom", "default", "none"), Size(32, 32))
    assert parse_test_metric("val/acc") is None and parse_test_metric("test/acc/rx") is None
    assert parse_test_metric("test/acc/zoom/na/r32") is None
    assert Size.parse("32x64") == Size(32, 64) and Size.parse(" 16 ") == Size(16, 16) and Size(4, 4).label == "4"
    with pytest.raises(ValueError, match="not an image size"):
        Size.parse("32by64")
    spec = {"encodings": [{"name": "none", "label": ""}, {"name": "rope_axial", "label": "axial50"}],
            "train_resolutions": [16, 32], "seeds": [0, 1]}
    assert cells(spec) == [Cell(e, r, s) for e in ("none", "axial50") for r in (16, 32) for s in (0, 1)]
    with pytest.raises(ValueError, match="not a cell"):
        Cell.parse("rope_axial")


def test_parameters_read_back():
    params = {"config.encoding.options.base": "50.0", "config.tune.space.train.lr.low": "0.001",
              "config.tune.space.train.lr.high": "0.01", "config.train.lr": "0.003"}
    assert encoding_options(params) == '{"base": "50.0"}'
    assert encoding_options({"config.encoding.options": "{}"}) == "{}"
    assert tuned_values(params) == {"train.lr": 0.003}
