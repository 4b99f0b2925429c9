"""Positional encodings: the base interface, the registry and one file per encoding.

Installed as ``harness.encodings`` (``encodings`` is a standard-library package name). An
encoding is one class registered with ``@register_encoding(name)``: a file of this folder, a
plugin file or ``module:attr`` (:func:`load_plugin`), or an installed package's entry point in
the group ``harness.encodings``.

Importing the package does not import torch: the registry and the checks a study spec needs
are :mod:`harness.encodings._catalog`; ``PatchGrid`` and ``PositionalEncoding`` (with torch)
are imported on first use.
"""

from typing import Any

from harness.variants import rescale  # first, as before: its registries precede the encodings' (plugin errors list them)

from harness.config import ModelDims  # noqa: E402, I001
from harness.encodings._catalog import (
    ENCODINGS,
    EncodingConfigError,
    Policy,
    build_encoding,
    check_encoding,
    describe_encoding,
    get_encoding,
    known_names,
    register_encoding,
)
from harness.registry import PluginError, RegistryError, load_plugin

__all__ = [
    "ENCODINGS",
    "EncodingConfigError",
    "ModelDims",
    "PatchGrid",
    "PluginError",
    "Policy",
    "PositionalEncoding",
    "RegistryError",
    "build_encoding",
    "check_encoding",
    "describe_encoding",
    "get_encoding",
    "known_names",
    "load_plugin",
    "register_encoding",
    "rescale",
]

_TORCH_NAMES = ("PatchGrid", "PositionalEncoding")


def __getattr__(name: str) -> Any:
    """``PatchGrid`` and ``PositionalEncoding``, from :mod:`harness.encodings.base` (torch)."""
    if name in _TORCH_NAMES:
        from harness.encodings import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
