"""The registry of encodings, and the built-ins as a study spec sees them: without torch.

Checking a spec needs, of each encoding it names, the options it takes (names, types,
bounds, defaults, ``validate``), its head-dimension rule and its hooks (an attention bias
costs memory); not its tensors. So this module holds:

- :data:`ENCODINGS`, the registry, told which names the built-in modules register: ``name in
  ENCODINGS`` and an unknown name's error import none of them (``get`` imports the classes);
- :class:`Declared`, one per built-in (:data:`BUILTINS`): its name, options, hooks, head-dim
  rule and whether it is relative;
- the two checks the encoding base class and a declaration share, so both word an error
  alike: :func:`build_options` and :func:`check_dims`;
- :func:`check_encoding`: what building an encoding would refuse. A built-in is checked from
  its declaration; a plugin, or a file dropped into ``encodings/`` without one, is built (with
  torch), as before: a new encoding is still one file, its declaration an optional speed-up.

Each declaration repeats its class's ``Options`` (``encodings/<name>.py`` stays the whole
encoding, its options beside the code that reads them). ``tests/test_torch_free.py`` compares
every declaration with its class: fields, types, bounds, defaults, what validation says of good
and bad options at assorted model dimensions, the head-dim rule, the hooks, the policies. Change
an encoding's options and its declaration together.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from harness.config import ConfigError, ModelDims, convert, option
from harness.registry import Registry

__all__ = ["BUILTINS", "ENCODINGS", "HOOKS", "Declared", "EncodingConfigError", "EncodingSummary", "NoOptions",
           "Policy", "build_encoding", "build_options", "check_dims", "check_encoding", "describe_encoding",
           "get_encoding", "known_names", "register_encoding", "summarize"]

#: the new-grid policies (``harness.variants.POLICIES``; a test keeps the two lists equal)
Policy = Literal["extrapolate", "interpolate", "interpolate_eva"]
#: The four hook points of the encoding interface, in the order a forward pass meets them.
HOOKS = ("tokens", "qk", "attn_bias", "after_block")


class EncodingConfigError(ConfigError):
    """An encoding cannot be built with these options or model dimensions."""


@dataclass(frozen=True)
class NoOptions:
    """An encoding without options."""


@dataclass(frozen=True)
class EncodingSummary:
    """What the listing shows about an encoding, read from the live class (or a declaration)."""

    name: str
    description: str  # the first line of the class docstring
    hooks: tuple[str, ...]  # the hooks the class overrides, in HOOKS order
    policies: tuple[str, ...]  # the choices of its ``policy`` option (empty: no such option)
    default_policy: str | None
    options: dict[str, Any]  # every option's default
    relative: bool


def summarize(name: str, options_cls: type, hooks: tuple[str, ...], relative: bool,
              description: str = "") -> EncodingSummary:
    """An encoding's summary: its options' defaults and the choices of its ``policy`` option."""
    hints = typing.get_type_hints(options_cls)
    defaults = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                for f in dataclasses.fields(options_cls)}
    policy = hints.get("policy")
    policies = typing.get_args(policy) if typing.get_origin(policy) is Literal else ()
    return EncodingSummary(name=name, description=description, hooks=hooks, policies=policies,
                           default_policy=defaults.get("policy") if policies else None,
                           options=defaults, relative=relative)


def build_options(name: str, options_cls: type, dims: ModelDims, options: Mapping[str, Any]) -> Any:
    """``options_cls`` from ``options``: names, types and bounds checked by ``harness.config``,
    then the options' own ``validate(dims)``; any error names encoding ``name``."""
    try:
        return convert(options_cls, options, "", context=(dims,))
    except ConfigError as exc:  # the detail names an unknown option itself
        where = "" if not exc.key or f"'{exc.key}'" in exc.detail else f"option {exc.key!r}: "
        raise EncodingConfigError(f"encoding {name!r}: {where}{exc.detail}") from None
    except ValueError as exc:
        raise EncodingConfigError(f"encoding {name!r}: {exc}") from None


def check_dims(name: str, head_dim_multiple: int, dims: ModelDims) -> None:
    """Model dimensions encoding ``name`` cannot take: heads that do not divide the model dim,
    a head dimension that is not a multiple of ``head_dim_multiple``."""
    if dims.dim % dims.heads:
        raise EncodingConfigError(f"encoding {name!r}: model dim {dims.dim} is not divisible by heads {dims.heads}")
    if dims.head_dim % head_dim_multiple:
        raise EncodingConfigError(
            f"encoding {name!r} needs a head dimension divisible by {head_dim_multiple}; "
            f"got {dims.head_dim} (dim {dims.dim} / heads {dims.heads})"
        )


@dataclass(frozen=True)
class Declared:
    """A built-in encoding without its tensors: what ``encodings/<module>.py`` registers as
    ``name``, with the same ``Options``, hooks, ``head_dim_multiple`` and ``relative``."""

    name: str
    Options: type = NoOptions
    hooks: tuple[str, ...] = ()
    head_dim_multiple: int = 1
    relative: bool = False
    module: str = ""  # default: the name

    def __post_init__(self) -> None:
        object.__setattr__(self, "module", self.module or self.name)

    def check(self, dims: ModelDims, options: Mapping[str, Any]) -> None:
        """What building the encoding for ``dims`` with ``options`` would refuse, in its words."""
        build_options(self.name, self.Options, dims, options)
        check_dims(self.name, self.head_dim_multiple, dims)

    def describe(self) -> EncodingSummary:
        return summarize(self.name, self.Options, self.hooks, self.relative)


# ---------------------------------------------------------------------------- the built-ins' options
# each a copy of ``<Class>.Options`` in encodings/<name>.py
def _above_one(field: str, value: float) -> None:
    if value <= 1:
        raise ValueError(f"option '{field}' must be > 1, got {value}")


def _positive(field: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"option '{field}' must be > 0, got {value}")


@dataclass(frozen=True)
class SinCos2DOptions:
    temperature: float = 10000.0
    policy: Policy = "extrapolate"

    def validate(self, dims):
        _positive("temperature", self.temperature)
        if dims.dim % 4:
            raise ValueError(f"needs a model dim divisible by 4; got {dims.dim}")


@dataclass(frozen=True)
class LearnedOptions:
    init_std: float = 0.02
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    antialias: bool = True
    policy: Literal["interpolate"] = "interpolate"

    def validate(self, dims):
        _positive("init_std", self.init_std)
        if self.antialias and self.interpolation == "nearest":
            raise ValueError("option 'antialias' needs interpolation 'bilinear' or 'bicubic'")


@dataclass(frozen=True)
class ALiBi2DOptions:
    max_bias: float = 8.0
    policy: Policy = "extrapolate"

    def validate(self, dims):
        _positive("max_bias", self.max_bias)


@dataclass(frozen=True)
class RoPE1DOptions:
    base: float = 10000.0
    policy: Policy = "extrapolate"

    def validate(self, dims):
        _above_one("base", self.base)


@dataclass(frozen=True)
class RoPEAxialOptions:
    base: float = 100.0
    policy: Policy = "extrapolate"

    def validate(self, dims):
        _above_one("base", self.base)


@dataclass(frozen=True)
class RoPEMixedOptions:
    base: float = 10.0
    policy: Policy = "extrapolate"

    def validate(self, dims):
        _above_one("base", self.base)


#: rope_golden's presets, (min_freq, max_freq) only, and its ``auto`` rule (``rope_golden.PRESETS``,
#: ``AUTO_CIFAR_MAX_SIDE``): what its validation reads
_GOLDEN_FREQS = {"cifar": (1.0, 100.0), "imagenet": (0.2, 20.0)}
_GOLDEN_CIFAR_MAX_SIDE = 10


@dataclass(frozen=True)
class RoPEGoldenOptions:
    preset: Literal["auto", "cifar", "imagenet"] = "auto"
    min_freq: float | None = option(None, gt=0)
    max_freq: float | None = option(None, gt=0)
    zero_fraction: float | None = option(None, ge=0, lt=1)
    policy: Policy = "interpolate"

    def validate(self, dims):
        name = self.preset
        if name == "auto":
            name = "cifar" if max(dims.train_rows, dims.train_cols) <= _GOLDEN_CIFAR_MAX_SIDE else "imagenet"
        low, high = _GOLDEN_FREQS[name]
        low = low if self.min_freq is None else self.min_freq
        high = high if self.max_freq is None else self.max_freq
        if not 0 < low <= high:
            raise ValueError(f"options need 0 < min_freq <= max_freq, got {low}, {high} "
                             f"(preset {self.preset!r} and the options given)")


@dataclass(frozen=True)
class LieREOptions:
    block_size: int = 8
    init_max: float = 2 * math.pi
    policy: Policy = "extrapolate"

    def validate(self, dims):
        if self.block_size < 2:
            raise ValueError(f"option 'block_size' must be >= 2, got {self.block_size}")
        if dims.head_dim % self.block_size:
            raise ValueError(f"option 'block_size' {self.block_size} must divide the head dimension {dims.head_dim}")
        _positive("init_max", self.init_max)


@dataclass(frozen=True)
class RPBOptions:
    shared: bool = False
    init_std: float = 0.02
    policy: Literal["extrapolate", "interpolate"] = "interpolate"

    def validate(self, dims):
        _positive("init_std", self.init_std)


@dataclass(frozen=True)
class CPBOptions:
    hidden: int = option(512, gt=0)
    scale: float = option(16.0, gt=0)
    span: float = option(8.0, gt=1)
    policy: Literal["extrapolate", "interpolate"] = "extrapolate"


@dataclass(frozen=True)
class CPEOptions:
    kernel: int = 3
    blocks: tuple[int, ...] = (0,)
    init: Literal["torch", "fan_out"] = "torch"

    def validate(self, dims):
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"option 'kernel' must be an odd integer >= 1 (zero padding kernel // 2 keeps "
                             f"the grid's size only for odd kernels), got {self.kernel}")
        if not self.blocks:
            raise ValueError("option 'blocks' needs at least one entry (a cpe without a PEG is 'none')")
        if [b for b in self.blocks if not -1 <= b <= dims.depth - 1]:
            raise ValueError(f"option 'blocks': entries must lie in [-1, {dims.depth - 1}] (-1: before the "
                             f"first block; the model has {dims.depth} blocks), got {list(self.blocks)}")
        dupes = sorted({b for b in self.blocks if self.blocks.count(b) > 1})
        if dupes:
            raise ValueError(f"option 'blocks': duplicate entries {dupes} in {list(self.blocks)} "
                             f"(one PEG per position)")


@dataclass(frozen=True)
class RoPEDINOv3Options:
    base: float = option(100.0, gt=0)
    normalize: Literal["separate", "max", "min"] = "separate"
    shift: float = option(0.0, ge=0)
    jitter: float = option(1.0, ge=1)
    rescale: float = option(2.0, ge=1)
    policy: Literal["interpolate", "extrapolate"] = "interpolate"


@dataclass(frozen=True)
class STRINGOptions:
    base: float = 10.0
    policy: Literal["extrapolate", "interpolate"] = "extrapolate"

    def validate(self, dims):
        _above_one("base", self.base)


#: every built-in encoding, as its file registers it
BUILTINS: tuple[Declared, ...] = (
    Declared("none", relative=True),
    Declared("sincos2d", SinCos2DOptions, hooks=("tokens",)),
    Declared("learned", LearnedOptions, hooks=("tokens",)),
    Declared("alibi2d", ALiBi2DOptions, hooks=("attn_bias",), relative=True),
    Declared("rope1d", RoPE1DOptions, hooks=("qk",), head_dim_multiple=2, relative=True),
    Declared("rope_axial", RoPEAxialOptions, hooks=("qk",), head_dim_multiple=4, relative=True),
    Declared("rope_mixed", RoPEMixedOptions, hooks=("qk",), head_dim_multiple=4, relative=True),
    Declared("rope_golden", RoPEGoldenOptions, hooks=("qk",), head_dim_multiple=2, relative=True),
    Declared("liere", LieREOptions, hooks=("qk",)),
    Declared("rpb", RPBOptions, hooks=("attn_bias",), relative=True),
    Declared("cpb", CPBOptions, hooks=("attn_bias",), relative=True),
    Declared("cpe", CPEOptions, hooks=("tokens", "after_block")),
    Declared("rope_dinov3", RoPEDINOv3Options, hooks=("qk",), head_dim_multiple=4, relative=True),
    Declared("string", STRINGOptions, hooks=("qk",), head_dim_multiple=4, relative=True),
)
_DECLARED = {d.name: d for d in BUILTINS}


# ---------------------------------------------------------------------------- the registry
#: every registered encoding: the files of this folder, plugins, installed entry points
ENCODINGS: Registry[Any] = Registry(
    "encoding", base="harness.encodings.base:PositionalEncoding", builtins="harness.encodings",
    group="harness.encodings", exclude={"base"}, declared={d.name: d.module for d in BUILTINS},
)
register_encoding = ENCODINGS.register
get_encoding = ENCODINGS.get
known_names = ENCODINGS.names


def build_encoding(name: str, dims: ModelDims, options: dict[str, Any] | None = None) -> Any:
    """Build the encoding registered as ``name`` for a model of dimensions ``dims`` (a
    :class:`harness.encodings.PositionalEncoding`: imports torch)."""
    return get_encoding(name)(dims, **(options or {}))


def check_encoding(name: str, dims: ModelDims, options: Mapping[str, Any] | None = None) -> None:
    """Raise what :func:`build_encoding` would (an unknown name's ``RegistryError``, an
    ``EncodingConfigError``) without building a built-in; anything else is built."""
    declared = _DECLARED.get(name) if isinstance(name, str) else None
    if declared is None:
        build_encoding(name, dims, dict(options or {}))
    else:
        declared.check(dims, options or {})


def describe_encoding(name: str) -> EncodingSummary:
    """The summary of encoding ``name``: a built-in's from its declaration (no description),
    anything else's from its class."""
    declared = _DECLARED.get(name) if isinstance(name, str) else None
    return declared.describe() if declared is not None else get_encoding(name).describe()
