"""harness.report_stats on hand-built tables, against answers worked out by hand or from the definitions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from harness import report_stats as rs

COLUMNS = ["study", "stage", "encoding", "options", "train_resolution", "test_resolution", "seed",
           "test_acc", "test_loss", "params", "images_per_s", "run_id", "status"]

# Student t quantiles from printed tables.
T975_DF2 = 4.302652729749464
T975_DF3 = 3.182446305284263
T975_DF10 = 2.228138851986274


def row(encoding, train, test, seed, acc, status="FINISHED", run_id=None, params=1000, ips=100.0):
    """One tidy row; the run id defaults to one run per (encoding, train, seed, status)."""
    if run_id is None:
        run_id = f"{encoding}-{train}-{seed}-{status}"
    return {"study": "s", "stage": "evaluate", "encoding": encoding, "options": "{}",
            "train_resolution": train, "test_resolution": test, "seed": seed, "test_acc": acc,
            "test_loss": 1.0 - acc, "params": params, "images_per_s": ips, "run_id": run_id,
            "status": status}


def table(rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=COLUMNS)


def one(df: pd.DataFrame, **where) -> pd.Series:
    """The single row of df matching the given column values."""
    mask = np.ones(len(df), dtype=bool)
    for k, v in where.items():
        mask &= (df[k] == v).to_numpy()
    assert mask.sum() == 1, (where, df)
    return df.loc[mask].iloc[0]


@pytest.fixture(params=["scipy", "plain"])
def t_backend(request, monkeypatch):
    """Run a test with scipy's t distribution and with the plain fallback."""
    if request.param == "plain":
        monkeypatch.setattr(rs, "_scipy_stats", lambda: None)
    elif rs._scipy_stats() is None:
        pytest.skip("scipy is not installed")
    return request.param


# ------------------------------------------------------------------ t distribution


def test_plain_t_distribution_matches_closed_forms_and_tables():
    for t in (0.0, 0.5, 1.0, 3.0, 25.0):
        # df = 1 is the Cauchy distribution, df = 2 has P(|T| >= t) = 1 - t / sqrt(t^2 + 2)
        assert rs._t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), abs=1e-12)
        assert rs._t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-12)
    assert rs._t_two_sided_p(T975_DF3, 3) == pytest.approx(0.05, abs=1e-10)
    assert rs._t_two_sided_p(T975_DF10, 10) == pytest.approx(0.05, abs=1e-10)
    assert rs._t_two_sided_p(math.inf, 4) == 0.0


def test_t_quantile(t_backend):
    # df = 2: t_q = (2q - 1) * sqrt(2 / (1 - (2q - 1)^2))
    assert rs._t_quantile(0.975, 2) == pytest.approx(0.95 * math.sqrt(2 / (1 - 0.95**2)), rel=1e-10)
    assert rs._t_quantile(0.975, 2) == pytest.approx(T975_DF2, rel=1e-10)
    assert rs._t_quantile(0.975, 3) == pytest.approx(T975_DF3, rel=1e-10)
    assert rs._t_quantile(0.975, 10) == pytest.approx(T975_DF10, rel=1e-10)
    assert rs._t_quantile(0.975, 1) == pytest.approx(math.tan(math.pi * 0.475), rel=1e-10)


# ------------------------------------------------------------------ accuracy_summary


def test_accuracy_summary_mean_std_and_interval(t_backend):
    df = table([
        row("rope", 32, 48, 0, 0.5), row("rope", 32, 48, 1, 0.6), row("rope", 32, 48, 2, 0.7),
        row("rope", 32, 32, 0, 0.9),                        # one seed
        row("rope", 32, 48, 3, 0.0, status="FAILED"),       # does not count
        row("rope", 32, 48, 4, 0.0, status="RUNNING"),
    ])
    out = rs.accuracy_summary(df)
    assert list(out.columns) == ["encoding", "train_resolution", "test_resolution", "n_seeds", "mean", "std",
                                 "ci_low", "ci_high"]
    r = one(out, test_resolution=48)
    assert r["n_seeds"] == 3
    assert r["mean"] == pytest.approx(0.6)
    assert r["std"] == pytest.approx(0.1)
    half = T975_DF2 * 0.1 / math.sqrt(3)          # 0.2484138...
    assert half == pytest.approx(0.2484138, abs=1e-7)
    assert r["ci_low"] == pytest.approx(0.6 - half)
    assert r["ci_high"] == pytest.approx(0.6 + half)

    r = one(out, test_resolution=32)
    assert r["n_seeds"] == 1 and r["mean"] == pytest.approx(0.9)
    assert math.isnan(r["std"]) and math.isnan(r["ci_low"]) and math.isnan(r["ci_high"])


def test_accuracy_summary_two_seeds_and_repeated_runs():
    # seeds 0 and 1; seed 1 ran twice (0.6 and 0.8 -> 0.7): values 0.5, 0.7
    df = table([
        row("none", 16, 16, 0, 0.5),
        row("none", 16, 16, 1, 0.6, run_id="a"), row("none", 16, 16, 1, 0.8, run_id="b"),
    ])
    r = rs.accuracy_summary(df).iloc[0]
    assert r["n_seeds"] == 2
    assert r["mean"] == pytest.approx(0.6)
    assert r["std"] == pytest.approx(math.sqrt(0.02))          # sqrt(((-0.1)^2 + 0.1^2) / 1)
    half = 12.706204736174698 * math.sqrt(0.02) / math.sqrt(2)  # t_{0.975, 1}
    assert r["ci_high"] - r["mean"] == pytest.approx(half)


def test_accuracy_summary_of_nothing_finished_is_empty():
    out = rs.accuracy_summary(table([row("rope", 32, 32, 0, 0.5, status="FAILED")]))
    assert out.empty and "ci_low" in out.columns


def test_missing_column_is_named():
    df = table([row("rope", 32, 32, 0, 0.5)]).drop(columns=["test_acc"])
    with pytest.raises(ValueError, match="test_acc"):
        rs.accuracy_summary(df)


# ------------------------------------------------------------------ retention


def test_retention_ratio_of_means():
    df = table([
        row("rope", 32, 32, 0, 0.8), row("rope", 32, 32, 1, 0.6),     # mean at train 0.7
        row("rope", 32, 48, 0, 0.4), row("rope", 32, 48, 1, 0.6),     # mean 0.5
        row("rope", 32, 16, 0, 0.7), row("rope", 32, 16, 1, 0.7),     # mean 0.7
        row("learned", 32, 48, 0, 0.5),                               # 32 never tested
        row("learned", 32, 32, 0, 0.0, status="FAILED"),
    ])
    out = rs.retention(df)
    assert list(out.columns) == ["encoding", "train_resolution", "test_resolution", "mean", "mean_at_train",
                                 "retention"]
    # ratio of means 0.5 / 0.7, not the mean of per-seed ratios (0.5 + 1.0) / 2 = 0.75
    assert one(out, encoding="rope", test_resolution=48)["retention"] == pytest.approx(5 / 7)
    assert one(out, encoding="rope", test_resolution=16)["retention"] == pytest.approx(1.0)
    assert one(out, encoding="rope", test_resolution=32)["retention"] == pytest.approx(1.0)
    r = one(out, encoding="learned", test_resolution=48)
    assert r["mean"] == pytest.approx(0.5)
    assert math.isnan(r["mean_at_train"]) and math.isnan(r["retention"])


def test_retention_is_per_train_resolution():
    df = table([
        row("rope", 32, 32, 0, 0.8), row("rope", 32, 64, 0, 0.4),
        row("rope", 64, 64, 0, 0.9), row("rope", 64, 32, 0, 0.3),
    ])
    out = rs.retention(df)
    assert one(out, train_resolution=32, test_resolution=64)["retention"] == pytest.approx(0.5)
    assert one(out, train_resolution=64, test_resolution=32)["retention"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------ extrapolation_scores


def test_extrapolation_scores_below_at_above():
    df = table([
        row("rope", 32, 16, 0, 0.5), row("rope", 32, 24, 0, 0.7), row("rope", 32, 32, 0, 0.9),
        row("rope", 32, 48, 0, 0.6), row("rope", 32, 48, 1, 0.8),     # 48: mean 0.7
        row("rope", 32, 64, 0, 0.2),                                  # 64: 0.2
        row("none", 16, 16, 0, 0.4), row("none", 16, 32, 0, 0.3),
        row("none", 64, 32, 0, 0.35),
    ])
    out = rs.extrapolation_scores(df)
    assert list(out.columns) == ["encoding", "train_resolution", "below", "at", "above", "n_below", "n_above"]
    r = one(out, encoding="rope", train_resolution=32)
    assert r["below"] == pytest.approx(0.6)        # (0.5 + 0.7) / 2
    assert r["at"] == pytest.approx(0.9)
    assert r["above"] == pytest.approx(0.45)       # (0.7 + 0.2) / 2: each test resolution weighs the same
    assert (r["n_below"], r["n_above"]) == (2, 2)
    r = one(out, encoding="none", train_resolution=16)
    assert math.isnan(r["below"]) and r["at"] == pytest.approx(0.4) and r["above"] == pytest.approx(0.3)
    r = one(out, encoding="none", train_resolution=64)
    assert r["below"] == pytest.approx(0.35) and math.isnan(r["at"]) and math.isnan(r["above"])


# ------------------------------------------------------------------ holm


def test_holm_worked_example():
    assert rs.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_monotone_capped_and_nan():
    assert rs.holm([0.01, 0.02, 0.03]) == pytest.approx([0.03, 0.04, 0.04])   # 0.03 -> max(0.04, 0.03)
    assert rs.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])                   # 2 * 0.5 = 1, capped
    out = rs.holm([0.01, math.nan, 0.04])                                     # family of two
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert rs.holm([]) == []
    with pytest.raises(ValueError):
        rs.holm([1.5])


# ------------------------------------------------------------------ paired_comparisons

# diffs [0.1, 0.2, 0.3]: mean 0.2, sd 0.1, t = 0.2 / (0.1 / sqrt 3) = sqrt 12, df 2
P_A = 1 - math.sqrt(12) / math.sqrt(14)        # 0.0741799...
# diffs [0.1, 0.1, 0.4]: mean 0.2, sd sqrt(0.03), t = 2, df 2
P_B = 1 - 2 / math.sqrt(6)                     # 0.1835034...


def test_paired_t_test_by_hand(t_backend):
    df = table([
        *(row("learned", 32, 48, s, 0.5) for s in range(3)),
        *(row("rope", 32, 48, s, a) for s, a in enumerate([0.6, 0.7, 0.8])),
    ])
    out = rs.paired_comparisons(df, "learned")
    assert list(out.columns) == ["encoding", "baseline", "train_resolution", "test_resolution", "n_pairs",
                                 "mean_diff", "p_value", "p_holm", "note"]
    r = one(out, encoding="rope")
    assert P_A == pytest.approx(0.07418, abs=1e-5)
    assert r["baseline"] == "learned" and r["n_pairs"] == 3
    assert r["mean_diff"] == pytest.approx(0.2)
    assert r["p_value"] == pytest.approx(P_A, rel=1e-9)
    assert r["p_holm"] == pytest.approx(P_A, rel=1e-9)   # a family of one
    assert r["note"] == ""
    assert len(out) == 1                                  # the baseline is not compared with itself


def test_paired_holm_across_all_comparisons(t_backend):
    df = table([
        *(row("learned", 32, t, s, 0.5) for t in (32, 48) for s in range(3)),
        *(row("rope", 32, 48, s, a) for s, a in enumerate([0.6, 0.7, 0.8])),    # p = P_A
        *(row("alibi", 32, 32, s, a) for s, a in enumerate([0.6, 0.6, 0.9])),   # p = P_B
        *(row("none", 32, 48, s, a) for s, a in enumerate([0.1, 0.2])),         # 2 pairs: not in the family
    ])
    out = rs.paired_comparisons(df, "learned")
    a, b = one(out, encoding="rope"), one(out, encoding="alibi")
    assert a["p_value"] == pytest.approx(P_A, rel=1e-9)
    assert b["p_value"] == pytest.approx(P_B, rel=1e-9)
    # Holm, m = 2: 2 * P_A = 0.14836 first, then max(0.14836, P_B) = P_B
    assert a["p_holm"] == pytest.approx(2 * P_A, rel=1e-9)
    assert b["p_holm"] == pytest.approx(P_B, rel=1e-9)
    n = one(out, encoding="none")
    assert n["n_pairs"] == 2 and n["mean_diff"] == pytest.approx(-0.35)
    assert math.isnan(n["p_value"]) and math.isnan(n["p_holm"])
    assert n["note"] == "too few seeds (n pairs < min_pairs)"
    # with min_pairs = 2 the two pairs form a test and join the family (m = 3)
    out2 = rs.paired_comparisons(df, "learned", min_pairs=2)
    assert not math.isnan(one(out2, encoding="none")["p_value"])
    assert one(out2, encoding="rope")["p_holm"] == pytest.approx(min(1.0, 3 * P_A), rel=1e-9)


def test_pairing_by_common_seeds_and_row_order():
    df = table([
        # baseline seeds 1..4, encoding seeds 0..3: common 1, 2, 3 with diffs 0.1, 0.2, 0.3
        *(row("learned", 32, 48, s, a) for s, a in [(1, 0.5), (2, 0.4), (3, 0.3), (4, 0.99)]),
        *(row("rope", 32, 48, s, a) for s, a in [(0, 0.01), (1, 0.6), (2, 0.6), (3, 0.6)]),
    ])
    out = rs.paired_comparisons(df, "learned")
    r = out.iloc[0]
    assert r["n_pairs"] == 3
    assert r["mean_diff"] == pytest.approx(0.2)
    assert r["p_value"] == pytest.approx(P_A, rel=1e-9)
    for seed in range(5):
        shuffled = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        pd.testing.assert_frame_equal(rs.paired_comparisons(shuffled, "learned"), out)


def test_nan_accuracy_is_left_out():
    df = table([
        *(row("learned", 32, 48, s, 0.5) for s in range(4)),
        *(row("rope", 32, 48, s, a) for s, a in enumerate([0.6, 0.7, 0.8])),
        row("rope", 32, 48, 3, math.nan),
    ])
    r = rs.paired_comparisons(df, "learned").iloc[0]
    assert r["n_pairs"] == 3 and r["p_value"] == pytest.approx(P_A, rel=1e-9)
    r = rs.accuracy_summary(df.loc[df["encoding"] == "rope"]).iloc[0]
    assert r["n_seeds"] == 3 and r["mean"] == pytest.approx(0.7)


def test_paired_cells_without_baseline_and_too_few():
    df = table([
        *(row("learned", 32, 32, s, 0.5) for s in range(3)),
        *(row("rope", 32, 32, s, 0.6) for s in range(2)),
        *(row("rope", 32, 64, s, 0.6) for s in range(3)),      # the baseline was not tested at 64
    ])
    out = rs.paired_comparisons(df, "learned")
    r = one(out, test_resolution=32)
    assert r["n_pairs"] == 2 and r["note"] == "too few seeds (n pairs < min_pairs)"
    assert math.isnan(r["p_value"]) and math.isnan(r["p_holm"])
    r = one(out, test_resolution=64)
    assert r["n_pairs"] == 0 and math.isnan(r["mean_diff"]) and r["note"] == "too few seeds (n pairs < min_pairs)"


def test_paired_zero_variance(t_backend):
    df = table([
        *(row("learned", 32, 32, s, a) for s, a in enumerate([0.5, 0.6, 0.7])),
        *(row("rope", 32, 32, s, a) for s, a in enumerate([0.6, 0.7, 0.8])),   # diffs 0.1 up to rounding
        *(row("none", 32, 32, s, a) for s, a in enumerate([0.5, 0.6, 0.7])),   # diffs 0
        *(row("alibi", 32, 32, s, a) for s, a in enumerate([0.6, 0.7, 0.9])),  # a real test
    ])
    out = rs.paired_comparisons(df, "learned")
    for enc, diff in (("rope", 0.1), ("none", 0.0)):
        r = one(out, encoding=enc)
        assert r["mean_diff"] == pytest.approx(diff, abs=1e-12)
        assert math.isnan(r["p_value"]) and math.isnan(r["p_holm"])
        assert r["note"] == "no variance in the differences"
    r = one(out, encoding="alibi")     # diffs [0.1, 0.1, 0.2]: t = (0.4/3) / (sqrt(1/300) / sqrt 3) = 4, df 2
    assert r["p_value"] == pytest.approx(1 - 4 / math.sqrt(18), rel=1e-9)
    assert r["p_holm"] == pytest.approx(r["p_value"])   # the only member of the family


def test_paired_missing_baseline_raises():
    df = table([row("rope", 32, 32, 0, 0.5), row("learned", 32, 32, 0, 0.5, status="FAILED")])
    with pytest.raises(ValueError, match=r"learned.*rope"):
        rs.paired_comparisons(df, "learned")
    with pytest.raises(ValueError, match="min_pairs"):
        rs.paired_comparisons(df, "rope", min_pairs=1)


def test_default_baseline():
    assert rs.default_baseline(["none", "learned", "rope"]) == "learned"
    assert rs.default_baseline(["none", "learned"], requested="none") == "none"
    assert rs.default_baseline(pd.Series(["none", "rope", "rope"])) is None
    assert rs.default_baseline([]) is None


# ------------------------------------------------------------------ ranking


def test_ranking_ties_get_the_minimum_rank():
    df = table([
        row("a", 32, 32, 0, 0.8), row("b", 32, 32, 0, 0.7), row("b", 32, 32, 1, 0.9),  # b: 0.8
        row("c", 32, 32, 0, 0.6), row("d", 32, 32, 0, 0.9),
        # at 48: (0.1 + 0.2) / 2 and 0.15 differ in the last bit only: a tie
        row("a", 32, 48, 0, 0.1), row("a", 32, 48, 1, 0.2), row("b", 32, 48, 0, 0.15),
        row("c", 32, 48, 0, 0.05), row("c", 32, 48, 1, 0.99, status="FAILED"),
    ])
    out = rs.ranking(df)
    assert list(out.columns) == ["train_resolution", "test_resolution", "encoding", "mean", "rank"]
    at32 = out.loc[out["test_resolution"] == 32]
    assert list(at32["encoding"]) == ["d", "a", "b", "c"]
    assert list(at32["rank"]) == [1, 2, 2, 4]
    at48 = out.loc[out["test_resolution"] == 48]
    assert dict(zip(at48["encoding"], at48["rank"])) == {"a": 1, "b": 1, "c": 3}


# ------------------------------------------------------------------ cost_table


def test_cost_relative_to_none():
    df = table([
        # none: run n0 has three rows, n1 one row: the mean is over runs, (90 + 110) / 2
        *(row("none", 32, t, 0, 0.3, run_id="n0", params=1000, ips=90.0) for t in (16, 32, 48)),
        row("none", 32, 32, 1, 0.3, run_id="n1", params=1000, ips=110.0),
        row("learned", 32, 32, 0, 0.5, run_id="l0", params=1256, ips=80.0),
        row("learned", 32, 48, 0, 0.5, run_id="l0", params=1256, ips=80.0),
        row("learned", 32, 32, 1, 0.5, run_id="l1", params=1256, ips=1e6, status="FAILED"),
    ])
    out = rs.cost_table(df)
    assert list(out.columns) == ["encoding", "params", "params_vs_none", "images_per_s", "throughput_vs_none"]
    n, l = one(out, encoding="none"), one(out, encoding="learned")
    assert n["params"] == 1000 and n["params_vs_none"] == 0
    assert n["images_per_s"] == pytest.approx(100.0) and n["throughput_vs_none"] == pytest.approx(1.0)
    assert l["params"] == 1256 and l["params_vs_none"] == 256
    assert l["images_per_s"] == pytest.approx(80.0) and l["throughput_vs_none"] == pytest.approx(0.8)

    out = rs.cost_table(df.loc[df["encoding"] != "none"])
    r = one(out, encoding="learned")
    assert r["params"] == 1256 and math.isnan(r["params_vs_none"]) and math.isnan(r["throughput_vs_none"])


def test_cost_per_train_resolution():
    df = table([
        row("none", 32, 32, 0, 0.3, params=1000, ips=100.0), row("none", 64, 64, 0, 0.3, params=1000, ips=25.0),
        row("learned", 32, 32, 0, 0.5, params=1064, ips=50.0),
        row("learned", 64, 64, 0, 0.5, params=1256, ips=20.0),
    ])
    out = rs.cost_table(df)
    r = one(out, encoding="learned")
    assert r["params"] == 1064                   # the first value: smallest train resolution
    assert r["images_per_s"] == pytest.approx(35.0) and r["throughput_vs_none"] == pytest.approx(35.0 / 62.5)
    out = rs.cost_table(df, per_train_resolution=True)
    assert list(out.columns) == ["encoding", "train_resolution", "params", "params_vs_none", "images_per_s",
                                 "throughput_vs_none"]
    r = one(out, encoding="learned", train_resolution=64)
    assert r["params_vs_none"] == 256 and r["throughput_vs_none"] == pytest.approx(0.8)
    r = one(out, encoding="learned", train_resolution=32)
    assert r["params_vs_none"] == 64 and r["throughput_vs_none"] == pytest.approx(0.5)


# ------------------------------------------------------------------ missing_cells


def test_missing_cells_states():
    df = table([
        row("rope", 32, 32, 0, 0.5),                                            # finished
        row("rope", 32, 48, 0, 0.5),
        row("rope", 32, 32, 1, 0.0, status="FAILED", run_id="r1"),               # failed twice
        row("rope", 32, 48, 1, 0.0, status="FAILED", run_id="r1"),
        row("rope", 32, 32, 1, 0.0, status="KILLED", run_id="r2"),
        row("rope", 32, 32, 2, 0.0, status="RUNNING", run_id="r4"),              # running
        row("rope", 32, 32, 3, 0.0, status="FAILED", run_id="r5"),               # retry running
        row("rope", 32, 32, 3, 0.0, status="RUNNING", run_id="r6"),
        row("rope", 32, 32, 5, 0.0, status="FAILED", run_id="r7"),               # failed, then finished
        row("rope", 32, 32, 5, 0.6, run_id="r8"),
    ])
    expected = [("rope", 32, s) for s in range(6)] + [("learned", 32, 0), ("rope", 32, 1)]
    out = rs.missing_cells(df, expected)
    assert list(out.columns) == ["encoding", "train_resolution", "seed", "state", "detail"]
    assert out.to_dict("records") == [
        {"encoding": "rope", "train_resolution": 32, "seed": 1, "state": "failed", "detail": "r1, r2"},
        {"encoding": "rope", "train_resolution": 32, "seed": 2, "state": "running", "detail": "r4"},
        {"encoding": "rope", "train_resolution": 32, "seed": 3, "state": "running", "detail": "r5, r6"},
        {"encoding": "rope", "train_resolution": 32, "seed": 4, "state": "missing", "detail": ""},
        {"encoding": "learned", "train_resolution": 32, "seed": 0, "state": "missing", "detail": ""},
    ]
    assert rs.missing_cells(df, [("rope", 32, 0)]).empty


# ------------------------------------------------------------------ non-finished rows


def test_unfinished_rows_change_no_statistic():
    good = table([
        *(row(e, 32, t, s, 0.4 + 0.1 * s + (0.05 if e == "rope" else 0) - 0.01 * (t == 48) * s * s,
              params=1000 + 64 * (e == "learned"), ips=100.0 - 10 * (e == "rope"))
          for e in ("none", "learned", "rope") for t in (32, 48) for s in range(3)),
    ])
    bad = table([
        row(e, 32, t, s, 0.0, status=st, params=1, ips=1e9)
        for e in ("none", "learned", "rope", "alibi") for t in (16, 32, 48) for s in (0, 7)
        for st in ("FAILED", "KILLED", "RUNNING")
    ])
    both = pd.concat([bad, good], ignore_index=True)
    for f in (rs.accuracy_summary, rs.retention, rs.extrapolation_scores, rs.ranking, rs.cost_table,
              lambda d: rs.paired_comparisons(d, "learned")):
        pd.testing.assert_frame_equal(f(both), f(good))
