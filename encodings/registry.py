"""The registry of positional encodings.

Encodings register with ``@register_encoding("name")``. Built-in encodings (the files of
this folder) are found by reading their source, so listing them imports neither torch nor
the encoding modules; a built-in module is imported the first time its class is asked for.
Third-party encodings arrive as a file path, as ``module:attr``, or as an installed package
that declares an entry point in the group ``harness.encodings``.

This module must stay free of heavy imports: ``harness encodings`` and ``--help`` use it.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

__all__ = [
    "ENTRY_POINT_GROUP",
    "HOOKS",
    "EncodingInfo",
    "PluginError",
    "RegistryError",
    "encoding_infos",
    "get_encoding",
    "known_names",
    "load_entry_points",
    "load_plugin",
    "register_encoding",
]

ENTRY_POINT_GROUP = "harness.encodings"
#: The three hook points of the encoding interface, in the order a forward pass meets them.
HOOKS = ("tokens", "qk", "attn_bias")

_HERE = Path(__file__).resolve().parent
_NOT_ENCODINGS = {"__init__", "registry", "base"}


class RegistryError(HarnessError):
    """Unknown or duplicate encoding name."""


class PluginError(HarnessError):
    """A plugin could not be found, imported, or registered nothing."""


@dataclass
class EncodingInfo:
    """What the listing shows about one encoding, known without importing it."""

    name: str
    source: str  # "built-in", a file path, "module:attr" or "entry point <name>"
    module: str
    qualname: str
    description: str = ""
    hooks: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    default_policy: str | None = None
    param_count: str = "0"
    option_defaults: dict[str, Any] = field(default_factory=dict)
    cls: type | None = None

    def count_parameters(self, dims: dict[str, int], options: dict[str, Any] | None = None) -> int:
        """Trainable parameters for model dimensions ``dims`` (dim, depth, heads, head_dim,
        train_rows, train_cols), from the encoding's declared ``param_count`` formula."""
        names = {**dims, **self.option_defaults, **(options or {})}
        return int(_eval_formula(self.param_count, names, self.name))


_REGISTRY: dict[str, EncodingInfo] = {}
_BUILTINS_SCANNED = False
_LOADED_PLUGINS: dict[str, list[str]] = {}
_ENTRY_POINTS_LOADED = False
#: entry points that failed to load: name -> reason (shown by the listing, never raised there)
BROKEN_PLUGINS: dict[str, str] = {}


# --------------------------------------------------------------------------- registration
def register_encoding(name: str):
    """Class decorator: add a :class:`PositionalEncoding` subclass to the registry under ``name``."""
    if not isinstance(name, str) or not name.isidentifier():
        raise RegistryError(f"encoding name {name!r} must be a Python identifier (letters, digits, _)")

    def deco(cls: type) -> type:
        _scan_builtins()
        source = _source_of(cls)
        old = _REGISTRY.get(name)
        if old is not None and not (old.module == cls.__module__ and old.qualname == cls.__qualname__):
            raise RegistryError(
                f"encoding name {name!r} is already registered by {old.source} "
                f"({old.module}.{old.qualname}); {source} ({cls.__module__}.{cls.__qualname__}) "
                "must use another name"
            )
        cls.name = name
        _REGISTRY[name] = _info_from_class(name, cls, old.source if old else source)
        return cls

    return deco


def _source_of(cls: type) -> str:
    mod = sys.modules.get(cls.__module__)
    path = getattr(mod, "__file__", None)
    if path and Path(path).resolve().parent == _HERE:
        return "built-in"
    return getattr(mod, "__harness_plugin__", None) or f"{cls.__module__}:{cls.__qualname__}"


def _info_from_class(name: str, cls: type, source: str) -> EncodingInfo:
    import dataclasses
    import typing

    hooks = tuple(h for h in HOOKS if _overrides(cls, h))
    opts = getattr(cls, "Options", None)
    defaults: dict[str, Any] = {}
    policies: tuple[str, ...] = ()
    default_policy = None
    if opts is not None and dataclasses.is_dataclass(opts):
        hints = typing.get_type_hints(opts)
        for f in dataclasses.fields(opts):
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = f.default
            if f.name == "policy":
                policies = tuple(typing.get_args(hints[f.name]))
                default_policy = f.default
    doc = (cls.__doc__ or "").strip().splitlines()
    return EncodingInfo(
        name=name,
        source=source,
        module=cls.__module__,
        qualname=cls.__qualname__,
        description=doc[0].strip() if doc else "",
        hooks=hooks,
        policies=policies,
        default_policy=default_policy,
        param_count=str(getattr(cls, "param_count", "0")),
        option_defaults=defaults,
        cls=cls,
    )


def _overrides(cls: type, hook: str) -> bool:
    """Whether ``cls`` overrides ``hook`` (the base interface defines every hook as a no-op)."""
    for klass in cls.__mro__:
        if hook in vars(klass):
            return not vars(klass).get("_is_base_interface", False)
    return False


# --------------------------------------------------------------------------- look-up
def known_names() -> list[str]:
    _scan_builtins()
    return sorted(_REGISTRY)


def encoding_infos(*, entry_points: bool = True) -> list[EncodingInfo]:
    """Every registered encoding (built-ins, loaded plugins and, unless told not to,
    installed entry points), sorted by name. Broken entry points land in ``BROKEN_PLUGINS``."""
    _scan_builtins()
    if entry_points:
        load_entry_points(strict=False)
    return [_REGISTRY[n] for n in sorted(_REGISTRY)]


def get_encoding(name: str) -> type:
    """The encoding class registered under ``name`` (imports its module on first use)."""
    _scan_builtins()
    if name not in _REGISTRY:
        load_entry_points(strict=False)
    info = _REGISTRY.get(name)
    if info is None:
        names = sorted(_REGISTRY)
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RegistryError(f"unknown encoding {name!r}{hint} Known encodings: {', '.join(names)}")
    if info.cls is None:
        importlib.import_module(info.module)
        info = _REGISTRY[name]
        if info.cls is None:  # pragma: no cover - a built-in whose decorator did not run
            raise RegistryError(f"encoding {name!r}: module {info.module} did not register it")
    return info.cls


# --------------------------------------------------------------------------- built-ins by reading source
def _scan_builtins() -> None:
    global _BUILTINS_SCANNED
    if _BUILTINS_SCANNED:
        return
    _BUILTINS_SCANNED = True
    classes: dict[str, ast.ClassDef] = {}
    registered: list[tuple[str, str, ast.ClassDef]] = []
    for path in sorted(_HERE.glob("*.py")):
        if path.stem in _NOT_ENCODINGS:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            classes[node.name] = node
            for deco in node.decorator_list:
                if (
                    isinstance(deco, ast.Call)
                    and _call_name(deco.func) == "register_encoding"
                    and deco.args
                    and isinstance(deco.args[0], ast.Constant)
                ):
                    registered.append((deco.args[0].value, path.stem, node))
    for name, stem, node in registered:
        if name in _REGISTRY:
            other = _REGISTRY[name]
            raise RegistryError(
                f"encoding name {name!r} is registered twice among the built-ins: "
                f"{other.module} and harness.encodings.{stem}"
            )
        _REGISTRY[name] = _info_from_ast(name, f"harness.encodings.{stem}", node, classes)


def _call_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _info_from_ast(name: str, module: str, node: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> EncodingInfo:
    chain = _class_chain(node, classes)
    methods = {n.name for c in chain for n in c.body if isinstance(n, ast.FunctionDef)}
    param_count = "0"
    for c in reversed(chain):  # most derived last, so it wins
        for stmt in c.body:
            target = stmt.targets[0] if isinstance(stmt, ast.Assign) else getattr(stmt, "target", None)
            value = getattr(stmt, "value", None)
            if isinstance(target, ast.Name) and target.id == "param_count" and isinstance(value, ast.Constant):
                param_count = str(value.value)
    defaults: dict[str, Any] = {}
    policies: tuple[str, ...] = ()
    default_policy = None
    opts = next((s for s in node.body if isinstance(s, ast.ClassDef) and s.name == "Options"), None)
    for stmt in opts.body if opts else []:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            try:
                defaults[stmt.target.id] = ast.literal_eval(stmt.value)
            except ValueError:
                continue
            if stmt.target.id == "policy":
                policies = _literal_choices(stmt.annotation)
                default_policy = defaults["policy"]
    doc = (ast.get_docstring(node) or "").strip().splitlines()
    return EncodingInfo(
        name=name,
        source="built-in",
        module=module,
        qualname=node.name,
        description=doc[0].strip() if doc else "",
        hooks=tuple(h for h in HOOKS if h in methods),
        policies=policies,
        default_policy=default_policy,
        param_count=param_count,
        option_defaults=defaults,
    )


#: type aliases of base.py that Options annotations may use (checked against base.py by the tests)
_ALIASES = {"Policy": ("extrapolate", "interpolate")}


def _literal_choices(annotation: ast.expr) -> tuple[str, ...]:
    if isinstance(annotation, ast.Name):
        return _ALIASES.get(annotation.id, ())
    if isinstance(annotation, ast.Subscript):
        sl = annotation.slice
        return tuple(ast.literal_eval(e) for e in (sl.elts if isinstance(sl, ast.Tuple) else [sl]))
    return ()


def _class_chain(node: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> list[ast.ClassDef]:
    """The class and its bases defined in this folder, most derived first (base excluded:
    its hooks are no-ops)."""
    chain = [node]
    for base in node.bases:
        name = _call_name(base)
        if name in classes and classes[name] is not node:
            chain.extend(_class_chain(classes[name], classes))
    return chain


# --------------------------------------------------------------------------- plugins
def load_plugin(ref: str) -> list[str]:
    """Load a plugin given as a file path (``path/to/file.py``) or ``module:attr`` /
    ``module``; return the names it registered. Loading the same reference twice is a no-op."""
    if ref in _LOADED_PLUGINS:
        return _LOADED_PLUGINS[ref]
    _scan_builtins()
    before = set(_REGISTRY)
    looks_like_path = ref.endswith(".py") or "/" in ref or "\\" in ref
    if looks_like_path:
        path = Path(ref).expanduser()
        if not path.is_file():
            raise PluginError(f"plugin {ref!r}: file not found (expected a path to a .py file)")
        path = path.resolve()
        key = hashlib.sha1(str(path).encode()).hexdigest()[:10]
        mod_name = f"harness_plugin_{path.stem}_{key}"
        if mod_name in sys.modules:
            return _LOADED_PLUGINS.setdefault(ref, [])
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise PluginError(f"plugin {ref!r}: not an importable Python file")
        module = importlib.util.module_from_spec(spec)
        module.__harness_plugin__ = str(path)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except HarnessError as exc:
            sys.modules.pop(mod_name, None)
            raise PluginError(f"plugin {ref!r}: {exc}") from None
        except BaseException as exc:  # noqa: BLE001 - any failure of foreign code is the plugin's
            sys.modules.pop(mod_name, None)
            raise PluginError(f"plugin {ref!r} failed to import: {type(exc).__name__}: {exc}") from None
    else:
        mod_name, _, attr = ref.partition(":")
        try:
            module = importlib.import_module(mod_name)
            if attr:
                obj = module
                for part in attr.split("."):
                    obj = getattr(obj, part)
        except HarnessError as exc:
            raise PluginError(f"plugin {ref!r}: {exc}") from None
        except AttributeError as exc:
            raise PluginError(f"plugin {ref!r}: {exc}") from None
        except BaseException as exc:  # noqa: BLE001
            raise PluginError(f"plugin {ref!r} failed to import: {type(exc).__name__}: {exc}") from None
    added = sorted(set(_REGISTRY) - before)
    if not added:
        if not looks_like_path and attr:
            registered = [n for n, i in _REGISTRY.items() if i.cls is not None and i.cls is obj]
            if registered:
                _LOADED_PLUGINS[ref] = registered
                return registered
        raise PluginError(
            f"plugin {ref!r} registered no encoding (expected a class decorated with "
            "@register_encoding(name))"
        )
    _LOADED_PLUGINS[ref] = added
    return added


def load_entry_points(*, strict: bool = True) -> None:
    """Load the installed packages' encodings (entry-point group ``harness.encodings``).
    With ``strict=False`` a broken one is recorded in ``BROKEN_PLUGINS`` and skipped."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    _scan_builtins()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except BaseException as exc:  # noqa: BLE001
            reason = f"{type(exc).__name__}: {exc}"
            BROKEN_PLUGINS[f"entry point {ep.name} ({ep.value})"] = reason
            if strict:
                raise PluginError(f"plugin entry point {ep.name!r} ({ep.value}) failed to load: {reason}") from None


def _reset_for_tests() -> None:
    """Forget entry points and plugins loaded so far (the test suite uses this)."""
    global _ENTRY_POINTS_LOADED
    _ENTRY_POINTS_LOADED = False
    BROKEN_PLUGINS.clear()


# --------------------------------------------------------------------------- formulas
_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Name, ast.Load, ast.Constant, ast.Add, ast.Sub,
            ast.Mult, ast.FloorDiv, ast.Div, ast.Pow, ast.Mod, ast.USub, ast.UAdd)


def _eval_formula(formula: str, names: dict[str, Any], encoding: str) -> float:
    tree = ast.parse(formula, mode="eval")
    for n in ast.walk(tree):
        if not isinstance(n, _ALLOWED):
            raise RegistryError(f"encoding {encoding!r}: param_count {formula!r} is not plain arithmetic")
        if isinstance(n, ast.Name) and n.id not in names:
            raise RegistryError(f"encoding {encoding!r}: param_count {formula!r} uses unknown name {n.id!r}")
    return eval(compile(tree, "<param_count>", "eval"), {"__builtins__": {}}, dict(names))  # noqa: S307
