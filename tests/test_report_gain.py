"""The report on real images: the gain over the control ``none``, "did not train" judged against
chance (never against ``none``), and the learning-curve check ("had not converged"). Hand-built
tables and curves, against answers worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from harness import comparisons as cmp
from harness import report_answer as ans
from harness import report_curves as rc
from harness import report_pages as pages
from harness import report_stats as rs
from harness import selection as sel
from harness.report import _val_images
from harness.report import page_tables
from tests.test_report_stats import even, one, row, table

SIZES = (16, 24, 32)  # trained at 16 px; 24 and 32 above it


def study(scores: dict[str, dict[int, float]], *, val: dict[tuple[str, int], float] | None = None,
          seeds=(0, 1, 2)) -> pd.DataFrame:
    """Per encoding, seed -> a base accuracy; the accuracy at a test size is the base minus 0.05 per
    step above the training size (the same fall for every encoding: the gain is the same at
    every size). ``val``: a run's final validation accuracy (default: its base). Chance 0.1; one
    variant per encoding, halves 0.01 either side of the accuracy."""
    rows = []
    for enc, by_seed in scores.items():
        for seed in seeds:
            if seed not in by_seed:
                continue
            base = by_seed[seed]
            for i, size in enumerate(SIZES):
                acc = base - 0.05 * i
                rows.append(row(enc, 16, size, seed, acc, halves=even(acc), default="na",
                                val=(val or {}).get((enc, seed), base)))
    return table(rows)


# ---------------------------------------------------------------------------- did not train: against chance


def test_an_encoding_that_ties_a_trained_control_trained_and_one_at_chance_did_not():
    # real images: none learns to 0.80; "tie" reaches exactly none's 0.80; "dead" stays at chance (0.1)
    df = study({"none": {0: 0.80, 1: 0.80, 2: 0.80}, "tie": {0: 0.80, 1: 0.80, 2: 0.80},
                "dead": {0: 0.10, 1: 0.11, 2: 0.12}})
    runs = df.drop_duplicates("run_id").set_index("encoding")["trained"].groupby(level=0).all()
    assert runs.to_dict() == {"dead": False, "none": True, "tie": True}
    assert set(rs.untrained_runs(df)["encoding"]) == {"dead"}
    methods = sel.selection_table(df).groupby("encoding")["method"].first()
    assert methods["dead"] == sel.UNTRAINED and methods["tie"] != sel.UNTRAINED and methods["none"] != sel.UNTRAINED
    # the control learned: its line says position is not needed for part of the task, and that
    # "did not train" stays a statement about chance
    (line,) = pages.control_lines(rs.control_runs(df))
    assert "learned in 3 of 3 run(s)" in line and "judged against chance, not against `none`" in line
    # the gain: the tie adds nothing at any size; the dead encoding "did not train", not "-0.7"
    gain = cmp.gain_over_control(df)
    tie = gain.loc[gain["encoding"] == "tie"]
    assert tie["gain"].tolist() == pytest.approx([0.0, 0.0, 0.0]) and (tie["n_pairs"] == 3).all()
    dead = gain.loc[gain["encoding"] == "dead"]
    assert (dead["n_pairs"] == 0).all() and dead["gain"].isna().all() and (dead["n_untrained"] == 3).all()
    shown = ans.gain_table(gain.loc[gain["regime"] == "zoom"]).set_index("encoding")
    assert shown.loc["dead", "24 px"] == "did not train (3 runs)" and shown.loc["dead", "runs that trained"] == "0/3"
    assert shown.loc["tie", "24 px"] == "+0.000 [+0.000, +0.000]"


def test_a_control_at_chance_still_anchors_the_gain():
    # the synthetic case: none at chance in every run (flagged "did not train"); its accuracy is its measurement
    df = study({"none": {0: 0.10, 1: 0.10, 2: 0.10}, "rope": {0: 0.70, 1: 0.75, 2: 0.80}})
    assert set(rs.untrained_runs(df)["encoding"]) == {"none"}
    gain = cmp.gain_over_control(df)
    at24 = one(gain, encoding="rope", test_resolution="24")
    assert at24["n_pairs"] == 3 and at24["gain"] == pytest.approx(0.65)  # (0.65, 0.70, 0.75) - 0.05 each
    assert one(gain, encoding="none", test_resolution="24")["control_acc"] == pytest.approx(0.05)


# ---------------------------------------------------------------------------- the gain, by hand


def test_the_gain_is_paired_by_seed_with_the_reports_interval():
    # rope: seeds 0-2 at 0.85, 0.86, 0.87; none: seeds 1-3 at 0.80, 0.78, 0.76 (seed 3: no rope run)
    df = study({"none": {1: 0.80, 2: 0.78, 3: 0.76}, "rope": {0: 0.85, 1: 0.86, 2: 0.87}}, seeds=(0, 1, 2, 3))
    gain = cmp.gain_over_control(df)
    assert list(gain.columns) == cmp.GAIN_COLUMNS
    for size in ("16", "24", "32"):
        r = one(gain, encoding="rope", test_resolution=size)
        # pairs: seed 1 (0.86 - 0.80 = 0.06) and seed 2 (0.87 - 0.78 = 0.09); seeds 0 and 3 have no partner
        assert r["n_pairs"] == 2 and r["gain"] == pytest.approx(0.075)
        assert r["encoding_acc"] - r["control_acc"] == pytest.approx(0.075)
        # two pairs: mean 0.075 -/+ t(0.975, 1) 12.706 * sd 0.0212 / sqrt 2 = 0.1906
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((0.075 - 0.190593, 0.075 + 0.190593), abs=1e-6)
    # the control's own row comes first: its mean over all its seeds at that size
    first = gain.loc[gain["test_resolution"] == "24"].iloc[0]
    assert first["encoding"] == "none" and first["control_acc"] == pytest.approx((0.80 + 0.78 + 0.76) / 3 - 0.05)
    shown = ans.gain_table(gain).set_index("encoding")
    assert list(shown.columns) == ["16 px", "24 px", "32 px", "runs that trained"]
    assert shown.index[0] == "none (control): its accuracy" and shown.iloc[0]["24 px"] == "0.730"
    lo, hi = rs.t_interval([0.06, 0.09])
    assert shown.loc["rope", "32 px"] == f"+0.075 [{lo:+.3f}, {hi:+.3f}]"


def test_a_seed_that_did_not_train_has_no_pair_and_one_pair_has_no_interval():
    # rope's seed 0 is at chance (val 0.12): left out; seed 1 pairs; seed 2 of none is missing
    df = study({"none": {0: 0.80, 1: 0.80}, "rope": {0: 0.12, 1: 0.90, 2: 0.95}}, val={("rope", 0): 0.12})
    r = one(cmp.gain_over_control(df), encoding="rope", test_resolution="16")
    assert r["n_pairs"] == 1 and r["gain"] == pytest.approx(0.10) and math.isnan(r["ci_low"])
    assert (r["n_runs"], r["n_untrained"]) == (3, 1)
    shown = ans.gain_table(cmp.gain_over_control(df)).set_index("encoding")
    assert shown.loc["rope", "16 px"] == "+0.100 (1 pair)" and shown.loc["rope", "runs that trained"] == "2/3"


def test_without_a_control_the_section_says_so_in_one_line():
    df = study({"rope": {0: 0.9, 1: 0.9}, "learned": {0: 0.8, 1: 0.8}})
    gain = cmp.gain_over_control(df)
    assert gain.empty and list(gain.columns) == cmp.GAIN_COLUMNS
    (section,) = page_tables._gain_sections(gain)
    md = pages.markdown_page("s", [], [section], [])
    body = md.split("## What position adds: gain over `none`\n\n")[1].split("\n## ")[0].strip()
    assert body == "This study has no position-free control (`none`): what position adds over it cannot be measured."
    page = pages.html_page("s", [], [section], [], {}, {})
    assert "<p>This study has no position-free control (<code>none</code>)" in page


# ---------------------------------------------------------------------------- had not converged


N = 1000  # validation images


def test_the_window_is_a_quarter_of_the_epochs_and_never_one():
    assert [rc.window(e) for e in (1, 3, 6, 8, 11, 12, 40)] == [2, 2, 2, 2, 2, 3, 10]


def test_a_rising_curve_had_not_converged():
    c = rc.curve_check([0.50, 0.60, 0.65, 0.70, 0.72, 0.74, 0.78, 0.82], N)
    # k = 2: previous (0.72 + 0.74) / 2 = 0.73, last (0.78 + 0.82) / 2 = 0.80, rise 0.07;
    # p = 0.765, threshold 2 * sqrt(0.765 * 0.235 / 1000) = 0.026816
    assert (c["window"], c["previous_mean"], c["last_mean"]) == (2, pytest.approx(0.73), pytest.approx(0.80))
    assert c["rise"] == pytest.approx(0.07) and c["threshold"] == pytest.approx(0.026816, abs=1e-6)
    assert c["status"] == rc.NOT_CONVERGED


def test_a_flat_curve_converged():
    c = rc.curve_check([0.5, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8], N)
    assert c["rise"] == pytest.approx(0.0) and c["status"] == rc.CONVERGED
    falling = rc.curve_check([0.5, 0.7, 0.85, 0.85, 0.8, 0.8], N)
    assert falling["rise"] < 0 and falling["status"] == rc.CONVERGED


def test_a_noisy_flat_curve_within_the_noise_converged_and_the_noise_depends_on_n_val():
    curve = [0.5, 0.7, 0.79, 0.80, 0.81, 0.80]
    # previous 0.795, last 0.805: a rise of 0.01 < 2 * sqrt(0.8 * 0.2 / 1000) = 0.025298
    c = rc.curve_check(curve, N)
    assert c["rise"] == pytest.approx(0.01) and c["threshold"] == pytest.approx(0.025298, abs=1e-6)
    assert c["status"] == rc.CONVERGED
    # the same rise measured on 100,000 images is beyond their noise (threshold 0.00253)
    assert rc.curve_check(curve, 100_000)["status"] == rc.NOT_CONVERGED


def test_the_window_grows_with_the_epochs():
    # 12 epochs: k = 3: (0.70, 0.75, 0.80) -> (0.80, 0.80, 0.80), a rise of 0.05 > 0.026410;
    # with k = 2 the last four epochs alone are flat
    c = rc.curve_check([0.3] * 6 + [0.70, 0.75, 0.80, 0.80, 0.80, 0.80], N)
    assert c["window"] == 3 and c["rise"] == pytest.approx(0.05) and c["status"] == rc.NOT_CONVERGED


def test_too_short_or_no_validation_size_cannot_tell():
    short = rc.curve_check([0.3, 0.5, 0.7], N)
    assert short["status"] == rc.CANNOT_TELL and "3 epoch(s)" in short["reason"] and math.isnan(short["rise"])
    assert rc.curve_check([0.3, 0.5, 0.7, 0.9], N)["status"] == rc.NOT_CONVERGED  # 4 epochs: two windows of 2
    unknown = rc.curve_check([0.3, 0.5, 0.7, 0.9], None)
    assert unknown["status"] == rc.CANNOT_TELL and "size is unknown" in unknown["reason"]
    assert rc.curve_check([0.3, 0.5, 0.7, 0.9], math.nan)["status"] == rc.CANNOT_TELL


def curves_of(by_run: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for run_id, accs in by_run.items():
        enc, seed = run_id.split("-")[0], int(run_id.split("-")[2])
        rows += [{"encoding": enc, "train_resolution": 16, "seed": seed, "epoch": e + 1, "val_acc": v,
                  "run_id": run_id} for e, v in enumerate(accs)]
    return pd.DataFrame(rows)


def test_convergence_per_run_and_per_encoding():
    df = study({"none": {0: 0.8, 1: 0.8, 2: 0.8}, "rope": {0: 0.9, 1: 0.9, 2: 0.9}})
    df["val_images"] = float(N)
    rising, flat = [0.5, 0.6, 0.7, 0.8], [0.8, 0.8, 0.8, 0.8]
    curves = curves_of({"rope-16-0-FINISHED": rising, "rope-16-1-FINISHED": flat, "rope-16-2-FINISHED": rising,
                        "none-16-0-FINISHED": flat, "none-16-1-FINISHED": flat})  # none seed 2: no curve
    # an epoch logged twice (a resumed run) counts once, its last value: rope seed 1 stays flat
    curves = pd.concat([pd.DataFrame([{"encoding": "rope", "train_resolution": 16, "seed": 1, "epoch": 4,
                                       "val_acc": 0.99, "run_id": "rope-16-1-FINISHED"}]), curves], ignore_index=True)
    conv = rc.convergence(curves, df)
    assert list(conv.columns) == rc.CONVERGENCE_COLUMNS and len(conv) == 6
    status = conv.set_index("run_id")["status"].to_dict()
    assert status == {"none-16-0-FINISHED": rc.CONVERGED, "none-16-1-FINISHED": rc.CONVERGED,
                      "none-16-2-FINISHED": rc.CANNOT_TELL, "rope-16-0-FINISHED": rc.NOT_CONVERGED,
                      "rope-16-1-FINISHED": rc.CONVERGED, "rope-16-2-FINISHED": rc.NOT_CONVERGED}
    counts = rc.convergence_counts(conv).set_index("encoding")
    assert counts.loc["rope", ["n_runs", "n_not_converged", "n_cannot_tell"]].tolist() == [3, 2, 0]
    assert counts.loc["none", ["n_runs", "n_not_converged", "n_cannot_tell"]].tolist() == [3, 0, 1]
    assert rc.convergence_text(3, 2, 0) == "2 of 3 runs"
    assert rc.convergence_text(3, 0, 1) == "0 of 2 runs (1 cannot tell)"
    assert rc.convergence_text(3, 0, 3) == "cannot tell (3 runs)"
    # the main table says it per encoding; the answer says it when a leader's run had not converged
    selection = sel.selection_table(df)
    main = ans.main_table(selection.loc[selection["side"] == "above"], sel.selected_scores(df), conv)
    assert main.set_index("encoding")["had not converged"].to_dict() == {"none": "0 of 2 runs (1 cannot tell)",
                                                                         "rope": "2 of 3 runs"}
    head = cmp.headline(df)
    line = ans.budget_line(head, conv)
    assert line.startswith("**Budget**: 2 of 3 run(s) of rope (trained at 16 px) had not converged")
    assert ans.budget_line(head, conv.assign(status=rc.CONVERGED)) is None
    # and the page lists the runs that had not converged
    section = page_tables._convergence_section(conv)
    assert sorted(section.table["run_id"]) == ["rope-16-0-FINISHED", "rope-16-2-FINISHED"]
    assert "2 of 6 finished run(s) had not converged; 1 cannot tell" in section.note


def test_the_validation_size_is_the_logged_one_else_the_datasets_option():
    assert _val_images({"config.dataset.num_val": "500"}, {"data/val_images": 1000.0}) == 1000.0
    assert _val_images({"config.dataset.num_val": "500"}, {}) == 500.0
    assert math.isnan(_val_images({"config.dataset.val_fraction": "0.1"}, {}))
