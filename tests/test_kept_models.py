"""Issue #24: a kept model that cannot be read, or does not fit its ``model.json``, is a cell
``harness evaluate`` could not evaluate (exit 3, one line naming the cell), never a traceback.

One ``harness run`` of a one-cell smoke study; each case damages its ``model/weights.pt`` in
the run's artifacts, runs ``harness evaluate`` with a new test size, and puts the weights back;
then, with the weights as they were, the same command evaluates the cell.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "studies" / "smoke.yaml"
ONE_CELL = ["encodings=[none]", "seeds=[0]"]
CELL = "none_r16_s0"


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    """(the study's output folder, its one kept ``weights.pt`` in the artifact store)."""
    base = tmp_path_factory.mktemp("kept")
    out = base / "runs"
    r = harness("run", str(SMOKE), "--set", f"output={out}", *ONE_CELL, "--no-report", cwd=base)
    assert r.returncode == 0, r.stderr[-3000:]
    (weights,) = (out / "smoke" / "artifacts").rglob("model/weights.pt")
    return out, weights


def _random_bytes(good: bytes) -> bytes:
    return os.urandom(4096)


def _truncated(good: bytes) -> bytes:
    return good[: len(good) // 2]


def _another_model(good: bytes) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(torch.nn.Linear(3, 4).state_dict(), buf)  # a readable state dict, of another model
    return buf.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("damage, says", [(_random_bytes, "cannot be read"), (_truncated, "cannot be read"),
                                          (_another_model, "does not fit the model of its model.json")])
def test_a_damaged_kept_model_is_a_cell_not_evaluated_exit_3_one_line(study, tmp_path, damage, says):
    out, weights = study
    good = weights.read_bytes()
    try:
        weights.write_bytes(damage(good))
        r = harness("evaluate", str(SMOKE), "--set", f"output={out}", *ONE_CELL, "test_resolutions=[8,16,24,40]",
                    "--no-report", cwd=tmp_path)
    finally:
        weights.write_bytes(good)
    assert r.returncode == 3, r.stderr[-3000:]
    assert "Traceback" not in r.stderr + r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and CELL in errors[0] and "model/weights.pt" in errors[0] and says in errors[0]
    assert r.stderr.strip() == errors[0]  # that one line, nothing else


@pytest.mark.slow
def test_with_its_weights_back_the_same_command_evaluates_the_cell(study, tmp_path):
    """The damaged cases logged nothing: the cell still misses 40 px, and the kept model scores it."""
    out, _ = study
    r = harness("evaluate", str(SMOKE), "--set", f"output={out}", *ONE_CELL, "test_resolutions=[8,16,24,40]",
                "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "evaluations added to 1 cells" in r.stdout and "error" not in r.stderr
