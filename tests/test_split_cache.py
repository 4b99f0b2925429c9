"""The splits a study makes, kept on disk and shared by its processes (harness.data.cache, issue 20):
two processes never make one split twice, an interrupted or failed write leaves nothing a later
process trusts, a damaged file is made again, a split read back is bitwise the one made, and a
study's workers, ``harness evaluate`` and a re-run share them.

The counting dataset is a plugin file: every split it makes appends a line to a log file, so a
test counts what was made (in any process) by reading it."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from harness.data import DATASETS, build_dataset, load_dataset
from harness.data.cache import MAGIC
from harness.registry import load_plugin

COUNTED = '''
"""A test dataset that counts the splits it makes: each one appends a line to the file ``log``."""
import os
import time
import zlib
from dataclasses import dataclass

import torch

from harness.data import DatasetOptions, ImageDataset, Split, register_dataset


@register_dataset("counted")
class Counted(ImageDataset):
    """Seeded noise per (seed, split, size, regime); each split made is one line of ``log``."""

    regimes = ("zoom", "canvas")

    @dataclass(frozen=True)
    class Options(DatasetOptions):
        log: str = "counted.log"
        n: int = 8
        seed: int = 0
        slow: float = 0.0  # seconds each split takes to make

    def __init__(self, options):
        self.options = options
        self.num_classes, self.in_chans, self.classes = 2, 3, ["a", "b"]

    def _load(self, which, size, device):
        return self._make(which, size, "zoom", device)

    def _load_canvas(self, which, size, train_size, device):
        return self._make(which, size, f"canvas{train_size}", device)

    def _make(self, which, size, regime, device):
        with open(self.options.log, "a") as f:
            f.write(f"{os.getpid()} {which} {size.rows}x{size.cols} {regime}\\n")
        time.sleep(self.options.slow)
        tag = f"{self.options.seed} {which} {size.rows}x{size.cols} {regime}"
        g = torch.Generator().manual_seed(zlib.crc32(tag.encode()))
        images = torch.randn(self.options.n, 3, size.rows, size.cols, generator=g)
        return Split(images.to(device), (torch.arange(self.options.n) % 2).to(device))
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("plugin") / "counted.py"
    path.write_text(COUNTED)
    load_plugin(str(path))
    return str(path)


def made(log: Path) -> list[str]:
    """The splits made, as ``which RxC regime`` (the pid dropped)."""
    return [line.split(" ", 1)[1] for line in log.read_text().splitlines()] if log.exists() else []


def counted(log: Path, cache: Path | None, **options):
    """A fresh instance of the counting dataset (no split in memory), on disk in ``cache``."""
    return build_dataset("counted", log=str(log), **options).keep_splits_in(cache)


def same(a, b) -> bool:
    return a.images.dtype == b.images.dtype and a.labels.dtype == b.labels.dtype \
        and torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------ two processes
ASKS = [("train", 16, "zoom", None), ("val", 16, "zoom", None), ("test", 8, "zoom", None),
        ("test", (16, 24), "zoom", None), ("test", 24, "canvas", 16)]


def _ask_in_process(plugin: str, cache: str, options: dict, barrier, out) -> None:
    """A spawned process: build the dataset as a study's worker does, then ask every split of ASKS."""
    torch.set_num_threads(1)
    load_plugin(plugin)
    ds = load_dataset("counted", DATASETS.get("counted").Options(**options), cache)
    barrier.wait()  # both ask for the same split at the same moment
    digests = []
    for which, size, regime, train in ASKS:
        s = ds.split(which, size, regime=regime, train_size=train)
        digests.append(hashlib.sha256(s.images.numpy().tobytes() + s.labels.numpy().tobytes()).hexdigest())
    out.put((os.getpid(), digests))


def test_two_processes_never_make_one_split_twice(plugin, tmp_path):
    log, cache = tmp_path / "made.log", tmp_path / "cache"
    options = {"log": str(log), "slow": 0.3}  # slow: the second process asks while the first is making it
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_ask_in_process, args=(plugin, str(cache), options, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(got) == 2
    assert Counter(made(log)) == Counter(["train 16x16 zoom", "val 16x16 zoom", "test 8x8 zoom", "test 16x24 zoom",
                                          "test 24x24 canvas16"])  # each once, whichever process made it
    fresh = build_dataset("counted", **options)  # in memory, made here
    expected = [hashlib.sha256(s.images.numpy().tobytes() + s.labels.numpy().tobytes()).hexdigest()
                for s in (fresh.split(w, r, regime=g, train_size=t) for w, r, g, t in ASKS)]
    assert list(got.values()) == [expected, expected]
    assert not [f for f in files(cache) if f.endswith(".tmp")]


# ------------------------------------------------------------------------------ bitwise, keys
def test_a_split_read_back_is_bitwise_the_one_made_and_is_not_made_again(tmp_path, monkeypatch):
    from harness.data import rendered

    options = {"task": "relational8", "num_train": 24, "num_val": 8, "num_test": 8, "seed": 5}
    asks = [("train", 16, "zoom", None), ("test", (16, 24), "zoom", None), ("test", (24, 32), "canvas", 16),
            ("val", 16, "canvas", 16)]
    monkeypatch.chdir(tmp_path)
    fresh = build_dataset("rendered", **options)  # no folder: today's in-memory behaviour, nothing written
    reference = [fresh.split(w, r, regime=g, train_size=t) for w, r, g, t in asks]
    assert list(tmp_path.iterdir()) == []
    writer = build_dataset("rendered", **options).keep_splits_in(tmp_path / "cache")
    assert all(same(writer.split(w, r, regime=g, train_size=t), ref) for (w, r, g, t), ref in zip(asks, reference))
    monkeypatch.setattr(rendered, "render", lambda *a, **k: pytest.fail("rendered again"))
    reader = build_dataset("rendered", **options).keep_splits_in(tmp_path / "cache")
    for (w, r, g, t), ref in zip(asks, reference):
        got = reader.split(w, r, regime=g, train_size=t)
        assert same(got, ref) and got.images.dtype == torch.float32
    assert reader.split("train", 16) is reader.split("train", 16)  # and kept in memory once read


def test_each_option_size_regime_and_training_size_is_its_own_file(plugin, tmp_path):
    log, cache = tmp_path / "made.log", tmp_path / "cache"
    a = counted(log, cache)
    a.split("test", 16)
    a.split("test", (16, 24))
    a.split("test", 24, regime="canvas", train_size=16)
    a.split("test", 24, regime="canvas", train_size=24)  # a canvas of the training size: zoom's image, own key
    a.split("val", 16)
    b = counted(log, cache, seed=1)  # another option: another folder
    b.split("test", 16)
    folders = sorted(p.name for p in cache.iterdir())
    assert len(folders) == 2 and all(f.startswith("counted-") for f in folders)
    mine = next(f for f in folders if f.startswith("counted-") and (cache / f / "val-16x16-zoom-cpu.split").exists())
    assert sorted(p.name for p in (cache / mine).glob("*.split")) == [
        "test-16x16-zoom-cpu.split", "test-16x24-zoom-cpu.split", "test-24x24-canvas-t16-cpu.split",
        "test-24x24-canvas-t24-cpu.split", "val-16x16-zoom-cpu.split"]
    assert len(made(log)) == 6
    assert not same(counted(log, cache).split("test", 16), counted(log, cache, seed=1).split("test", 16))
    assert len(made(log)) == 6  # both read back


def test_the_real_image_datasets_are_served_and_a_changed_file_is_read_again(tmp_path):
    from harness.data.cache import dataset_digest

    options = DATASETS.get("imagefolder").example_options(tmp_path / "tree")
    cache = tmp_path / "cache"
    first = build_dataset("imagefolder", **options).keep_splits_in(cache).split("train", (12, 20))
    again = build_dataset("imagefolder", **options).keep_splits_in(cache)
    assert same(again.split("train", (12, 20)), first)
    assert same(first, build_dataset("imagefolder", **options).split("train", (12, 20)))
    image = sorted((tmp_path / "tree" / "class0").iterdir())[0]
    before = dataset_digest(build_dataset("imagefolder", **options))
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    changed = build_dataset("imagefolder", **options)
    assert dataset_digest(changed) != before
    changed.keep_splits_in(cache).split("train", (12, 20))
    assert len(list(cache.iterdir())) == 2  # read again, into a folder of its own


# ------------------------------------------------------------------------------ interruptions, damage
def _half_then(exc: BaseException):
    """An ``open`` for the cache module whose new files (mode "xb") write half of what they are
    given, then raise ``exc``: a writer interrupted (or out of space) mid-write."""
    real = open

    def fake(file, mode="r", *args, **kwargs):
        handle = real(file, mode, *args, **kwargs)
        if mode != "xb":
            return handle

        class Half:
            def __enter__(self):
                return self

            def __exit__(self, *a):
                handle.close()

            def write(self, data):
                view = memoryview(data).cast("B")
                if len(view) < 1000:
                    return handle.write(view)
                handle.write(view[: len(view) // 2])
                handle.flush()
                raise exc

        return Half()

    return fake


def test_an_exception_mid_write_leaves_nothing_trusted_and_no_tmp(plugin, tmp_path, monkeypatch):
    from harness.data import cache as cache_module

    log, cache = tmp_path / "made.log", tmp_path / "cache"
    monkeypatch.setattr(cache_module, "open", _half_then(KeyboardInterrupt()), raising=False)
    with pytest.raises(KeyboardInterrupt):
        counted(log, cache, n=64).split("train", 16)
    assert [f for f in files(cache) if not f.endswith(".lock")] == []  # no .tmp, no .split
    monkeypatch.undo()
    again = counted(log, cache, n=64).split("train", 16)
    assert made(log) == ["train 16x16 zoom"] * 2  # made again
    assert same(again, build_dataset("counted", log=str(log), n=64).split("train", 16))
    assert [f for f in files(cache) if not f.endswith(".lock")] == [f"{_folder(cache)}/train-16x16-zoom-cpu.split"]


KILLED_WRITER = '''
import sys, time
from harness.data import build_dataset, cache
from harness.registry import load_plugin

load_plugin(sys.argv[1])
real = open

def stalling(file, mode="r", *args, **kwargs):
    handle = real(file, mode, *args, **kwargs)
    if mode != "xb":
        return handle

    class Stall:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            handle.close()

        def write(self, data):
            view = memoryview(data).cast("B")
            if len(view) < 1000:
                return handle.write(view)
            handle.write(view[: len(view) // 2])
            handle.flush()
            print("writing", flush=True)
            time.sleep(120)  # killed here

    return Stall()

cache.open = stalling
build_dataset("counted", log=sys.argv[2], n=64).keep_splits_in(sys.argv[3]).split("train", 16)
'''


def test_a_writer_killed_mid_write_leaves_nothing_trusted(plugin, tmp_path):
    log, cache = tmp_path / "made.log", tmp_path / "cache"
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), plugin, str(log), str(cache)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "writing\n", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    folder = _folder(cache)
    left = [f for f in files(cache) if not f.endswith(".lock")]
    assert len(left) == 1 and left[0].startswith(f"{folder}/train-16x16-zoom-cpu.split.") and left[0].endswith(".tmp")
    again = counted(log, cache, n=64).split("train", 16)
    assert made(log) == ["train 16x16 zoom"] * 2  # the half-written file was not trusted
    assert same(again, build_dataset("counted", log=str(log), n=64).split("train", 16))
    assert [f for f in files(cache) if not f.endswith(".lock")] == [f"{folder}/train-16x16-zoom-cpu.split"]


def _folder(cache: Path) -> str:
    (folder,) = [p.name for p in cache.iterdir()]
    return folder


def _truncate(data: bytes) -> bytes:
    return data[:-100]


def _flip(data: bytes) -> bytes:
    i = len(data) - 1000  # in the images' bytes (the labels are the last 512)
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]


def _header(data: bytes) -> bytes:
    return data.replace(b'"rows": 16', b'"rows": 61', 1)


def _magic(data: bytes) -> bytes:
    return b"X" + data[1:]


@pytest.mark.parametrize("damage, why", [
    (_truncate, "{short} bytes, expected {full}"), (_flip, "checksum mismatch"), (_header, "written for another key"),
    (_magic, "not a split cache file"), (lambda data: b"", "not a split cache file"),
    ("other", "written for another key"),
])
def test_a_damaged_file_is_made_again_and_replaced(plugin, tmp_path, capsys, damage, why):
    log, cache = tmp_path / "made.log", tmp_path / "cache"
    good = counted(log, cache, n=64).split("train", 16)
    other = counted(log, cache, n=64).split("val", 16)
    path = cache / _folder(cache) / "train-16x16-zoom-cpu.split"
    full = path.stat().st_size
    if damage == "other":  # another key's whole, valid file under this name
        shutil.copy(path.with_name("val-16x16-zoom-cpu.split"), path)
    else:
        path.write_bytes(damage(path.read_bytes()))
    capsys.readouterr()
    again = counted(log, cache, n=64).split("train", 16)
    assert same(again, good) and not same(again, other)
    assert made(log) == ["train 16x16 zoom", "val 16x16 zoom", "train 16x16 zoom"]
    why = why.format(short=full - 100, full=full)
    assert capsys.readouterr().err == f"warning: split cache file {path} is damaged ({why}): made again\n"
    assert path.read_bytes().startswith(MAGIC)
    assert same(counted(log, cache, n=64).split("train", 16), good) and len(made(log)) == 3  # replaced: read back


# ------------------------------------------------------------------------------ a full disk
def test_a_failed_write_warns_once_and_goes_on_in_memory(plugin, tmp_path, monkeypatch, capsys):
    import errno

    from harness.data import cache as cache_module

    log, cache = tmp_path / "made.log", tmp_path / "cache"
    counted(log, cache, n=64).split("val", 16)  # written before the disk filled up
    monkeypatch.setattr(cache_module, "open", _half_then(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))),
                        raising=False)
    ds = counted(log, cache, n=64)
    capsys.readouterr()
    splits = [ds.split("train", 16), ds.split("test", 8), ds.split("val", 16)]
    assert capsys.readouterr().err == (f"warning: cannot write the split cache in {cache} (no space left on device): "
                                       "this process keeps its splits in memory only\n")  # once
    fresh = build_dataset("counted", log=str(log), n=64)
    assert all(same(s, fresh.split(w, r)) for s, (w, r) in zip(splits, [("train", 16), ("test", 8), ("val", 16)]))
    assert made(log)[:3] == ["val 16x16 zoom", "train 16x16 zoom", "test 8x8 zoom"]  # val: still read
    assert [f for f in files(cache) if not f.endswith(".lock")] == [f"{_folder(cache)}/val-16x16-zoom-cpu.split"]


FILE_SIZE_LIMIT = '''
import resource, sys, torch
from harness.data import build_dataset
from harness.registry import load_plugin

load_plugin(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # the split is 786 kB: EFBIG (SIGXFSZ is ignored)
split = build_dataset("counted", log=sys.argv[2], n=64, seed=3).keep_splits_in(sys.argv[3]).split("train", 32)
torch.save(split.images[:2].clone(), sys.argv[4])
print("trained on", len(split))
'''


def test_a_file_size_limit_on_the_cache_does_not_stop_the_process(plugin, tmp_path):
    log, cache = tmp_path / "made.log", tmp_path / "cache"
    script = tmp_path / "limited.py"
    script.write_text(FILE_SIZE_LIMIT)
    r = subprocess.run([sys.executable, str(script), plugin, str(log), str(cache), str(tmp_path / "first.pt")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == "trained on 64\n", r.stderr[-2000:]
    assert r.stderr == (f"warning: cannot write the split cache in {cache} (file too large): this process keeps its "
                        "splits in memory only\n")
    assert [f for f in files(cache) if not f.endswith(".lock")] == []  # no .tmp, no partial file
    expected = build_dataset("counted", log=str(log), n=64, seed=3).split("train", 32).images[:2]
    assert torch.equal(torch.load(tmp_path / "first.pt", weights_only=True), expected)


# ------------------------------------------------------------------------------ a study
STUDY = """\
name: cached
dataset: {{name: counted, log: {log}, n: 64, slow: 0.5}}
model: {{preset: tiny}}
train: {{epochs: 1, batch_size: 16, device: cpu}}
encodings: [none]
train_resolutions: [16]
test_resolutions: [8, 16]
regimes: [zoom, canvas]
seeds: [0, 1]
plugins: [{plugin}]
workers: 2
"""


@pytest.mark.slow
def test_a_two_worker_study_and_evaluate_share_the_splits(plugin, tmp_path):
    log = tmp_path / "made.log"
    spec = tmp_path / "cached.yaml"
    spec.write_text(STUDY.format(log=log, plugin=plugin))
    r = subprocess.run([sys.executable, "-m", "harness", "run", str(spec), "--no-report"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert Counter(made(log)) == Counter(["train 16x16 zoom", "val 16x16 zoom", "test 8x8 zoom", "test 16x16 zoom",
                                          "test 16x16 canvas16"])  # once each, for both cells
    run_dir = tmp_path / "runs" / "cached"
    assert [f for f in files(run_dir / "cache") if f.endswith(".split")]
    # another process, later: only the new test size is made, the rest is read from the study's cache
    r = subprocess.run([sys.executable, "-m", "harness", "evaluate", str(spec), "--set",
                        "test_resolutions=[8, 12, 16]"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert made(log)[5:] == ["test 12x12 zoom"]
    assert not [f for f in files(run_dir) if f.endswith(".tmp")]
    shutil.rmtree(run_dir)  # the study's folder holds the cache: nothing of it is left elsewhere
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".split", ".lock", ".tmp")]


def test_a_study_keeps_its_splits_under_its_own_folder(plugin, tmp_path):
    from harness.spec import load_spec
    from harness.trial import dataset_of

    spec = tmp_path / "cached.yaml"
    spec.write_text(STUDY.format(log=tmp_path / "made.log", plugin=plugin))
    loaded = load_spec(spec, [f"output={tmp_path / 'out'}"])
    ds = dataset_of(loaded)
    assert dataset_of(loaded) is ds and not (tmp_path / "out").exists()  # building it writes nothing
    ds.split("val", 8)
    written = files(tmp_path / "out")
    assert [Path(f).name for f in written if f.endswith(".split")] == ["val-8x8-zoom-cpu.split"]
    assert all(f.startswith("cached/cache/counted-") for f in written)
    assert dataset_of(loaded, cache=False) is not ds
