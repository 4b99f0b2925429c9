"""Positional encodings: the base interface, the registry and one file per encoding.

Installed as ``harness.encodings`` (``encodings`` is a standard-library package name). An
encoding is one class registered with ``@register_encoding(name)``: a file of this folder, a
plugin file or ``module:attr`` (:func:`load_plugin`), or an installed package's entry point in
the group ``harness.encodings``.
"""

from harness.encodings.base import (
    ENCODINGS,
    EncodingConfigError,
    ModelDims,
    PatchGrid,
    Policy,
    PositionalEncoding,
    build_encoding,
    get_encoding,
    known_names,
    register_encoding,
    rescale,
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
    "get_encoding",
    "known_names",
    "load_plugin",
    "register_encoding",
    "rescale",
]
