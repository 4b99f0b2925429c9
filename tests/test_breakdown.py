"""Issue #20: where a study's time goes, how far it is, and evaluations that are the same by
definition done once.

- ``harness.stopwatch``: exclusive nested phases, checked against a fake clock;
- ``harness.report_time``: the study's totals from a handmade table of runs;
- ``harness.progress`` / ``harness.trial.study_progress``: the ETA from finished cells, with a
  fake clock and a real Optuna study whose trials carry made-up times;
- ``harness.train.evaluate_variants``: at the training grid every variant is the model as
  trained (checked for every registered encoding, logits bitwise), so it is evaluated once there,
  and the results equal a plain loop over every variant.
"""

from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest
import torch

from harness import schema
from harness.progress import StudyProgress, format_duration
from harness.report_time import time_totals
from harness.schema import Size, Variant
from harness.stopwatch import OTHER, PHASES, TOTAL, Stopwatch, TimedTracker


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def tick(self, seconds: float) -> None:
        self.t += seconds


# ------------------------------------------------------------------------------ stopwatch
def test_nested_phases_count_once_each_against_a_fake_clock():
    clock = FakeClock()
    sw = Stopwatch(clock)
    clock.tick(1)  # before any phase: other
    with sw.phase("train_steps"):
        clock.tick(10)
        with sw.phase("tracking"):  # inside the steps: the steps' clock stops
            clock.tick(2)
            with sw.phase("tracking"):  # the same phase again, nested: still counted once
                clock.tick(0.5)
        clock.tick(3)
    with sw.phase("data"):
        clock.tick(4)
    b = sw.breakdown()
    assert b["train_steps"] == 13 and b["tracking"] == 2.5 and b["data"] == 4
    assert b[TOTAL] == 20.5 and b[OTHER] == 1.0
    assert set(b) == {*PHASES, TOTAL, OTHER}


def test_a_phase_that_raises_still_counts_and_an_unknown_phase_is_refused():
    clock = FakeClock()
    sw = Stopwatch(clock)
    with pytest.raises(RuntimeError):
        with sw.phase("validation"):
            clock.tick(2)
            raise RuntimeError("boom")
    with sw.phase("data"):  # the stack was unwound: data is not charged to validation
        clock.tick(1)
    assert sw.seconds["validation"] == 2 and sw.seconds["data"] == 1
    with pytest.raises(ValueError, match="unknown phase 'dinner'"):
        with sw.phase("dinner"):
            pass


def test_timed_tracker_charges_files_to_artifacts_and_other_calls_to_tracking():
    clock = FakeClock()
    sw = Stopwatch(clock)

    class Tracker:
        client = "the client"

        def log_metrics(self, *a):
            clock.tick(1)
            return "logged"

        def log_model(self, *a):
            clock.tick(5)

    t = TimedTracker(Tracker(), sw)
    assert t.log_metrics("run", {}) == "logged" and t.client == "the client"
    t.log_model("run")
    assert sw.seconds["tracking"] == 1 and sw.seconds["artifacts"] == 5


def test_time_metric_names_round_trip_and_are_not_test_metrics():
    assert schema.time_metric("train_steps") == "time/train_steps_s"
    assert schema.parse_time_metric("time/train_steps_s") == "train_steps"
    assert schema.parse_time_metric("test/acc/r32") is None and schema.parse_time_metric("time/") is None
    assert schema.parse_test_metric(schema.time_metric("total")) is None


# ------------------------------------------------------------------------------ the report's totals
def test_time_totals_add_the_runs_and_leave_out_runs_without_a_breakdown():
    timing = pd.DataFrame([
        {"encoding": "a", "run_id": "1", "data": 1.0, "train_steps": 6.0, "other": 1.0, "total": 8.0},
        {"encoding": "b", "run_id": "2", "data": 3.0, "train_steps": 8.0, "other": 1.0, "total": 12.0},
        {"encoding": "c", "run_id": "3"},  # written before runs logged their time
    ])
    out = time_totals(timing, {"wall_s": 15.0, "workers": 2})
    rows = {r.phase: r for r in out.itertuples(index=False)}
    assert rows["data"].seconds == 4.0 and rows["data"].share == pytest.approx(0.2) and rows["data"].per_run_s == 2
    assert rows["train_steps"].seconds == 14.0 and rows["train_steps"].share == pytest.approx(0.7)
    assert rows["total of 2 runs (worker-seconds)"].seconds == 20.0
    assert rows["wall time of the last `harness run` (2 workers)"].seconds == 15.0
    assert list(out["phase"][:3]) == ["data", "train_steps", "other"]  # the phases' order
    assert time_totals(pd.DataFrame()).empty and time_totals(timing.iloc[2:]).empty


# ------------------------------------------------------------------------------ ETA
NOW = dt.datetime(2026, 12, 7, 12, 0, 0)


def test_eta_from_the_finished_cells_with_a_fake_clock():
    # 10 cells; 4 finished in 60 s on average; 2 running (started 20 s and 90 s ago): 4 waiting
    p = StudyProgress(10, [50, 70, 60, 60], [NOW - dt.timedelta(seconds=20), NOW - dt.timedelta(seconds=90)], NOW)
    # work left: 4 x 60 + (60 - 20) + max(0, 60 - 90) = 280 s, shared by the 2 running workers
    assert (p.done, p.left) == (4, 6) and p.seconds_left() == 140.0
    assert p.text() == "4 done, 6 left, about 2m20s to go"
    assert StudyProgress(3, [], [NOW], NOW).text() == "0 done, 3 left, no estimate until a cell has finished"
    assert StudyProgress(2, [5.0, 7.0], [], NOW).seconds_left() == 0.0
    assert StudyProgress(5, [30.0], [], NOW).seconds_left() == 120.0  # nobody running: one worker's pace
    assert format_duration(3723) == "1h02m03s" and format_duration(42) == "42.0s" and format_duration(-1) == "0.0s"


def test_study_progress_reads_a_real_optuna_study_with_made_up_times():
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState, create_trial

    from harness.schema import Cell, O_CELL
    from harness.trial import _progress_note, study_progress

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cells = [Cell("none", 16, s) for s in range(4)]
    study = optuna.create_study(storage="sqlite:///:memory:")

    def add(cell, state, start, end=None, spurious=False):
        trial = create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None,
                             params={O_CELL: cell.key}, distributions={O_CELL: CategoricalDistribution([c.key for c in cells])},
                             user_attrs={**cell.params(), **({schema.U_SPURIOUS: True} if spurious else {})})
        trial.datetime_start, trial.datetime_complete = start, end
        study.add_trial(trial)

    add(cells[0], TrialState.COMPLETE, NOW - dt.timedelta(seconds=300), NOW - dt.timedelta(seconds=200))  # 100 s
    add(cells[1], TrialState.FAIL, NOW - dt.timedelta(seconds=190), NOW - dt.timedelta(seconds=180))  # not done
    add(cells[1], TrialState.COMPLETE, NOW - dt.timedelta(seconds=180), NOW - dt.timedelta(seconds=100))  # 80 s
    add(cells[2], TrialState.RUNNING, NOW - dt.timedelta(seconds=30))
    add(cells[3], TrialState.RUNNING, NOW - dt.timedelta(seconds=10), spurious=True)  # no cell of its own
    p = study_progress(study, cells, NOW)
    assert sorted(p.finished) == [80.0, 100.0] and list(p.running) == [NOW - dt.timedelta(seconds=30)]
    # mean 90 s; cell 2 running 30 s in: 60 s left; cell 3 waiting: 90 s; one worker
    assert p.left == 2 and p.seconds_left() == 150.0

    class Spec:
        def cells(self):
            return cells

    class Trial:
        pass

    trial = Trial()
    trial.study = study
    assert _progress_note(Spec(), schema.EVALUATE, trial, NOW) == "study: 2 done, 2 left, about 2m30s to go"
    assert _progress_note(Spec(), schema.TUNE, trial, NOW) == "" and _progress_note(Spec(), schema.EVALUATE, None) == ""


def test_the_start_line_carries_the_note(capsys):
    from harness.train import _Lines

    lines = _Lines("cell 3/42 rope_axial r16 seed 1", 2)
    lines.start(16, 8, torch.device("cpu"), 0, "study: 2 done, 40 left, about 20m10s to go")
    err = capsys.readouterr().err
    assert err == ("cell 3/42 rope_axial r16 seed 1: training started: 2 epochs of 8 steps at r16 on cpu; "
                   "study: 2 done, 40 left, about 20m10s to go\n")


# ------------------------------------------------------------------------------ identical variants, once
def _tiny(name: str):
    from harness.config import ViTConfig
    from harness.models.vit import build_model
    from harness.presets import load_preset

    torch.manual_seed(0)
    model = build_model(ViTConfig.from_dict(load_preset("model", "tiny")), name).eval()
    with torch.no_grad():  # weights away from their init (zero tables, identity generators): as trained
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def _all_variants(model, regimes=("zoom", "canvas")):
    from harness.variants import TEMPERATURES

    policies = type(model.pe).describe().policies
    policies = list(policies) if len(policies) > 1 else [schema.NO_POLICY]
    return [Variant(r, p, t) for r in regimes for p in policies for t in TEMPERATURES.names()]


@pytest.mark.parametrize("name", sorted(__import__("harness.encodings", fromlist=["ENCODINGS"]).ENCODINGS.names()))
def test_on_the_training_grid_every_variant_is_the_model_as_trained(name):
    """What the skip rests on, for every registered encoding: at the training size each
    (policy, temperature) gives bitwise the logits of the model as trained; off it, as_trained says no."""
    from harness.train import as_trained

    model = _tiny(name)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        trained = model(x)
        for v in _all_variants(model, ("zoom",)):
            assert as_trained(model, v, Size(16, 16))
            assert not as_trained(model, v, Size(24, 24)) and not as_trained(model, v, Size(16, 24))
            with model.variant(None if v.policy == schema.NO_POLICY else v.policy, v.temperature):
                assert torch.equal(model(x), trained), v


class _Data:
    """Fixed test images per (regime, size); ``canvas_same``: the canvas of the training size is
    the training image (as the rendered scenes define it) or another one."""

    def __init__(self, canvas_same: bool = True) -> None:
        g = torch.Generator().manual_seed(0)
        self.splits = {}
        for regime in ("zoom", "canvas"):
            for side in (8, 16, 24):
                images = torch.randn(6, 3, side, side, generator=g)
                self.splits[regime, side] = type("S", (), {"images": images, "labels": torch.arange(6) % 4})()
        if canvas_same:
            zoom = self.splits["zoom", 16]
            self.splits["canvas", 16] = type("S", (), {"images": zoom.images.clone(), "labels": zoom.labels})()

    def split(self, which, size, device=None, regime="zoom", train_size=None):
        return self.splits[regime, size.rows]


@pytest.mark.parametrize("canvas_same, expected", [(True, 1 + 2 * 6 + 6), (False, 1 + 2 * 6 + 1 + 6)])
def test_evaluate_variants_evaluates_identical_variants_once_and_equals_a_plain_loop(monkeypatch, canvas_same,
                                                                                     expected):
    import harness.train as train
    import harness.training.evaluation as evaluation  # evaluate_variants's home: where it looks up evaluate
    from harness.config import TrainConfig

    model = _tiny("rope_axial")
    variants = _all_variants(model)  # 2 regimes x 3 policies x 2 temperatures
    assert len(variants) == 12
    sizes = {"zoom": [Size(8, 8), Size(16, 16), Size(24, 24)], "canvas": [Size(16, 16), Size(24, 24)]}
    data, cfg = _Data(canvas_same), TrainConfig(device="cpu")
    calls = []
    real = train.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = train.evaluate_variants(model, data, cfg, train_resolution=16, sizes=sizes, variants=variants)
    # the training size: one evaluation for all 8 variants (and the canvas's when its images are the same);
    # elsewhere one per variant: zoom 8 and 24 px, canvas 24 px, 6 variants each
    assert len(calls) == expected
    reference = {}
    for v in variants:  # the plain loop: every variant at every size of its regime, on its own
        for size in sizes[v.regime]:
            split = data.split("test", size, regime=v.regime)
            with model.variant(v.policy, v.temperature):  # with the accuracy on each half (issue #21)
                reference[v, size] = real(model, split, 512, "cpu", halves=train.split_in_halves(split.labels))
    assert got == reference and all({"acc_a", "acc_b"} <= set(m) for m in got.values())
