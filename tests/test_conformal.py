"""The trusted-sample cut (`thresholds.conformal`) and the unsafe-share estimate (`share`)."""

import numpy as np
import pytest

from forgetfilter import filters, recipes, share
from forgetfilter.thresholds import (
    ThresholdConfig,
    choose_threshold,
    conformal,
    conformal_rank,
    min_trusted,
)


@pytest.mark.parametrize("alpha,n_trusted", [(0.05, 50), (0.1, 30), (0.2, 200)])
def test_the_conformal_cut_removes_at_most_alpha_of_clean_examples_by_simulation(alpha, n_trusted):
    rng = np.random.default_rng(0)
    shares = []
    for _ in range(2000):
        trusted = rng.normal(size=n_trusted)
        clean = rng.normal(size=200)
        unsafe = rng.normal(2.0, size=20)
        choice = conformal(np.concatenate([clean, unsafe]), trusted, alpha)
        shares.append(float((clean > choice.phi).mean()))
    mean = float(np.mean(shares))
    assert mean <= alpha + 3 * np.std(shares) / np.sqrt(len(shares))  # the bound, with slack
    assert mean > alpha * 0.5  # and not trivially (removing nothing also meets the bound)


def test_a_trusted_sample_too_small_for_alpha_removes_nothing_and_says_so():
    assert min_trusted(0.05) == 19 and conformal_rank(19, 0.05) == 19
    assert conformal_rank(18, 0.05) == 19  # > 18: no trusted score is high enough
    choice = conformal(np.arange(10.0), np.arange(18.0), 0.05)
    assert choice.n_removed == 0 and "needs at least 19" in choice.reason


def test_auto_with_a_trusted_sample_is_conformal_and_explicit_cuts_win():
    scores, trusted = np.linspace(0, 1, 100), np.linspace(0, 0.5, 40)
    assert choose_threshold(scores, ThresholdConfig(), trusted=trusted).method == "conformal"
    frac = ThresholdConfig("fraction", fraction=0.1)
    assert choose_threshold(scores, frac, trusted=trusted).n_removed == 10
    capped = ThresholdConfig(max_remove=3)
    assert choose_threshold(scores, capped, trusted=trusted).n_removed == 3


def test_a_filter_calibrates_on_the_trusted_part_and_cuts_only_the_noisy_part():
    rng = np.random.default_rng(1)
    m1 = rng.normal(2.0, 0.1, size=130)
    m2 = m1 + np.concatenate([rng.normal(0, 0.05, 100), rng.normal(1, 0.05, 10), np.zeros(20)])
    table = recipes.ScoreTable("loss", m1, m2)
    records = [None] * 130
    d = filters.get("forgetfilter").decide(
        records, table, ThresholdConfig(max_false_removal=0.1), "none", 0, n_trusted=20
    )
    assert d.score.shape == (110,) and d.trusted.shape == (20,)
    assert d.choice.method == "conformal" and d.choice.details["n_trusted"] == 20
    assert set(range(100, 110)) <= set(d.reasons) and max(d.reasons) < 110


def test_the_unsafe_share_interval_covers_the_true_share_in_most_draws():
    rng = np.random.default_rng(2)
    covered = []
    for true in (0.05, 0.1, 0.3):
        for _ in range(8):
            n_unsafe = int(1000 * true)
            clean, unsafe = rng.normal(size=1000 - n_unsafe), rng.normal(4, size=n_unsafe)
            est = share.unsafe_share(np.concatenate([clean, unsafe]), rng.normal(size=300))
            covered.append(est["low"] <= true <= est["high"])
    assert np.mean(covered) >= 0.75, np.mean(covered)  # a 90% interval, estimated
    assert "looks unsafe" in share.describe(est)


def test_the_unsafe_share_estimate_of_clean_data_is_near_zero():
    rng = np.random.default_rng(3)
    est = share.unsafe_share(rng.normal(size=800), rng.normal(size=200), seed=0)
    assert est["low"] == 0.0 and est["estimate"] < 0.1
    assert share.unsafe_share(np.ones(5), np.ones(3))["estimate"] is None


def test_max_false_removal_reaches_the_config_and_is_checked():
    from forgetfilter.cli import build_parser, run_config_from_args
    from forgetfilter.errors import ConfigError
    from forgetfilter.pipeline import RunConfig

    argv = ["run", "--noisy", "n", "--safe", "s", "--out", "o", "--max-false-removal", "0.1"]
    args = build_parser().parse_args(argv + ["--trusted", "t.jsonl"])
    assert (
        run_config_from_args(args).threshold.max_false_removal == 0.1 and args.trusted == "t.jsonl"
    )
    with pytest.raises(ConfigError, match="threshold.max_false_removal"):
        RunConfig(threshold=ThresholdConfig(max_false_removal=1.5))


def test_without_a_trusted_sample_the_share_comes_from_the_fit_and_says_it_is_weaker():
    from forgetfilter.share import describe, from_fit
    from forgetfilter.thresholds import ThresholdConfig, choose_threshold

    rng = np.random.default_rng(7)
    scores = np.concatenate([rng.normal(0.0, 0.1, 540), rng.normal(1.0, 0.1, 60)])
    est = from_fit(choose_threshold(scores, ThresholdConfig("auto", min_dip=0.1)).details)
    assert est["basis"] == "score distribution" and abs(est["estimate"] - 0.1) < 0.02
    assert "weaker" in describe(est) and "10%" in describe(est)
    flat = from_fit(
        choose_threshold(rng.gamma(2.0, 1.0, 600), ThresholdConfig("auto", min_dip=0.1)).details
    )
    assert flat is None or flat["estimate"] == 0.0
    assert (
        from_fit(choose_threshold(scores, ThresholdConfig("fraction", fraction=0.1)).details)
        is None
    )
