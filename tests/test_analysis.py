"""Statistics for few seeds and the declared primary analysis (issue #21), against worked examples:
P(A > B) by hand and as scipy's Mann-Whitney U, the seeds a paired t-test needs against
statsmodels, a Friedman test by hand against scipy, Nemenyi's critical difference against
Demsar's (2006) table through autorank, and the primary family's Holm correction."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness import analysis as an
from harness import comparisons as cmp
from harness import selection as sel
from tests.test_report_stats import even, row, table

# ------------------------------------------------------------------ P(A > B)


def test_probability_of_improvement_by_hand_and_as_mann_whitney():
    # stratum 48: A 0.9 beats all three of B; A 0.8 loses to 0.85, ties 0.8, beats 0.7: (3 + 0 + 0.5 + 1) / 6
    a = {"48": [0.9, 0.8], "64": [0.5, 0.5]}
    b = {"48": [0.85, 0.8, 0.7], "64": [0.6, 0.6, 0.6]}
    p, lo, hi = an.probability_of_improvement(a, b)
    assert p == pytest.approx((4.5 / 6 + 0.0) / 2)
    # per stratum it is the Mann-Whitney U of A over n_a * n_b (ties count one half), as scipy counts it
    rng = np.random.default_rng(1)
    for _ in range(5):
        x, y = rng.choice([0.5, 0.6, 0.7, 0.8], size=4), rng.choice([0.5, 0.6, 0.7, 0.8], size=3)
        u = stats.mannwhitneyu(x, y).statistic
        assert an.probability_of_improvement({0: x}, {0: y})[0] == pytest.approx(u / 12)
    assert 0.0 <= lo <= p <= hi <= 1.0
    # A above B at every seed and size: 1, and every resample says so
    assert an.probability_of_improvement({1: [0.9, 0.95]}, {1: [0.1, 0.2]}) == (1.0, 1.0, 1.0)
    # reproducible, and a stratum only one side has is left out
    assert an.probability_of_improvement(a, b) == (p, lo, hi)
    assert an.probability_of_improvement({**a, "96": [1.0]}, b) == (p, lo, hi)
    assert all(math.isnan(v) for v in an.probability_of_improvement({"48": [0.5]}, {"64": [0.5]}))


def test_the_interval_of_p_is_a_stratified_bootstrap_over_seeds():
    """Resampling within each stratum: a stratum where A always wins keeps its 1 in every
    resample, so P never falls below half of it; equal draws centre the interval on one half."""
    a = {"x": [0.9, 0.91, 0.92], "y": [0.1, 0.5, 0.9]}
    b = {"x": [0.2, 0.3, 0.4], "y": [0.2, 0.5, 0.8]}
    p, lo, hi = an.probability_of_improvement(a, b)
    assert lo >= 0.5 and hi <= 1.0 and lo < p < hi
    same = {"x": [0.1, 0.2, 0.3, 0.4, 0.5]}
    p, lo, hi = an.probability_of_improvement(same, same)
    assert p == 0.5 and lo < 0.5 < hi and 0.5 - lo == pytest.approx(hi - 0.5, abs=0.1)


# ------------------------------------------------------------------ power


@pytest.mark.parametrize("diffs", [[0.05, 0.02, 0.08], [0.03, -0.01, 0.04, 0.02, 0.0], [0.2, 0.21, 0.25],
                                   [0.01, -0.02, 0.015]])
def test_seeds_needed_is_statsmodels_paired_t_test_power(diffs):
    from statsmodels.stats.power import TTestPower

    d = np.asarray(diffs)
    effect = abs(d.mean()) / d.std(ddof=1)
    power = TTestPower()
    with np.errstate(all="ignore"):
        for n in (2, 3, 5, 10, 30):  # the power itself, at several sizes
            want = power.power(effect, nobs=n, alpha=0.05)
            if math.isnan(want):  # scipy's noncentral t gives up far in its tail, where the power is 1
                assert an.paired_power(effect, n) > 0.999
            else:
                assert an.paired_power(effect, n) == pytest.approx(want, abs=1e-9)
    n, note = an.seeds_needed(d)
    want = math.ceil(power.solve_power(effect_size=effect, nobs=None, alpha=0.05, power=0.8,
                                       alternative="two-sided"))
    if want > 30:
        assert n is None and note == "more than 30"
    else:
        assert n == max(want, 2) and note == ""
        assert an.paired_power(effect, n) >= 0.8 > (an.paired_power(effect, n - 1) if n > 2 else 0.0)


def test_seeds_needed_says_why_when_it_cannot():
    assert an.seeds_needed([0.1, 0.1, 0.1]) == (None, "no variance in the differences")
    assert an.seeds_needed([0.1]) == (None, "fewer than 2 pairs")
    assert an.seeds_needed([0.001, -0.002, 0.0015], max_seeds=12) == (None, "more than 12")
    assert an.seeds_text(7, "") == "7 seeds" and an.seeds_text(None, "more than 30") == "more than 30"


# ------------------------------------------------------------------ Friedman, Nemenyi, autorank


def _blocks(values: dict[str, list[float]]) -> pd.DataFrame:
    """A selected-scores table of one regime and side: every value a (seed, size) block."""
    rows = []
    for enc, accs in values.items():
        for i, acc in enumerate(accs):
            rows.append({"regime": "zoom", "train_resolution": 32, "side": "above", "encoding": enc, "seed": i // 2,
                         "test_resolution": str(48 + 16 * (i % 2)), "test_rows": 48 + 16 * (i % 2),
                         "test_cols": 48 + 16 * (i % 2), "test_acc": acc})
    return pd.DataFrame(rows, columns=sel.SELECTED_COLUMNS)


def test_friedman_by_hand_and_scipy():
    # five blocks, three encodings; A first everywhere, B second in four blocks, C in one:
    # rank sums 5, 11, 14
    values = {"a": [0.9, 0.9, 0.9, 0.9, 0.9], "b": [0.8, 0.8, 0.8, 0.8, 0.5], "c": [0.7, 0.7, 0.7, 0.7, 0.6]}
    n, k, sums = 5, 3, np.array([5, 11, 14])
    chi2 = 12 / (n * k * (k + 1)) * (sums ** 2).sum() - 3 * n * (k + 1)
    assert chi2 == pytest.approx(8.4)
    p_hand = math.exp(-chi2 / 2)  # chi-square with 2 degrees of freedom
    assert stats.friedmanchisquare(*values.values()).pvalue == pytest.approx(p_hand, rel=1e-12)
    out, results = an.friedman_nemenyi(_blocks(values))
    assert list(out["encoding"]) == ["a", "b", "c"]
    assert out["mean_rank"].tolist() == pytest.approx(list(sums / n))
    assert out["friedman_p"].tolist() == pytest.approx([p_hand] * 3, rel=1e-12)
    # Nemenyi's critical difference, q_0.05 = 2.343 for k = 3 (Demsar 2006, table 5a)
    assert out["cd"].iloc[0] == pytest.approx(2.343 * math.sqrt(k * (k + 1) / (6 * n)), abs=1e-3)
    assert set(results) == {("zoom", 32, "above")}


def test_autorank_critical_difference_is_demsars_worked_example():
    """Demsar (2006), section 3.2.2: four classifiers on fourteen data sets, q_0.05 = 2.569,
    CD = 2.569 * sqrt(4 * 5 / (6 * 14)) = 1.25."""
    rng = np.random.default_rng(5)
    values = {e: list(rng.uniform(0.5, 0.9, size=14)) for e in ("c45", "c45_m", "c45_cf", "c45_m_cf")}
    out, _ = an.friedman_nemenyi(_blocks(values))
    assert out["cd"].iloc[0] == pytest.approx(1.25, abs=0.005)
    assert out["n_blocks"].iloc[0] == 14 and out["n_encodings"].iloc[0] == 4
    assert sorted(out["mean_rank"]) == pytest.approx(sorted(pd.DataFrame(values).rank(axis=1, ascending=False)
                                                            .mean().to_numpy()))


def test_too_few_blocks_or_encodings_are_not_ranked_and_say_why():
    out, results = an.friedman_nemenyi(_blocks({"a": [0.9] * 4, "b": [0.8] * 4, "c": [0.7] * 4}))
    assert results == {} and out["encoding"].isna().all() and "4 (seed, size) blocks" in out["note"].iloc[0]
    out, _ = an.friedman_nemenyi(_blocks({"a": [0.9] * 6, "b": [0.8] * 6}))
    assert "2 encodings" in out["note"].iloc[0]
    # an encoding missing a block (a seed that did not train) is left out, and named
    frame = _blocks({"a": [0.9] * 6, "b": [0.8] * 6, "c": [0.7] * 6, "d": [0.6] * 6})
    out, _ = an.friedman_nemenyi(frame.iloc[:-1])
    assert set(out["encoding"]) == {"a", "b", "c"} and "left out (a seed missing): d" in out["note"].iloc[0]


# ------------------------------------------------------------------ the primary family


def test_the_primary_family_is_the_declared_comparisons_alone():
    rope = [0.8, 0.82, 0.85]
    learned = [0.7, 0.75, 0.72]
    df = table([
        *(row("rope", 32, 48, s, a, halves=even(a)) for s, a in enumerate(rope)),
        *(row("learned", 32, 48, s, a, halves=even(a)) for s, a in enumerate(learned)),
        *(row("sincos", 32, 48, s, a, halves=even(a)) for s, a in enumerate([0.9, 0.6, 0.71])),
        *(row(e, 32, 16, s, 0.5, halves=even(0.5)) for e in ("rope", "learned", "sincos") for s in range(3)),
        *(row("alibi", 32, 48, s, 0.1, val=0.1) for s in range(3)),              # did not train
    ])
    selected, selection = sel.selected_scores(df), sel.selection_table(df)
    out = an.primary_analysis(selected, selection, ["rope vs learned", "sincos vs learned", "rope vs alibi"],
                              ["above"])
    assert list(out.columns) == an.PRIMARY_COLUMNS and len(out) == 3  # below was not declared
    r, s, a = (out.iloc[i] for i in range(3))
    d = np.array(rope) - np.array(learned)
    assert r["mean_diff"] == pytest.approx(d.mean()) and r["n_pairs"] == 3
    assert r["p_value"] == pytest.approx(stats.ttest_rel(rope, learned).pvalue, rel=1e-12)
    assert (r["diff_low"], r["diff_high"]) == pytest.approx(stats.t.interval(0.95, 2, loc=d.mean(), scale=stats.sem(d)))
    assert r["prob"] == 1.0 and r["seeds_needed"] == an.seeds_needed(d)[0]
    # and at Holm's strictest level over the two tested comparisons: more seeds, never fewer
    assert r["seeds_needed_family"] == an.seeds_needed(d, alpha=0.05 / 2)[0] >= r["seeds_needed"]
    assert r["a_label"] == "rope (no policy, temp none)"
    assert (r["a_mean"], r["b_mean"]) == pytest.approx((np.mean(rope), np.mean(learned)))
    # Holm over the two tested comparisons only: the untested one (alibi did not train) is not counted
    assert a["note"] == "alibi: no run that trained" and math.isnan(a["p_value"]) and a["n_pairs"] == 0
    assert [r["p_holm"], s["p_holm"]] == pytest.approx(cmp.holm([r["p_value"], s["p_value"]]))
    # the exploratory comparisons of the same runs are another family, with its own correction: rope and
    # sincos against learned above, and the ties below (no variance, untested)
    comp = cmp.paired_comparisons(df, "learned").query("kind == 'encoding'")
    assert len(comp) == 4 and comp["p_value"].notna().sum() == 2
    assert comp["p_holm"].dropna().tolist() == pytest.approx(cmp.holm(comp["p_value"].dropna()))


def test_a_declared_comparison_at_the_ceiling_says_it_cannot_rank():
    """Two encodings both at >= 0.99 cannot be ordered by this task, whatever a test says (DESIGN §9:
    a task on which the candidates tie at the ceiling cannot rank them); below it, no such note."""
    from types import SimpleNamespace

    from harness.report.answer import primary_lines

    analysis = SimpleNamespace(primary=["rope vs learned"], endpoint=SimpleNamespace(sides=["above"]), alpha=0.05,
                               power=0.8)
    for rope, learned, at_ceiling in (([0.995, 0.999, 1.0], [0.99, 0.992, 0.998], True),
                                      ([0.995, 0.999, 1.0], [0.95, 0.992, 0.998], False)):
        df = table([
            *(row("rope", 32, 48, s, a, halves=even(a)) for s, a in enumerate(rope)),
            *(row("learned", 32, 48, s, a, halves=even(a)) for s, a in enumerate(learned)),
        ])
        out = an.primary_analysis(sel.selected_scores(df), sel.selection_table(df), ["rope vs learned"], ["above"])
        line = primary_lines(out, analysis)[1]
        assert line.startswith("**Zoom** regime, above the training size (32 px): **rope")
        assert ("Both are at the ceiling (0.998 and 0.993, >= 0.99): this task cannot rank them here" in line) \
            == at_ceiling, line
