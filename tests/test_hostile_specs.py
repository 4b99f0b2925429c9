"""Issue #14, hostile specs and commands: every user-caused error is one line naming the file
or the ``--set`` key (or the command's option), exit status 2, nothing written (and never
outside ``output``); bombs are refused, never run out of time or memory."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main
from harness.config import ConfigError
from harness.spec import SpecError, load_spec

SPEC = """\
name: hostile
dataset: {name: rendered, task: relational, num_train: 32, num_val: 16, num_test: 16}
model: tiny
train: {epochs: 1, batch_size: 16, device: cpu}
encodings: [none, rope_axial]
train_resolutions: [16]
test_resolutions: [8, 16]
seeds: [0]
"""


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A spec file in ``tmp/specs/`` and an empty working folder ``tmp/work/``."""
    (tmp_path / "specs").mkdir()
    (tmp_path / "work").mkdir()
    spec = tmp_path / "specs" / "mini.yaml"
    spec.write_text(SPEC)
    return spec, tmp_path / "work"


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _cli(tmp: Path, *args: str, timeout: float = 120) -> tuple[int, list[str], str]:
    """``python -m harness ARGS`` in ``tmp/work``: exit status, stderr lines, stdout; asserts
    that nothing was written anywhere under ``tmp``."""
    before = _files(tmp)
    r = subprocess.run([sys.executable, "-m", "harness", *args], cwd=tmp / "work", capture_output=True, text=True,
                       timeout=timeout)
    assert "Traceback" not in r.stderr, r.stderr
    assert _files(tmp) == before, f"written: {_files(tmp) - before}"
    return r.returncode, r.stderr.strip().splitlines(), r.stdout


def _main(capsys, *args: str) -> tuple[int, list[str]]:
    """``harness ARGS`` in this process (the current folder is a fresh one)."""
    rc = main(list(args))
    return rc, capsys.readouterr().err.strip().splitlines()


def _refused(spec: Path, *overrides: str) -> str:
    with pytest.raises(SpecError) as exc:
        load_spec(spec, list(overrides))
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 600, msg
    return msg


# ------------------------------------------------------------------------------ 1. path traversal
def test_a_study_name_or_label_never_leads_outside_output(tree):
    spec, work = tree
    rc, err, _ = _cli(work.parent, "run", str(spec), "--workers", "0", "--set", "name=..")  # once: files in work/
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: --set name=...: key 'name'"), err
    for name in (".", "a/b", "a\\b", "x" * 101, "a\0b", ".hidden", ""):
        assert "key 'name'" in _refused(spec, f"name={name!r}" if name else "name=''")
    for label in ("/abs/path", "../up", "a'b", 'a"b', ".x", "a b", "x" * 101):
        msg = _refused(spec, f"encodings=[{{name: none, label: {label!r}}}]")
        assert "encodings[0].label" in msg
    ok = load_spec(spec, ["encodings=[{name: none, label: n-1.5+x_}]"])
    assert ok.path_under("checkpoints", "train", "n-1.5+x__r16_s0.pt") == Path("runs/hostile/checkpoints/train/"
                                                                            "n-1.5+x__r16_s0.pt")
    bad = dataclasses.replace(ok, name="..")  # a spec built by hand: the one helper still refuses
    for attempt in (lambda: bad.run_dir, lambda: ok.path_under("..", "x"), lambda: ok.path_under("/etc/passwd"),
                    lambda: bad.storage_url()):
        with pytest.raises(ConfigError, match="would leave the output folder"):
            attempt()


# ------------------------------------------------------------------------------ 2. resource bombs
def test_bombs_are_refused_quickly_with_the_estimate(tree):
    spec, work = tree
    laughs = ['a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]']
    laughs += [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]" for p, c in zip("abcde", "bcdef")]
    bomb = spec.parent / "bomb.yaml"
    bomb.write_text(SPEC.replace("name: hostile\n", "\n".join(laughs) + "\nname: *f\n"))
    t0 = time.monotonic()
    msg = _refused(bomb)
    # refused at its first anchor (line 1), before any alias could expand
    assert msg.startswith(f"{bomb}: line 1") and "anchors (&a)" in msg and time.monotonic() - t0 < 5, msg
    assert "anchors (&s)" in _refused(spec, "seeds=[&s 1, *s]")  # an override is read as a spec file is
    assert "aliases (*s)" in _refused(spec, "seeds=[*s]")

    msg = _refused(spec, "test_resolutions=[1000000]")  # a size no machine can evaluate: the estimate
    assert msg.startswith("--set test_resolutions=...: key 'test_resolutions[0]': 1000000 px is "
                          "62,500,000,001 tokens per image") and "GiB" in msg and "memory" in msg, msg
    assert "key 'train_resolutions[0]'" in _refused(spec, "train_resolutions=[4000000]")
    assert "key 'model.dim'" in _refused(spec, "model.dim=4000000")
    assert load_spec(spec, ["test_resolutions=[8, 16, 64, 32x64]"]).test_resolutions  # real sizes pass

    for seeds in ("[100000000000000000000000]", "[-1]", f"[{2**63}]"):
        assert "key 'seeds[0]': expected an integer seed 0 <= seed < 2**63" in _refused(spec, f"seeds={seeds}")
    assert load_spec(spec, [f"seeds=[{2**63 - 1}]"]).seeds == (2**63 - 1,)
    assert "tune.seed" in _refused(spec, "tune={seed: 4294967296, space: {train.lr: {low: 0.001, high: 0.01}}}")


def test_a_plugin_whose_parameter_count_never_ends_is_named_broken(tree):
    spec, work = tree
    plugin = spec.parent / "bomb_pe.py"
    plugin.write_text('"""A parameter count that never ends."""\n'
                      "from harness.encodings import PositionalEncoding, register_encoding\n\n\n"
                      "@register_encoding('bomb_pe')\n"
                      "class BombPE(PositionalEncoding):\n"
                      '    """Counts forever."""\n\n'
                      "    def num_trainable(self):\n"
                      "        return 9**9**9**9\n")
    t0 = time.monotonic()
    rc, err, out = _cli(work.parent, "encodings", "--plugin", str(plugin), timeout=60)
    assert rc == 0 and time.monotonic() - t0 < 40
    assert len(err) == 1 and "bomb_pe" in err[0] and "TimeoutError" in err[0], err
    assert "rope_axial" in out and "bomb_pe" not in out  # every other row is listed


# ------------------------------------------------------------------------------ 3. commands that accept nonsense
def test_train_and_show_refuse_nonsense_before_writing(tree, capsys, monkeypatch):
    spec, work = tree
    monkeypatch.chdir(work)
    for args, origin in ((["--resolution", "0"], "--resolution 0: expected a positive"),
                         (["--resolution", "17"], "--resolution 17: the patch stem (kernel 4, stride 4) cannot tile"),
                         (["--resolution", "4000000"], "--resolution 4000000: 4000000 px is"),
                         (["--seed", str(10**23)], f"--seed {10**23}: expected an integer seed")):
        rc, err = _main(capsys, "train", "--spec", str(spec), "--encoding", "rope_axial", *args)
        assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {origin}"), err
    rc, err = _main(capsys, "train", "--spec", str(spec), "--encoding", "none, rope1d")
    assert rc == 2 and len(err) == 1 and "--encoding 'none, rope1d'" in err[0] and "unknown encoding" in err[0], err
    assert _files(work) == set()

    rc, err, _ = _cli(work.parent, "train", "--spec", str(spec), "--encoding", "none", "--resolution", "-16")
    assert rc == 2 and err == ["error: --resolution -16: expected a positive training resolution in pixels, got -16"]
    rc, err, _ = _cli(work.parent, "show", "rope1d", "--option", "base=[1")
    assert rc == 2 and len(err) == 1 and err[0].startswith("harness show: error: argument --option: 'base=[1': "
                                                           "the value is not valid YAML"), err
    assert err[0].endswith("(see harness show --help)")  # one line: no usage block above it


@pytest.mark.parametrize("space, key", [
    ("{train.lr: {low: 0, high: 0.01, log: true}}", "a log range needs low > 0"),
    ("{train.batch_size: {choices: []}}", "a non-empty list of choices"),
    ("{train.batch_size: {choices: [16, 0]}}", "key 'tune.space.train.batch_size.choices[1]'"),
    ("{train.lr: {choices: [fast]}}", "key 'tune.space.train.lr.choices[0]'"),
    ("{train.batch_size: {low: 8, high: 64, log: true}}", "takes integers"),
    ("{train.lr: {low: 0.000001, high: 0.01}}", "key 'tune.space.train.lr.low'"),  # below min_lr
    ("{train.lr: {low: .nan, high: 0.01}}", "finite numbers"),
    ("{train.lr: {low: 0.001, high: 0.01, step: 2}}", "expected {low, high[, log]}"),
])
def test_a_tune_space_the_recipe_rejects_is_refused_at_load(tree, space, key):
    spec, _ = tree
    msg = _refused(spec, f"tune={{trials: 2, space: {space}}}")
    assert msg.startswith("--set tune=...: key 'tune") and key in msg, msg


# ------------------------------------------------------------------------------ 4. undecodable specs
def test_an_undecodable_spec_is_one_line_naming_the_file(tree):
    spec, work = tree
    latin = spec.parent / "latin1.yaml"
    latin.write_bytes(SPEC.replace("hostile", "caf\xe9").encode("latin-1"))
    assert _refused(latin) == f"{latin}: not a UTF-8 text file (byte 0xe9 at offset 9)"
    control = spec.parent / "control.yaml"
    control.write_bytes(b"name: a\x00b\n")
    assert _refused(control).startswith(f"{control}: position 7: not a YAML text")
    include = spec.parent / "includes.yaml"
    include.write_text("include: [latin1.yaml]\n")
    assert _refused(include).startswith(f"{latin}: not a UTF-8")
    binary = spec.parent / "binary.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    rc, err, _ = _cli(work.parent, "run", str(binary), "--dry-run")
    assert rc == 2 and err == [f"error: {binary}: not a UTF-8 text file (byte 0x80 at offset 128)"], err


# ------------------------------------------------------------------------------ 5. errors blame the right origin
def test_an_override_error_names_the_override_not_the_file(tree, capsys, monkeypatch):
    spec, work = tree
    monkeypatch.chdir(work)
    assert _refused(spec, "seeds=[0,x]") == "--set seeds=...: key 'seeds[1]': expected an integer, got 'x'"
    rc, err = _main(capsys, "run", str(spec), "--dry-run", "seeds=[0,x]")  # positional KEY=VALUE: the same
    assert rc == 2 and err == ["error: --set seeds=...: key 'seeds[1]': expected an integer, got 'x'"]
    msg = _refused(spec, "encodings.rope_axial.options.base=x")
    assert msg.startswith("--set encodings.rope_axial.options.base=...: key 'encodings[1]'"), msg
    msg = _refused(spec, "storage=[postgresql://u:secret@h/db")  # never the value: it may hold a password
    assert msg.startswith("--set storage=...: the value is not valid YAML") and "secret" not in msg, msg
    spec.write_text(SPEC.replace("seeds: [0]", "seeds: [0, y]"))
    assert _refused(spec).startswith(f"{spec.resolve()}: key 'seeds[1]'")  # the file's own error: the file


def test_an_override_replacing_a_list_drops_the_files_origins(tree):
    spec, _ = tree
    assert load_spec(spec, ["seeds=[0, 1]"]).seeds == (0, 1)
    spec.write_text(SPEC.replace("train: {epochs: 1, batch_size: 16, device: cpu}",
                                 "train: {epochs: 1, batch_size: 16, device: cpu, lr: 0.01}"))
    msg = _refused(spec, "train={lr: -1}")
    assert msg.startswith("--set train=...: key 'train.lr'"), msg
