"""Issue #13: the habits of Hydra and SLURM users. YAML 1.2 floats (``lr: 3e-4``), positional
``KEY=VALUE`` overrides, ``run --dry-run``, plain progress lines when stderr is not a terminal,
and ``train --encoding LABEL`` taking the spec's entry of that label."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.spec import SpecError, load_spec, parse_value

ROOT = Path(__file__).resolve().parents[1]

SPEC = """\
name: habits
dataset: {name: rendered, task: relational, num_train: 64, num_val: 32, num_test: 32}
model: tiny
train: {epochs: 1, batch_size: 16, device: cpu, lr: 3e-4, min_lr: 1E-6, warmup_epochs: .5}
encodings: [none, {name: rope_axial, label: rope_b50, options: {base: 5e1}}]
train_resolutions: [16]
test_resolutions: [8, 16]
seeds: [0, 1]
"""


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(SPEC)
    return p


# ------------------------------------------------------------------------------ 1. YAML 1.2 floats
@pytest.mark.parametrize("text, value", [("3e-4", 3e-4), ("1E5", 1e5), (".5", 0.5), ("1.5e3", 1500.0),
                                         ("-2.5E-3", -2.5e-3), ("+1e2", 100.0), ("1.", 1.0), ("0.002", 0.002)])
def test_yaml_12_floats_are_floats(text, value):
    got = parse_value(text)
    assert type(got) is float and got == value


@pytest.mark.parametrize("text, value", [("3", 3), ("cpu", "cpu"), ('"3e-4"', "3e-4"), ("'1E5'", "1E5"),
                                         ("1e", "1e"), ("e5", "e5"), ("1.2.3", "1.2.3"), ("r32", "r32")])
def test_other_scalars_keep_their_type(text, value):
    got = parse_value(text)
    assert type(got) is type(value) and got == value


def test_spec_file_takes_yaml_12_floats(spec_path):
    spec = load_spec(spec_path)
    assert spec.train.lr == 3e-4 and spec.train.min_lr == 1e-6 and spec.train.warmup_epochs == 0.5
    assert spec.encoding("rope_b50").options == {"base": 50.0}
    assert spec.resolved["train"]["lr"] == 3e-4


def test_set_takes_yaml_12_floats(spec_path):
    spec = load_spec(spec_path, ["train.lr=1e-3", "train.weight_decay=5E-2", "train.label_smoothing=.1"])
    assert (spec.train.lr, spec.train.weight_decay, spec.train.label_smoothing) == (1e-3, 0.05, 0.1)
    assert spec.train.device == "cpu"  # a string where a string is expected
    assert load_spec(spec_path, ["name=1e5x"]).name == "1e5x"


def test_tune_space_bounds_take_yaml_12_floats(spec_path):
    spec_path.write_text(SPEC + "tune: {trials: 2, space: {train.lr: {low: 1e-4, high: 3e-3, log: true}}}\n")
    assert load_spec(spec_path).tune.space == {"train.lr": {"low": 1e-4, "high": 3e-3, "log": True}}


# ------------------------------------------------------------------------------ 2. positional overrides
def test_encoding_option_by_label(spec_path):
    spec = load_spec(spec_path, ["encodings.rope_b50.options.base=1e3"])
    assert spec.encoding("rope_b50").options == {"base": 1000.0}
    spec = load_spec(spec_path, ["encodings.none.options={}"])  # an entry given as a plain name
    assert spec.encoding("none").options == {}
    with pytest.raises(SpecError, match="no encoding labelled 'rope_b5'.*did you mean 'rope_b50'"):
        load_spec(spec_path, ["encodings.rope_b5.options.base=100"])
    with pytest.raises(SpecError, match="'base' must be > 1"):  # the option itself is checked as in a file
        load_spec(spec_path, ["encodings.rope_b50.options.base=0.5"])


def test_run_takes_positional_overrides_anywhere(spec_path, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc = main(["run", str(spec_path), "train.lr=2e-3", "--dry-run", "model.depth=3",
               "encodings.rope_b50.options.base=1E2", "--set", "seeds=[4]"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "lr: 0.002" in out and "depth: 3" in out and "base: 100.0" in out
    assert "2 cells" in out and "seed 4" in out


def test_report_and_bench_take_positional_overrides_as_every_command_with_a_spec(spec_path, tmp_path, capsys,
                                                                                   monkeypatch):
    """docs/reference/cli.md: the commands that take a spec accept positional KEY=VALUE; `report`
    and `bench` refused them as unrecognized arguments."""
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(spec_path), "name=elsewhere", "output=o"]) == 2  # the overrides reach the spec
    assert f"no tracking store at sqlite:///{tmp_path / 'o' / 'elsewhere' / 'mlflow.db'}" in capsys.readouterr().err
    # without a spec there is nothing to override: said, not ignored
    assert main(["report", "--experiment", "e", "--tracking-uri", "sqlite:///x.db", "name=x"]) == 2
    assert "name=...: overrides change a study spec" in capsys.readouterr().err
    assert main(["bench", "train.lr=0.1"]) == 2
    assert "overrides change a study spec" in capsys.readouterr().err
    assert main(["bench", "--spec", str(spec_path), "train.lr=abc"]) == 2  # read as --set train.lr=abc
    err = capsys.readouterr().err
    assert "train.lr" in err and "'abc'" in err


def test_a_positional_that_is_not_an_override_is_refused(spec_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", str(spec_path), "--dry-run", "train.lr"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "train.lr" in err and err.startswith("harness run: error:") and "(see harness run --help)" in err


@pytest.mark.parametrize("command, given", [("report", []), ("status", ["s.yaml"]), ("encodings", [])])
def test_an_unknown_option_is_named_with_its_command(command, given, capsys):
    """It was 'harness: error: unrecognized arguments ... (see harness --help)', the top-level help."""
    with pytest.raises(SystemExit) as exc:
        main([command, *given, "--bogus"])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (f"harness {command}: error: unrecognized arguments: --bogus "
                                       f"(see harness {command} --help)\n")


# ------------------------------------------------------------------------------ 3. run --dry-run
def test_dry_run_prints_the_resolved_spec_and_cells_and_writes_nothing(spec_path, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    r = subprocess.run([sys.executable, "-m", "harness", "run", str(spec_path), "--dry-run", "train.lr=3e-4"],
                       capture_output=True, text=True, cwd=work, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "name: habits" in r.stdout and "lr: 0.0003" in r.stdout
    cells = [line.split() for line in r.stdout.splitlines() if line.strip()[:1].isdigit() and "seed" in line]
    assert [(c[1], c[2], c[4]) for c in cells] == [("none", "r16", "0"), ("none", "r16", "1"),
                                                    ("rope_b50", "r16", "0"), ("rope_b50", "r16", "1")]
    assert r.stdout.strip().endswith("4 cells")
    # two seeds: said before anything is trained (the report could not test a difference)
    assert "# warning: 2 seed(s): the report cannot test any difference between encodings" in r.stdout
    assert list(work.iterdir()) == []  # no runs/, no stores, no reports/
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml", "work"]


def test_dry_run_says_how_many_workers_run_would_start(spec_path, capsys, monkeypatch):
    """--workers over the spec's workers, and 'auto' as the count it comes to here (it printed the
    spec's 1 in the resolved spec, then '5 worker(s)', and 'auto worker(s)')."""
    monkeypatch.setattr("harness.devices.usable_cpus", lambda: 3)
    cases = [((), "# 4 cells to train (encoding, train resolution, seed), 1 worker(s):"),
             (("--workers", "5"), "5 worker(s) (--workers 5, over the spec's workers: 1):"),
             (("--workers", "auto"), "3 worker(s) ('auto': one single-thread worker per core, at most one per cell")]
    for extra, want in cases:
        assert main(["run", str(spec_path), "--dry-run", *extra]) == 0
        out = capsys.readouterr().out
        assert want in out, out


def test_counts_are_written_in_the_singular_for_one(spec_path, capsys):
    """'1 epochs', '1 cells', '1 evaluations added to 1 cells' were printed."""
    from harness.wording import count

    assert [count(n, "cell") for n in (0, 1, 2)] == ["0 cells", "1 cell", "2 cells"]
    assert count(1, "try", "tries") == "1 try" and count(3, "try", "tries") == "3 tries"
    assert main(["run", str(spec_path), "--dry-run", "encodings=[none]", "seeds=[0]"]) == 0
    out = capsys.readouterr().out
    assert "# 1 cell to train (encoding, train resolution, seed)" in out and out.rstrip().endswith("\n1 cell")


def test_dry_run_of_a_bad_spec_is_one_error(spec_path, capsys):
    assert main(["run", str(spec_path), "--dry-run", "train.lr=fast"]) == 2
    assert "train.lr" in capsys.readouterr().err


# ------------------------------------------------------------------------------ 4. progress when piped
def _train(capsys, epochs: int, **kw):
    from tests.test_train import Squares, recipe, tiny_model
    from harness.train import train_model

    capsys.readouterr()
    train_model(tiny_model(), Squares((128, 64, 64)), recipe(epochs=epochs, warmup_epochs=0.0),
                train_resolution=16, test_resolutions=(), seed=0, **kw)
    return capsys.readouterr().err.strip().splitlines()


def test_piped_training_prints_a_start_and_an_end_line(capsys):
    assert not sys.stderr.isatty()  # pytest's capture: as under nohup, SLURM, CI
    lines = _train(capsys, 2, label="cell 3/42 rope_axial r16 seed 1")
    assert len(lines) == 2, lines  # quick epochs: no epoch line within 30 s
    assert lines[0].startswith("cell 3/42 rope_axial r16 seed 1: training started")
    assert lines[1].startswith("cell 3/42 rope_axial r16 seed 1: training done in ")
    assert "val acc 0." in lines[1] or "val acc 1." in lines[1]


def test_piped_training_prints_at_most_one_line_per_epoch(capsys, monkeypatch):
    import harness.train

    monkeypatch.setattr(harness.train, "LINE_INTERVAL_S", 0.0)
    lines = _train(capsys, 3, label="L")
    assert [line.split(":")[1].split()[0:2] for line in lines] == [
        ["training", "started"], ["epoch", "1/3"], ["epoch", "2/3"], ["training", "done"]]
    assert "loss" in lines[1] and "val acc" in lines[1]
    assert _train(capsys, 1)[0].startswith("training started: 1 epoch of ")  # no label: no prefix
    assert _train(capsys, 1, progress=False, label="L") == []  # asked for silence


def test_terminal_bars_carry_the_label(capsys):
    err = "\n".join(_train(capsys, 1, progress=True, label="cell 1/2 none r16 seed 0"))
    assert "cell 1/2 none r16 seed 0" in err and "training started" not in err


# ------------------------------------------------------------------------------ 5. train --encoding LABEL
def test_train_takes_the_spec_entry_by_label(spec_path, tmp_path, monkeypatch, capsys):
    import harness.tracking
    import harness.trial

    seen = {}

    class FakeTracker:
        def __init__(self, *a, **k):
            pass

        def parent_run(self, *a, **k):
            seen["reopen"] = k.get("reopen")
            return "parent"

        def end(self, run_id, status="FINISHED"):
            seen["closed"] = (run_id, status)

    def fake_train_one(spec, cell, **kw):
        seen.update(spec=spec, cell=cell)
        return 0.5

    monkeypatch.setattr(harness.tracking, "Tracker", FakeTracker)
    monkeypatch.setattr(harness.trial, "train_one", fake_train_one)
    monkeypatch.chdir(tmp_path)
    rc = main(["train", "--encoding", "rope_b50", "--spec", str(spec_path), "--seed", "1", "train.lr=2e-3",
               "encodings.rope_b50.options.base=2E1"])
    assert rc == 0, capsys.readouterr().err
    spec, cell = seen["spec"], seen["cell"]
    assert (cell.encoding, cell.train_resolution, cell.seed) == ("rope_b50", 16, 1)
    entry = spec.encoding(cell.encoding)
    assert (entry.name, entry.options) == ("rope_axial", {"base": 20.0})
    assert spec.train.lr == 2e-3
    assert seen["reopen"] and seen["closed"] == ("parent", "FINISHED")  # the train stage's parent is closed
