"""One registry type for everything a researcher adds: encodings, datasets, report figures.

A :class:`Registry` maps names to classes (or functions). It checks what is registered
against a base class (or that it is callable), refuses a second object under a taken name,
answers an unknown name with the known ones and the nearest match, imports its built-in
modules on first use (every module of one package whose name does not start with ``_``),
and loads the installed packages that declare an entry point in its group.

Plugins are one file or one module: :func:`load_plugin` imports a ``.py`` path or a
``module[:attr]`` reference and reports what it added to any registry, so one plugin file
may add an encoding, a dataset and a figure at once.

Torch-free: the registries of torch modules import those modules only when first asked, and a
registry told what its built-in modules register (``declared``: the encodings' catalog) answers
``in`` and ``names`` without importing them at all.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from harness.errors import HarnessError, did_you_mean

__all__ = ["LISTING_TIMEOUT_S", "PluginError", "Registry", "RegistryError", "call_bounded", "load_entry_points",
           "load_plugin", "param_count", "registries"]

T = TypeVar("T")


class RegistryError(HarnessError):
    """Unknown or duplicate name in a registry."""


class PluginError(HarnessError):
    """A plugin could not be found, imported, or registered nothing."""


_ALL: dict[str, "Registry[Any]"] = {}


def registries() -> dict[str, "Registry[Any]"]:
    """Every registry, by kind ("encoding", "dataset", "figure", ...)."""
    return dict(_ALL)


class Registry(Generic[T]):
    """Names to registered objects of one kind.

    ``kind``: what the objects are, in messages ("encoding"). ``base``: a class every
    registered class must subclass, or its ``"module:Name"`` (imported at the first
    registration: a torch class stays unimported until then); None: any callable.
    ``builtins``: the package whose public modules hold the built-in entries. ``group``: the
    entry-point group of plugins. ``exclude``: modules of ``builtins`` that register nothing.
    ``declared``: the names the built-in modules register, each with its module
    (``{"rope_axial": "rope_axial"}``); while every built-in module is declared, ``in`` and
    :meth:`names` answer from it without importing the modules (:meth:`get` imports them).
    """

    def __init__(self, kind: str, *, base: type | str | None = None, builtins: str | None = None,
                 group: str | None = None, exclude: Iterable[str] = (),
                 declared: Mapping[str, str] | None = None) -> None:
        if kind in _ALL:
            raise RegistryError(f"a registry of {kind}s exists already")
        self.kind = kind
        self._base = base
        self.builtins = builtins
        self.group = group
        self.exclude = set(exclude)
        self.declared = dict(declared or {})
        self._covered: bool | None = None  # whether every built-in module is declared (asked once)
        self._entries: dict[str, T] = {}
        self._sources: dict[str, str] = {}
        self._builtins_loaded = False
        self._entry_points_loaded = False
        #: entry points that failed to load: reference -> reason (listings show them, never raise)
        self.broken: dict[str, str] = {}
        _ALL[kind] = self

    @property
    def base(self) -> type | None:
        """The class every entry subclasses (imported on first use when given as ``"module:Name"``)."""
        if isinstance(self._base, str):
            module, _, name = self._base.partition(":")
            self._base = getattr(importlib.import_module(module), name)
        return self._base

    # ------------------------------------------------------------------ registration
    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register a class or function under ``name``."""
        if not isinstance(name, str) or not name.isidentifier():
            raise RegistryError(f"{self.kind} name {name!r} must be a Python identifier (letters, digits, _)")

        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T) -> None:
        if name in self.declared and not self._builtins_loaded \
                and getattr(obj, "__module__", None) != f"{self.builtins}.{self.declared[name]}":
            self.load_builtins()  # a declared name taken by another module: refused as a duplicate, as ever
        if self.base is not None and not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise RegistryError(f"{self.kind} {name!r}: {_qualname(obj)} must be a subclass of "
                                f"{self.base.__module__}.{self.base.__qualname__}")
        if self.base is None and not callable(obj):
            raise RegistryError(f"{self.kind} {name!r}: {obj!r} is not callable")
        old = self._entries.get(name)
        if old is not None and _qualname(old) != _qualname(obj):
            raise RegistryError(
                f"{self.kind} name {name!r} is already registered by {self._sources[name]} ({_qualname(old)}); "
                f"{_source_of(obj)} ({_qualname(obj)}) must use another name"
            )
        if isinstance(obj, type):
            obj.name = name  # type: ignore[attr-defined]
        self._entries[name] = obj
        self._sources.setdefault(name, _source_of(obj))

    # ------------------------------------------------------------------ look-up
    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name lists the known ones."""
        if name in self.declared or not self.all_declared():  # else an undeclared name is no built-in's
            self.load_builtins()
        if name not in self._entries:
            self.load_entry_points(strict=False)
        if name not in self._entries:
            known = self.names()
            raise RegistryError(f"unknown {self.kind} {name!r}{did_you_mean(name, known, cutoff=0.5)} "
                                f"Known {self.kind}s: {', '.join(known)}")
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        if not self.all_declared():
            self.load_builtins()
        return name in self._entries or name in self.declared

    def names(self, *, entry_points: bool = True) -> list[str]:
        """Every registered name (built-ins, loaded plugins, installed entry points), sorted."""
        if not self.all_declared():
            self.load_builtins()
        if entry_points:
            self.load_entry_points(strict=False)
        return sorted(set(self._entries) | set(self.declared))

    def items(self, *, entry_points: bool = True) -> list[tuple[str, T]]:
        self.load_builtins()  # the objects themselves
        return [(n, self._entries[n]) for n in self.names(entry_points=entry_points)]

    def source(self, name: str) -> str:
        """Where ``name`` came from: "built-in", a file path, "module:attr"."""
        self.get(name)
        return self._sources[name]

    # ------------------------------------------------------------------ discovery
    def builtin_modules(self) -> list[str]:
        """The modules of ``builtins`` that may register entries (listed, not imported)."""
        if self.builtins is None:
            return []
        package = importlib.import_module(self.builtins)
        return [m.name for m in pkgutil.iter_modules(package.__path__)
                if not m.name.startswith("_") and m.name not in self.exclude]

    def all_declared(self) -> bool:
        """Whether ``declared`` names every built-in module (a file dropped into the package
        without a declaration is not: its names are known only once it is imported)."""
        if self._covered is None:
            self._covered = bool(self.declared) and set(self.builtin_modules()) <= set(self.declared.values())
        return self._covered

    def load_builtins(self) -> None:
        if self._builtins_loaded or self.builtins is None:
            return
        self._builtins_loaded = True
        for name in self.builtin_modules():
            importlib.import_module(f"{self.builtins}.{name}")

    def load_entry_points(self, *, strict: bool = True) -> None:
        """Load the installed packages' entries (entry-point group ``self.group``). With
        ``strict=False`` a broken one is recorded in ``self.broken`` and skipped."""
        if self._entry_points_loaded or self.group is None:
            return
        self._entry_points_loaded = True
        if not self.all_declared():  # else a declared name an entry point takes loads them (add)
            self.load_builtins()
        import importlib.metadata  # a tenth of a second: only when plugins are looked for

        for ep in importlib.metadata.entry_points(group=self.group):
            try:
                ep.load()
            except BaseException as exc:  # noqa: BLE001 - any failure of foreign code is the plugin's
                reason = f"{type(exc).__name__}: {exc}"
                self.broken[f"entry point {ep.name} ({ep.value})"] = reason
                if strict:
                    raise PluginError(f"plugin entry point {ep.name!r} ({ep.value}) failed to load: {reason}"
                                      ) from None

    def forget_entry_points(self) -> None:
        """Load entry points again on the next look-up (tests install packages on the fly)."""
        self._entry_points_loaded = False
        self.broken.clear()


#: seconds a listing waits for one plugin's answer (its class description, its parameter count)
LISTING_TIMEOUT_S = 5.0


def call_bounded(fn: Callable[[], T], seconds: float, what: str) -> T:
    """``fn()``, given up after ``seconds`` with a :class:`TimeoutError` naming ``what``: a
    listing calls plugin code (``describe``, ``num_trainable``) that may never return (a
    parameter count of ``9**9**9**9``). Bounded with ``SIGALRM``, which interrupts even one long
    integer operation; in another thread, or under a timer already running, ``fn()`` is called
    as it is."""
    import signal
    import threading

    if (threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer")
            or signal.getitimer(signal.ITIMER_REAL)[0] > 0):
        return fn()

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{what}: no answer within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def param_count(cls: Any, dims: Any, seconds: float = LISTING_TIMEOUT_S) -> str:
    """The trainable parameters of encoding class ``cls`` built for ``dims``, as the listing
    prints them (``12,345``); a count that takes longer than ``seconds`` (:class:`TimeoutError`)
    or is not a plausible count (:class:`ValueError`) is the plugin's failure."""
    n = call_bounded(lambda: cls(dims).num_trainable(), seconds, "counting its trainable parameters")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 10**15:
        raise ValueError(f"num_trainable() returned {type(n).__name__} "
                         f"{n if isinstance(n, int) and n.bit_length() < 64 else '(not a plausible count)'}")
    return f"{n:,}"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _source_of(obj: Any) -> str:
    mod = sys.modules.get(getattr(obj, "__module__", ""), None)
    plugin = getattr(mod, "__harness_plugin__", None)
    if plugin:
        return plugin
    if obj.__module__.partition(".")[0] == "harness":  # the harness's own modules (plugins load under other names)
        return "built-in"
    return f"{obj.__module__}:{obj.__qualname__}"


def load_entry_points(*, strict: bool = True) -> None:
    """Load every registry's entry points."""
    for reg in _ALL.values():
        reg.load_entry_points(strict=strict)


# --------------------------------------------------------------------------- plugins
_LOADED_PLUGINS: dict[str, list[str]] = {}


def _snapshot() -> dict[str, dict[str, Any]]:
    for reg in _ALL.values():
        reg.load_builtins()
    return {kind: dict(reg._entries) for kind, reg in _ALL.items()}


def load_plugin(ref: str) -> list[str]:
    """Load a plugin given as a file path (``path/to/file.py``) or ``module[:attr]``; return
    what it registered, as ``"kind name"`` strings. Loading the same reference twice is a no-op."""
    if ref in _LOADED_PLUGINS:
        return _LOADED_PLUGINS[ref]
    before = _snapshot()
    obj = None
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
        module.__harness_plugin__ = str(path)  # type: ignore[attr-defined]
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:  # noqa: BLE001 - any failure of foreign code is the plugin's
            sys.modules.pop(mod_name, None)
            _forget_added(before)
            raise _plugin_error(ref, exc) from None
    else:
        mod_name, _, attr = ref.partition(":")
        try:
            obj = importlib.import_module(mod_name)
            for part in attr.split(".") if attr else ():
                obj = getattr(obj, part)
        except BaseException as exc:  # noqa: BLE001
            raise _plugin_error(ref, exc) from None
    after = _snapshot()
    # a registry the plugin's own import created loads its built-ins then: they are not the plugin's
    added = [f"{kind} {name}" for kind, entries in after.items() for name in sorted(entries)
             if name not in before.get(kind, {}) and _ALL[kind]._sources[name] != "built-in"]
    if not added and obj is not None:  # module:attr naming something registered before
        added = [f"{kind} {name}" for kind, entries in after.items() for name, o in entries.items() if o is obj]
    if not added:
        kinds = ", ".join(f"@register_{k}(name)" for k in _ALL)
        raise PluginError(f"plugin {ref!r} registered no encoding, dataset or figure (expected a class or "
                          f"function decorated with one of {kinds})")
    _LOADED_PLUGINS[ref] = added
    return added


def _plugin_error(ref: str, exc: BaseException) -> PluginError:
    if isinstance(exc, (HarnessError, AttributeError)):
        return PluginError(f"plugin {ref!r}: {exc}")
    return PluginError(f"plugin {ref!r} failed to import: {type(exc).__name__}: {exc}")


def _forget_added(before: dict[str, dict[str, Any]]) -> None:
    """Undo the registrations of a plugin file that failed half-way."""
    for kind, reg in _ALL.items():
        for name in set(reg._entries) - set(before.get(kind, {})):
            del reg._entries[name]
            reg._sources.pop(name, None)
