"""The fashion_mnist dataset (issue #22): the idx reader against the format's definition, the
real files of Debian's dataset-fashion-mnist, the stratified carve-out, both regimes, every error
path one line naming the file, and a one-channel study from spec to trained model."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data import build_dataset
from harness.data import fashion_mnist as fm
from harness.data.conformance import check_all
from harness.errors import DataError
from tests.helpers import cli, one_line_error

NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
ROOT = Path(__file__).resolve().parents[1]
REAL = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's training pixel statistics, as the dataset states them


# ------------------------------------------------------------------------------ files, from the definition
def idx(array: np.ndarray, magic: int | None = None, count: int | None = None) -> bytes:
    """An idx file of unsigned bytes, written from the format's definition: 0x00 0x00, the type
    0x08, the number of dimensions, each dimension a big-endian uint32, the bytes row-major.
    ``magic`` and ``count`` (the first dimension) replace the true ones, to break a file."""
    dims = list(array.shape)
    if count is not None:
        dims[0] = count
    head = bytes([0, 0, 0x08, array.ndim]) if magic is None else magic.to_bytes(4, "big")
    return head + b"".join(d.to_bytes(4, "big") for d in dims) + array.astype(np.uint8).tobytes()


def articles(labels: np.ndarray, seed: int) -> np.ndarray:
    """(N, 28, 28) uint8: a random bright block (the article) on a background of 0, distinct per image."""
    rng = np.random.default_rng(seed)
    images = np.zeros((len(labels), 28, 28), dtype=np.uint8)
    images[:, 3:25, 5:23] = rng.integers(1, 256, (len(labels), 22, 18), dtype=np.uint8)
    return images


def write_copy(folder: Path, per_class=(12, 4), gz: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """The four files in ``folder`` (gzipped or not): ``per_class`` training and test images per
    class, labels in a shuffled order. Returns the arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for (which, (images_name, labels_name)), n in zip(NAMES.items(), per_class):
        labels = rng.permutation(np.repeat(np.arange(10), n)).astype(np.uint8)
        images = articles(labels, seed + len(arrays))
        for array, name in ((images, images_name), (labels, labels_name)):
            data = idx(array)
            (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
        arrays[f"{which}_images"], arrays[f"{which}_labels"] = images, labels
    return arrays


def real_root() -> Path:
    """Debian's files; the test set-up installs the package when it is missing and we are root.
    Missing: skipped, and under CI a failure (.ci/run installs it)."""
    files = [REAL / f"{n}.gz" for pair in NAMES.values() for n in pair]
    if not all(f.is_file() for f in files) and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], capture_output=True, env=env,
                       timeout=900)
    if not all(f.is_file() for f in files):
        if os.environ.get("CI"):
            pytest.fail("Fashion-MNIST is not installed (.ci/run installs Debian's dataset-fashion-mnist)")
        pytest.skip("Fashion-MNIST is not installed here (apt-get install dataset-fashion-mnist)")
    return REAL


def raw_real(name: str) -> np.ndarray:
    """A real file's body, read by the Debian package's own recipe (utils/mnist_reader.py): skip
    the header (16 bytes for images, 8 for labels)."""
    data = gzip.decompress((REAL / f"{name}.gz").read_bytes())
    return np.frombuffer(data, dtype=np.uint8, offset=16 if "images" in name else 8)


def normalised(raw: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(raw.astype(np.float32)) / 255 - MEAN) / STD


def fingerprints(images: torch.Tensor) -> list[str]:
    return [hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in images]


# ------------------------------------------------------------------------------ the reader
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_follows_the_format(tmp_path, gz):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = (np.arange(258) % 10).astype(np.uint8)  # 258 = 0x00000102: little-endian would read 0x02010000
    for name, array in (("images", images), ("labels", labels)):
        data = idx(array)
        (tmp_path / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    got = fm.read_idx(tmp_path / ("images" + (".gz" if gz else "")), 3)
    assert got.dtype == np.uint8 and got.shape == (2, 3, 4) and got[1, 2, 3] == 23 and got[0, 1, 0] == 4  # row-major
    got = fm.read_idx(tmp_path / ("labels" + (".gz" if gz else "")), 1)
    assert got.shape == (258,) and np.array_equal(got, labels)


def test_the_real_files_are_what_the_format_and_the_release_say():
    root = real_root()
    head = gzip.decompress((root / "train-images-idx3-ubyte.gz").read_bytes())[:16]
    assert struct.unpack(">4I", head) == (0x00000803, 60000, 28, 28)
    images = fm.read_idx(root / "train-images-idx3-ubyte.gz", 3)
    assert images.shape == (60000, 28, 28) and np.array_equal(images.reshape(-1), raw_real("train-images-idx3-ubyte"))
    for name, per_class in (("train-labels-idx1-ubyte", 6000), ("t10k-labels-idx1-ubyte", 1000)):
        labels = fm.read_idx(root / f"{name}.gz", 1)
        assert np.array_equal(labels, raw_real(name)) and np.bincount(labels).tolist() == [per_class] * 10
    pixels = images.astype(np.float64) / 255
    assert round(pixels.mean(), 4) == MEAN == fm.MEAN and round(pixels.std(), 4) == STD == fm.STD
    assert fm.BACKGROUND == pytest.approx(-MEAN / STD, abs=1e-6)


# ------------------------------------------------------------------------------ splits
def test_the_carve_out_is_stratified_disjoint_and_seeded():
    root = real_root()
    raw = raw_real("train-images-idx3-ubyte").reshape(-1, 28, 28)
    assert len({hashlib.sha1(x.tobytes()).hexdigest() for x in raw}) == 60000  # no duplicates: images identify

    ds = build_dataset("fashion_mnist", root=str(root), num_val=600, num_train=1200, num_test=500, seed=0)
    assert ds.in_chans == 1 and ds.num_classes == 10 and ds.classes[0] == "T-shirt/top" and ds.chance == 0.1
    splits = {w: ds.split(w, 28) for w in ("train", "val", "test")}
    for which, per_class in (("train", 120), ("val", 60), ("test", 50)):
        assert torch.bincount(splits[which].labels, minlength=10).tolist() == [per_class] * 10, which
    train, val = set(fingerprints(splits["train"].images)), set(fingerprints(splits["val"].images))
    assert len(train) == 1200 and len(val) == 600 and not train & val
    where = {f: i for i, f in enumerate(fingerprints(normalised(raw)))}  # both from the training file...
    assert train | val <= where.keys()
    labels = torch.from_numpy(raw_real("train-labels-idx1-ubyte").astype(np.int64))  # ...with their labels
    for which in ("train", "val"):
        rows = [where[f] for f in fingerprints(splits[which].images)]
        assert torch.equal(labels[rows], splits[which].labels)
    test_raw = raw_real("t10k-images-idx3-ubyte").reshape(-1, 28, 28)
    assert set(fingerprints(splits["test"].images)) <= set(fingerprints(normalised(test_raw)))

    again = build_dataset("fashion_mnist", root=str(root), num_val=600, num_train=1200, num_test=500, seed=0)
    assert torch.equal(again.split("val", 28).images, splits["val"].images)
    other = build_dataset("fashion_mnist", root=str(root), num_val=600, num_train=1200, num_test=500, seed=1)
    assert len(val & set(fingerprints(other.split("val", 28).images))) < 60  # another seed, another carve-out
    everything = build_dataset("fashion_mnist", root=str(root), num_val=600, seed=0)  # num_train: the rest
    assert torch.equal(everything.split("val", 28).images, splits["val"].images)  # num_train leaves val alone
    rest = set(fingerprints(everything.split("train", 28).images))
    assert len(rest) == 59400 and not rest & val and train <= rest
    assert len(everything.split("test", 28)) == 10000


def test_zoom_resizes_the_whole_frame(tmp_path):
    arrays = write_copy(tmp_path / "copy")
    ds = build_dataset("fashion_mnist", root=str(tmp_path / "copy"), num_val=20, seed=0)
    test = ds.split("test", 28)  # the official test set, in its order: no resize at 28 px
    assert torch.allclose(test.images[:, 0], normalised(arrays["test_images"]), atol=1e-6)
    assert torch.equal(test.labels, torch.from_numpy(arrays["test_labels"].astype(np.int64)))
    for size, block in ((56, (6, 50, 10, 46)), (14, (3, 6, 5, 6)), ((14, 56), (3, 6, 20, 46))):  # inside the article
        split = ds.split("test", size)
        rows, cols = (size, size) if isinstance(size, int) else size
        assert split.images.shape == (40, 1, rows, cols)
        # an antialiased resize keeps each image's mean brightness (the background included)
        assert torch.allclose(split.images.mean((1, 2, 3)), test.images.mean((1, 2, 3)), atol=0.02)
        assert (split.images[:, :, 0, 0] == fm.BACKGROUND).all()  # the corners stay background


@pytest.mark.parametrize("train_size, size", [(28, (44, 44)), (28, (36, 60)), (28, (31, 33)), (20, (36, 28))])
def test_canvas_keeps_the_training_image_on_the_background(tmp_path, train_size, size):
    arrays = write_copy(tmp_path / "copy")
    ds = build_dataset("fashion_mnist", root=str(tmp_path / "copy"), num_val=20, seed=0)
    training = ds.split("test", train_size)
    canvas = ds.split("test", size, regime="canvas", train_size=train_size)
    rows, cols = size
    top, left = (rows - train_size) // 2, (cols - train_size) // 2  # centred; an odd margin's half pixel below/right
    assert canvas.images.shape == (40, 1, rows, cols) and torch.equal(canvas.labels, training.labels)
    block = canvas.images[:, :, top : top + train_size, left : left + train_size]
    assert torch.equal(block, training.images)  # the pixel scale kept: the training image, exactly
    outside = torch.ones(rows, cols, dtype=torch.bool)
    outside[top : top + train_size, left : left + train_size] = False
    background = torch.tensor((0 - MEAN) / STD, dtype=torch.float32)
    assert (canvas.images[:, :, outside] == fm.BACKGROUND).all() and fm.BACKGROUND == pytest.approx(background)
    if train_size == 28:  # from the definition: the original, normalised, padded with normalised zeros
        padded = np.pad(arrays["test_images"], ((0, 0), (top, rows - 28 - top), (left, cols - 28 - left)))
        assert torch.allclose(canvas.images[:, 0], normalised(padded), atol=1e-6)


def test_gzipped_or_not_the_same_dataset(tmp_path):
    write_copy(tmp_path / "gz", gz=True, seed=4)
    write_copy(tmp_path / "plain", gz=False, seed=4)
    a, b = (build_dataset("fashion_mnist", root=str(tmp_path / d), num_val=30, num_train=60, num_test=20)
            for d in ("gz", "plain"))
    for which in ("train", "val", "test"):
        assert torch.equal(a.split(which, 16).images, b.split(which, 16).images)
        assert torch.equal(a.split(which, 16).labels, b.split(which, 16).labels)


def test_the_kit_passes_on_the_generated_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEBIAN_ROOT", str(tmp_path / "not-installed"))
    (tmp_path / "example").mkdir()
    options = fm.FashionMNIST.example_options(tmp_path / "example")
    assert options["root"] == str(tmp_path / "example")
    check_all("fashion_mnist", tmp_path / "example2")


def test_the_kit_runs_on_the_real_files(tmp_path):
    root = real_root()
    assert fm.FashionMNIST.example_options(tmp_path)["root"] == str(root)  # tests/test_dataset_kit.py uses them
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------ errors
def broken(tmp_path: Path, name: str, data: bytes) -> Path:
    """A good copy with file ``name`` (as written: .gz or not) replaced by ``data``."""
    folder = tmp_path / "copy"
    write_copy(folder)
    plain = folder / name.removesuffix(".gz")
    for stale in (plain, plain.with_name(plain.name + ".gz")):
        stale.unlink(missing_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def flipped(data: bytes) -> bytes:
    """``data`` with one bit of its last byte flipped: the gzip trailer's size no longer matches."""
    return data[:-1] + bytes([data[-1] ^ 0x01])


def refused(root: Path, *words: str) -> str:
    with pytest.raises(DataError) as exc:
        build_dataset("fashion_mnist", root=str(root), num_val=20)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("fashion_mnist: "), msg
    for w in words:
        assert w in msg, (w, msg)
    return msg


def test_missing_folder_and_missing_file(tmp_path):
    refused(tmp_path / "nowhere", str(tmp_path / "nowhere"), "apt-get install dataset-fashion-mnist",
            "dataset.root")
    (tmp_path / "a-file").write_text("")
    refused(tmp_path / "a-file", str(tmp_path / "a-file"), "apt-get install dataset-fashion-mnist")
    write_copy(tmp_path / "copy")
    for name in ("t10k-labels-idx1-ubyte", "train-images-idx3-ubyte"):
        (tmp_path / "copy" / f"{name}.gz").rename(tmp_path / f"{name}.gz")
        refused(tmp_path / "copy", f"no {name}.gz", str(tmp_path / "copy"), "apt-get install dataset-fashion-mnist")
        (tmp_path / f"{name}.gz").rename(tmp_path / "copy" / f"{name}.gz")
    build_dataset("fashion_mnist", root=str(tmp_path / "copy"), num_val=20)  # put back: it loads


def test_corrupt_files_are_one_line_naming_the_file(tmp_path):
    images = articles(np.zeros(40, dtype=np.uint8), 0)  # the size of the copy's test set (4 per class)
    labels = np.repeat(np.arange(10), 4).astype(np.uint8)
    good = idx(images)
    cases = [
        ("t10k-images-idx3-ubyte", good[: len(good) - 100], "truncated"),  # raw, cut in the body
        ("t10k-images-idx3-ubyte", good[:10], "truncated"),  # cut in the header
        ("t10k-images-idx3-ubyte.gz", gzip.compress(good)[:-200], "truncated"),  # a gzip stream cut short
        ("t10k-images-idx3-ubyte.gz", b"garbage, not gzip at all" * 10, "not gzip data"),
        ("t10k-images-idx3-ubyte.gz", flipped(gzip.compress(good)), "broken gzip data"),  # a bit flipped in the stream
        ("t10k-images-idx3-ubyte.gz", gzip.compress(idx(images, magic=0x00000801)), "magic number 0x00000801"),
        ("t10k-labels-idx1-ubyte.gz", gzip.compress(idx(labels, magic=0x00000803)), "magic number 0x00000803"),
        ("t10k-images-idx3-ubyte.gz", gzip.compress(idx(images, magic=0x00000D03)), "expected 0x00000803"),  # floats
        ("t10k-images-idx3-ubyte.gz", gzip.compress(idx(images, count=39)), "wrong count"),  # more bytes than counted
        ("t10k-images-idx3-ubyte.gz", gzip.compress(idx(images, count=41)), "truncated"),  # fewer
        ("t10k-images-idx3-ubyte.gz", gzip.compress(idx(images.reshape(40, 14, 56))), "14 x 56 px"),
        ("t10k-labels-idx1-ubyte.gz", gzip.compress(idx(np.where(labels == 3, 10, labels))), "label 10"),
    ]
    for name, data, words in cases:
        path = broken(tmp_path, name, data)
        refused(tmp_path / "copy", str(path), words)
        shutil.rmtree(tmp_path / "copy")
    # the counts of a pair differ: names both files
    path = broken(tmp_path, "t10k-labels-idx1-ubyte.gz", gzip.compress(idx(labels[:39])))
    refused(tmp_path / "copy", "40 images", "39 labels", str(path), str(tmp_path / "copy" / "t10k-images-idx3-ubyte.gz"))


def test_subsets_larger_than_the_files_are_refused(tmp_path):
    write_copy(tmp_path / "copy")  # 120 training and 40 test images
    root = str(tmp_path / "copy")
    for options, words in (({"num_val": 120}, "dataset.num_val 120"),
                           ({"num_val": 20, "num_train": 101}, "dataset.num_train 101"),
                           ({"num_val": 20, "num_test": 41}, "dataset.num_test 41")):
        with pytest.raises(DataError, match=words):
            build_dataset("fashion_mnist", root=root, **options)
    assert len(build_dataset("fashion_mnist", root=root, num_val=20, num_train=100, num_test=40).split("train", 8)) == 100


# ------------------------------------------------------------------------------ the commands
SPEC = """\
name: fm
dataset: {{name: fashion_mnist, root: {root}, num_val: 20, num_train: 60, num_test: 20}}
model: tiny
train: {{epochs: 1, batch_size: 20, lr: 0.002, warmup_epochs: 0, device: cpu, threads: 1}}
encodings: [none, rope_axial]
train_resolutions: [28]
test_resolutions: [20, 28, 36, 28x36]
regimes: [zoom, canvas]
temperatures: [none, log]
seeds: [0]
"""


def test_the_study_compares_the_main_studys_encodings_on_patch_aligned_canvases():
    from harness.spec import load_spec

    study = load_spec(ROOT / "studies" / "fashion_mnist.yaml")
    main = load_spec(ROOT / "studies" / "resolution_extrapolation.yaml")
    assert study.encodings == main.encodings and len(study.encodings) == 14 and len(study.seeds) == 3
    assert study.dataset.name == "fashion_mnist" and study.train_resolutions == (28,)
    assert study.regimes == ("zoom", "canvas") and study.policies == main.policies
    assert study.temperatures == main.temperatures
    train, stride = 28, study.model.patch_stride
    assert study.model.tiles_exactly(train) and study.model.grid_size(train) == 7
    sizes = [(s.rows, s.cols) for s in study.test_resolutions]
    assert min(min(s) for s in sizes) < train < max(max(s) for s in sizes) and any(r != c for r, c in sizes)
    assert study.canvas_resolutions and all(s.rows >= train and s.cols >= train for s in study.canvas_resolutions)
    for s in study.canvas_resolutions:  # the patches cut the image where they did in training
        assert (s.rows - train) // 2 % stride == 0 and (s.cols - train) // 2 % stride == 0, s.label


def test_without_the_files_run_and_train_write_nothing(tmp_path, capsys, monkeypatch):
    (tmp_path / "spec.yaml").write_text(SPEC.format(root="/nonexistent"))
    study = str(ROOT / "studies" / "fashion_mnist.yaml")
    for args in (["run", study, "dataset.root=/nonexistent"], ["run", "spec.yaml", "--workers", "2"],
                 ["train", "--spec", "spec.yaml", "--encoding", "none"]):
        r = cli(tmp_path, capsys, monkeypatch, *args)
        one_line_error(r, "/nonexistent", "apt-get install dataset-fashion-mnist")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"], args  # no runs/ folder


@pytest.mark.slow
def test_a_one_channel_study_trains_and_evaluates_in_both_regimes(tmp_path, capsys, monkeypatch):
    from harness.models.vit import build_model
    from harness.spec import load_spec
    from harness.tracking import Tracker
    from harness.trial import dataset_of

    write_copy(tmp_path / "copy", per_class=(10, 2))
    (tmp_path / "spec.yaml").write_text(SPEC.format(root=tmp_path / "copy"))
    spec = load_spec(tmp_path / "spec.yaml")
    data = dataset_of(spec)
    cfg = spec.model_config(28, data.in_chans, data.num_classes)
    assert cfg.in_chans == 1 and cfg.num_classes == 10 and cfg.dims.train_rows == 7
    model = build_model(cfg, "rope_axial", {})
    assert model(data.split("val", 36).images[:2]).shape == (2, 10)

    r = cli(tmp_path, capsys, monkeypatch, "run", "spec.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    runs = Tracker(f"sqlite:///{tmp_path / 'runs' / 'fm' / 'mlflow.db'}", "fm").runs("fm", "evaluate")
    assert len(runs) == 2 and all(run.info.status == "FINISHED" for run in runs)
    axial = next(run for run in runs if run.data.params["encoding"] == "rope_axial").data.metrics
    for regime, sizes in (("zoom", ("r20", "r28", "r36", "r28x36")), ("canvas", ("r28", "r36", "r28x36"))):
        for size in sizes:
            for policy in ("extrapolate", "interpolate"):
                assert 0 <= axial[f"test/acc/{regime}/{policy}/log/{size}"] <= 1
    assert "test/acc/canvas/extrapolate/none/r20" not in axial  # a canvas only grows
