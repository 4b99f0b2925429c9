"""Positional encodings: the base interface, the registry and one file per encoding.

Installed as ``harness.encodings`` (``encodings`` is a standard-library package name).
Importing this package is cheap; the torch-based classes load on first use.
"""

from harness.encodings.registry import (
    ENTRY_POINT_GROUP,
    HOOKS,
    PluginError,
    RegistryError,
    encoding_infos,
    get_encoding,
    known_names,
    load_entry_points,
    load_plugin,
    register_encoding,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "HOOKS",
    "EncodingConfigError",
    "ModelDims",
    "PatchGrid",
    "PluginError",
    "PositionalEncoding",
    "RegistryError",
    "build_encoding",
    "encoding_infos",
    "get_encoding",
    "known_names",
    "load_entry_points",
    "load_plugin",
    "register_encoding",
]

_LAZY = {"EncodingConfigError", "ModelDims", "PatchGrid", "PositionalEncoding", "build_encoding"}


def __getattr__(name: str):
    if name in _LAZY:
        from harness.encodings import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
