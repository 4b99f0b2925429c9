"""The splits of a dataset kept on disk, so that the processes of a study render (or load and
resize) each split once between them.

A study's worker processes each build the dataset (``load_dataset``) and would each render
every split they train and test on; ``harness evaluate`` and a re-run would render them again.
With a folder (``dataset_of`` gives the study's ``output/<name>/cache``, so deleting the study
deletes it), :meth:`ImageDataset.split <harness.data.base.ImageDataset.split>` goes through a
:class:`SplitCache`: one file per split, under a folder per dataset::

    cache/<registered name>-<digest>/<split>-<rows>x<cols>-<regime>[-t<train size>]-<device type>.split

The digest (:func:`dataset_digest`) covers what decides the images: the dataset's registered
name and class, its options, its ``cache_token`` (the files a dataset reads: changed files are
read again), the source files of its code (its class's module and bases; every module of their
package when it is one, like ``harness.data``: a fix to the renderer is never served stale
images) and the torch version. The device type is part of the key: a split made on a GPU is
bitwise what that GPU makes, which may differ in the last bits from what the CPU makes.

One process makes a split while the others wait: an exclusive ``flock`` per key
(``<file>.lock``, left in place: removing a lock file others may hold is a race). A file is
written whole to ``<file>.<pid>.<random>.tmp`` and renamed into place (``os.replace``), so a
reader finds no file or a whole one, and is read without the lock. It is trusted only when
everything checks: the magic line, the header (the key, dtypes and shapes, a CRC-32 of the
data), the file size, the checksum; anything else (a truncated file, a flipped bit, another
key's file) is said in one warning and made and written again. A writer killed mid-write
leaves its ``.tmp``: the next process to take that key's lock removes it. A write that fails
(a full disk, a quota, a file size limit) warns once and the process goes on in memory (the
tensors it made are returned as they are); it writes nothing more, and still reads what is
there. A split read back is bitwise the one written (its bytes, its dtype, its shape).

Format: ``harness-split 1\\n``, the header's length (8 bytes, little-endian), the header (JSON),
then the images' and the labels' bytes, C order, native (little-endian) byte order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import secrets
import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from harness.data.split import Split
from harness.errors import os_reason
from harness.files import exclusive_lock
from harness.schema import Size

if TYPE_CHECKING:  # this module does not import the dataset interface: it uses this module
    from harness.data.base import ImageDataset

__all__ = ["MAGIC", "SplitCache", "dataset_digest"]

MAGIC = b"harness-split 1\n"
_LENGTH = struct.Struct("<Q")
_DTYPES = {str(t).removeprefix("torch."): t for t in (torch.float32, torch.float64, torch.float16, torch.bfloat16,
                                                        torch.int64, torch.int32, torch.int16, torch.int8,
                                                        torch.uint8, torch.bool)}


class _Damaged(Exception):
    """A cache file that cannot be trusted; the message says why."""


class SplitCache:
    """The on-disk splits of one dataset under ``folder`` (see the module's docstring).
    :meth:`get` returns a split from its file, or makes it (``make``) and writes it."""

    def __init__(self, folder: Path, dataset: ImageDataset) -> None:
        self.root = Path(folder)
        self.dataset = dataset
        self.writable = True  # False after a failed write: the process goes on in memory

    @functools.cached_property
    def folder(self) -> Path:
        """This dataset's folder, ``<root>/<registered name>-<digest>`` (the digest computed on
        first use: a dataset read from files looks at them then, not when it is built)."""
        return self.root / f"{_registered(type(self.dataset))}-{dataset_digest(self.dataset)[:16]}"

    def get(self, which: str, size: Size, regime: str, train_size: int | None, device: torch.device,
            make: Callable[[], Split]) -> Split:
        """Split ``which`` at ``size`` in ``regime`` on ``device``: read from its file when a
        whole, checked one is there, else made by ``make`` (one process at a time per key) and
        written for the others."""
        key = {"dataset": _registered(type(self.dataset)), "digest": dataset_digest(self.dataset), "split": which,
               "rows": size.rows, "cols": size.cols, "regime": regime, "train_size": train_size,
               "device": device.type}
        name = f"{which}-{size.rows}x{size.cols}-{regime}" + (f"-t{train_size}" if regime != "zoom" else "")
        path = self.folder / f"{name}-{device.type}.split"
        with contextlib.suppress(_Damaged):  # the lock-free path: a file there was renamed into place whole
            split = _read(path, key)
            if split is not None:
                return _on(split, device)
        if not self.writable:
            return make()
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(exclusive_lock(path.with_name(path.name + ".lock")))
            except OSError as exc:  # the folder or the lock file cannot be made (a full disk, no permission)
                self._give_up(exc)
                return make()
            _sweep(path)  # left by a process that died mid-write: no one else writes this key now
            try:
                split = _read(path, key)  # made while this process waited for the lock
            except _Damaged as why:
                print(f"warning: split cache file {path} is damaged ({why}): made again", file=sys.stderr, flush=True)
                split = None
            if split is not None:
                return _on(split, device)
            split = make()
            try:
                _write(path, key, split)
            except OSError as exc:
                self._give_up(exc)
        return split

    def _give_up(self, exc: OSError) -> None:
        """A write failed: say so once, and write nothing more in this process."""
        self.writable = False
        print(f"warning: cannot write the split cache in {self.root} ({os_reason(exc)}): this process keeps "
              "its splits in memory only", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ the key
def dataset_digest(dataset: ImageDataset) -> str:
    """A hex digest of what decides the images of ``dataset``: its registered name and class,
    its options, its ``cache_token()``, its code (:func:`_code_digest`) and the torch version.
    Computed once per dataset instance."""
    digest = dataset.__dict__.get("_cache_digest")
    if digest is None:
        cls = type(dataset)
        options = getattr(dataset, "options", None)
        identity = {
            "dataset": _registered(cls), "class": f"{cls.__module__}.{cls.__qualname__}",
            "options": dataclasses.asdict(options) if dataclasses.is_dataclass(options) else options,
            "token": dataset.cache_token(), "code": _code_digest(cls), "torch": torch.__version__,
        }
        text = json.dumps(identity, sort_keys=True, default=str)
        digest = dataset.__dict__["_cache_digest"] = hashlib.sha256(text.encode()).hexdigest()
    return digest


def _registered(cls: type) -> str:
    """The name ``cls`` is registered under (its class name if it is not): an identifier."""
    name = getattr(cls, "name", None)
    return name if isinstance(name, str) and name.isidentifier() else cls.__name__


@functools.cache
def _code_digest(cls: type) -> str:
    """A digest of the source files of ``cls`` and its dataset bases: each one's module file,
    and every module file of its package when it is in one (``harness/data/*.py`` for the
    built-ins: the renderer's shapes live beside it). A plugin file is its own file."""
    files: set[Path] = set()
    for c in cls.__mro__:
        if not callable(getattr(c, "keep_splits_in", None)):  # not a dataset class (ImageDataset or a subclass)
            continue
        source = getattr(sys.modules.get(c.__module__), "__file__", None)
        if not source:
            continue
        path = Path(source).resolve()
        if "." in c.__module__ and (path.parent / "__init__.py").is_file():
            files.update(path.parent.glob("*.py"))
        else:
            files.add(path)
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(path.name.encode() + b"\0")
        with contextlib.suppress(OSError):
            h.update(path.read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------ the files
def _read(path: Path, key: dict[str, Any]) -> Split | None:
    """The split in ``path`` (CPU tensors), None when there is no file; :class:`_Damaged` when
    anything in it does not check."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _Damaged(os_reason(exc)) from None
    try:
        with f:
            if f.read(len(MAGIC)) != MAGIC:
                raise _Damaged("not a split cache file")
            head = f.read(_LENGTH.size)
            if len(head) != _LENGTH.size:
                raise _Damaged("truncated")
            (length,) = _LENGTH.unpack(head)
            size = os.fstat(f.fileno()).st_size
            if length > size:
                raise _Damaged("truncated")
            try:
                header = json.loads(f.read(length))
                images_meta, labels_meta, crc = header["images"], header["labels"], header["crc32"]
                found = header["key"]
            except (ValueError, TypeError, KeyError) as exc:
                raise _Damaged(f"unreadable header: {type(exc).__name__}") from None
            if found != key:
                raise _Damaged("written for another key")
            images, labels = _empty(images_meta), _empty(labels_meta)
            if images.dim() != 4 or tuple(images.shape[2:]) != (key["rows"], key["cols"]) \
                    or tuple(labels.shape) != (images.shape[0],):
                raise _Damaged(f"images {tuple(images.shape)} and labels {tuple(labels.shape)} do not fit "
                               f"{key['rows']}x{key['cols']}")
            data = _nbytes(images) + _nbytes(labels)
            if size != len(MAGIC) + _LENGTH.size + length + data:
                raise _Damaged(f"{size} bytes, expected {len(MAGIC) + _LENGTH.size + length + data}")
            for t in (images, labels):
                view = _bytes(t)
                if f.readinto(view) != len(view):
                    raise _Damaged("truncated")
    except OSError as exc:  # an I/O error reading it
        raise _Damaged(os_reason(exc)) from None
    if _crc(images, labels) != crc:
        raise _Damaged("checksum mismatch")
    return Split(images, labels)


def _write(path: Path, key: dict[str, Any], split: Split) -> None:
    """Write ``split`` to ``path`` through a ``.tmp`` of its own and a rename; a failed write
    (an ``OSError``, or an interruption) removes the ``.tmp`` and raises. A split that does not
    fit its key (images not N x C x rows x cols, labels not N; the conformance kit refuses such a
    dataset), or of a dtype outside ``_DTYPES``, is not written: it could never be read back."""
    images, labels = _plain(split.images), _plain(split.labels)
    if _meta(images)["dtype"] not in _DTYPES or _meta(labels)["dtype"] not in _DTYPES or images.dim() != 4 \
            or tuple(images.shape[2:]) != (key["rows"], key["cols"]) or tuple(labels.shape) != (images.shape[0],):
        return
    header = json.dumps({"key": key, "images": _meta(images), "labels": _meta(labels),
                         "crc32": _crc(images, labels)}, sort_keys=True).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(MAGIC + _LENGTH.pack(len(header)) + header)
            f.write(_bytes(images))
            f.write(_bytes(labels))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # no partial file left behind (and the space it took back)
        raise


def _sweep(path: Path) -> None:
    """Remove the ``.tmp`` files of ``path``'s writers that died (the caller holds its lock)."""
    with contextlib.suppress(OSError):
        for stale in path.parent.glob(f"{_glob_escape(path.name)}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _plain(t: torch.Tensor) -> torch.Tensor:
    """``t`` on the CPU, contiguous (its bytes in C order)."""
    return t.detach().to("cpu").contiguous()


def _meta(t: torch.Tensor) -> dict[str, Any]:
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape)}


def _empty(meta: Any) -> torch.Tensor:
    """A tensor of the header's dtype and shape, to read the data into."""
    try:
        dtype, shape = _DTYPES[meta["dtype"]], [int(n) for n in meta["shape"]]
    except (KeyError, TypeError, ValueError):
        raise _Damaged("unreadable header: a tensor's dtype or shape") from None
    if any(n < 0 for n in shape) or len(shape) > 8:
        raise _Damaged(f"unreadable header: shape {shape}")
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize > 1 << 44:  # a damaged shape; the file size check would refuse it anyway
        raise _Damaged(f"unreadable header: shape {shape}")
    return torch.empty(shape, dtype=dtype)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _bytes(t: torch.Tensor) -> memoryview:
    """The bytes of a contiguous CPU tensor, as a writable buffer over its memory."""
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()).cast("B")


def _crc(images: torch.Tensor, labels: torch.Tensor) -> int:
    return zlib.crc32(_bytes(labels), zlib.crc32(_bytes(images)))


def _on(split: Split, device: torch.device) -> Split:
    return split if device.type == "cpu" else Split(split.images.to(device), split.labels.to(device))
