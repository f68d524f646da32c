import ast
from pathlib import Path

import numpy as np
import pytest

from forgetfilter.thresholds import ThresholdConfig, choose_threshold


def bimodal(seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.0, 0.1, 400), rng.normal(1.0, 0.15, 200)])


def test_auto_finds_the_gap_between_two_modes():
    scores = bimodal()
    choice = choose_threshold(scores, ThresholdConfig("auto"))
    assert 0.25 < choice.phi < 0.75
    assert 190 <= choice.n_removed <= 210
    assert "mixture" in choice.reason and not choice.degenerate


@pytest.mark.parametrize("n_low,n_high", [(300, 300), (200, 400)])
def test_auto_finds_a_forgotten_half_or_majority(n_low, n_high):
    """The paper's noisy sets are half unsafe: the median example may sit in the forgotten mode."""
    rng = np.random.default_rng(2)
    scores = np.concatenate([rng.normal(0.0, 0.1, n_low), rng.normal(1.0, 0.15, n_high)])
    choice = choose_threshold(scores, ThresholdConfig("auto"))
    assert abs(choice.n_removed - n_high) <= 0.03 * scores.size
    assert 0.2 < choice.phi < 0.8


def test_auto_ignores_a_component_that_does_not_stand_apart():
    """Two overlapping components of one skewed group are not a forgotten group."""
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.normal(0.0, 0.3, 300), rng.normal(0.05, 0.05, 300)])
    choice = choose_threshold(scores, ThresholdConfig("auto"))
    assert choice.n_removed == 0 and choice.degenerate


def test_auto_on_unimodal_scores_removes_nothing_and_says_so():
    scores = np.random.default_rng(1).normal(0, 1, 500)
    choice = choose_threshold(scores, ThresholdConfig("auto"))
    assert choice.n_removed == 0 and choice.degenerate
    assert "one group" in choice.reason


def test_auto_is_deterministic_under_seed():
    a = choose_threshold(bimodal(), ThresholdConfig("auto", seed=3))
    b = choose_threshold(bimodal(), ThresholdConfig("auto", seed=3))
    assert a.phi == b.phi


@pytest.mark.parametrize("fraction,expected", [(0.0, 0), (0.1, 60), (0.5, 300), (1.0, 600)])
def test_fraction_removes_that_many(fraction, expected):
    choice = choose_threshold(bimodal(), ThresholdConfig("fraction", fraction=fraction))
    assert choice.n_removed == expected
    assert choice.degenerate == (expected in (0, 600))


def test_absolute_threshold_is_strict():
    choice = choose_threshold(
        np.array([0.1, 0.5, 0.5, 0.9]), ThresholdConfig("threshold", threshold=0.5)
    )
    assert choice.n_removed == 1 and choice.phi == 0.5


def test_bad_fraction_is_rejected():
    from forgetfilter.errors import ConfigError

    with pytest.raises(ConfigError, match="`threshold.fraction`"):
        choose_threshold(bimodal(), ThresholdConfig("fraction", fraction=1.5))


FILTERING_MODULES = [
    "thresholds.py",
    "share.py",
    "signals.py",
    "inference.py",
    "tail_loss.py",
    "head_loss.py",
    "batching.py",
    "pipeline.py",
    "recipes.py",
    "filters.py",
    "chat.py",
]


@pytest.mark.parametrize("module", FILTERING_MODULES)
def test_filtering_code_never_reads_labels(module):
    src = Path(__file__).parents[1] / "src" / "forgetfilter" / module
    tree = ast.parse(src.read_text())
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    strings = {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    assert "label" not in attrs and "label" not in strings


def test_removing_more_than_half_is_flagged():
    from forgetfilter.summary import threshold_warning

    rng = np.random.default_rng(2)
    scores = np.concatenate([rng.normal(0.0, 0.1, 200), rng.normal(1.0, 0.15, 400)])
    choice = choose_threshold(scores, ThresholdConfig("auto"))
    assert "more than half" in threshold_warning(choice)
    assert threshold_warning(choose_threshold(bimodal(), ThresholdConfig("auto"))) is None


def test_auto_with_count_scores_counts_on_them_and_removes_the_highest_ranked():
    """Rank scores have no scale: how many comes from the scaled scores, which from the ranks."""
    scaled = bimodal()  # 200 of 600 in the forgotten mode
    ranks = np.random.default_rng(5).permutation(600) / 600.0  # an unrelated ranking
    choice = choose_threshold(ranks, ThresholdConfig("auto"), count_scores=scaled)
    counted = choose_threshold(scaled, ThresholdConfig("auto"))
    assert choice.n_removed == counted.n_removed and 190 <= choice.n_removed <= 210
    assert (ranks > choice.phi).sum() == choice.n_removed
    assert choice.details["count"]["n_removed"] == counted.n_removed


def test_auto_with_count_scores_removes_nothing_when_nothing_stands_out():
    unimodal = np.random.default_rng(1).normal(0, 1, 500)
    ranks = np.random.default_rng(6).permutation(500) / 500.0
    choice = choose_threshold(ranks, ThresholdConfig("auto"), count_scores=unimodal)
    assert choice.n_removed == 0 and "one group" in choice.reason


@pytest.mark.parametrize("cap, limit", [(50, 50), (0.1, 60), (0, 0)])
def test_remove_at_most_binds_and_is_reported(cap, limit):
    from forgetfilter.summary import threshold_warning

    scores = bimodal()  # auto removes about the 200 of the upper mode
    free = choose_threshold(scores, ThresholdConfig("auto"))
    got = choose_threshold(scores, ThresholdConfig("auto", max_remove=cap))
    assert free.n_removed > limit and got.n_removed == limit
    assert set(np.argsort(-scores)[:limit]) == set(np.flatnonzero(scores > got.phi))
    assert got.details["capped"] == {"would_remove": free.n_removed, "limit": limit}
    assert "the cap binds" in threshold_warning(got)
    loose = choose_threshold(scores, ThresholdConfig("auto", max_remove=0.99))
    assert loose.n_removed == free.n_removed and "capped" not in loose.details


def test_remove_at_most_is_checked_and_reaches_the_cli():
    from forgetfilter.cli import build_parser, run_config_from_args
    from forgetfilter.errors import ConfigError
    from forgetfilter.pipeline import RunConfig

    with pytest.raises(ConfigError, match="threshold.max_remove"):
        RunConfig(threshold=ThresholdConfig("auto", max_remove=2.5))
    argv = ["run", "--noisy", "n", "--safe", "s", "--out", "o", "--remove-at-most", "0.05"]
    assert run_config_from_args(build_parser().parse_args(argv)).threshold.max_remove == 0.05


@pytest.mark.parametrize(
    "draw",
    [
        lambda r: r.gamma(2.0, 1.0, 600),
        lambda r: r.lognormal(0, 0.6, 600),
        lambda r: r.standard_t(3, 600),
    ],
    ids=["gamma", "lognormal", "t3"],
)
def test_a_skewed_or_heavy_tail_is_not_a_group_under_min_dip(draw):
    """BIC shapes a skewed or heavy tail with extra components: the old rule (`min_dip=None`) cuts
    into them (seen on these draws), the default dip rule says there is no separate group and
    removes nothing."""
    for seed in range(3):
        scores = draw(np.random.default_rng(seed))
        strict = choose_threshold(scores, ThresholdConfig("auto"))
        assert strict.n_removed == 0 and strict.details["high_weight"] == 0.0
        assert any(w in strict.reason for w in ("no separate group", "one group", "no group"))
    loose = [
        choose_threshold(draw(np.random.default_rng(s)), ThresholdConfig("auto", min_dip=None))
        for s in range(3)
    ]
    assert any(c.n_removed > 0 for c in loose)


@pytest.mark.parametrize("n_low,n_high", [(540, 60), (300, 300), (200, 400)])
def test_a_separate_group_is_cut_and_its_share_estimated_under_min_dip(n_low, n_high):
    rng = np.random.default_rng(5)
    scores = np.concatenate([rng.normal(0.0, 0.1, n_low), rng.normal(1.0, 0.15, n_high)])
    choice = choose_threshold(scores, ThresholdConfig("auto", min_dip=0.1))
    assert abs(choice.n_removed - n_high) <= 0.03 * scores.size and choice.details["dip"] > 0.9
    assert abs(choice.details["high_weight"] - n_high / scores.size) < 0.02
    counted = choose_threshold(
        -np.arange(600.0), ThresholdConfig("auto", min_dip=0.1), count_scores=scores
    )
    assert counted.details["count"]["details"]["dip"] > 0.9
    assert counted.n_removed == choice.n_removed


@pytest.mark.parametrize("n_low,n_high", [(540, 60), (240, 360)])
def test_a_group_whose_loss_fell_is_not_forgotten(n_low, n_high):
    """Two separate groups whose scores are all below 0 (safety finetuning lowered every loss, as
    on SmolLM2's bias mixtures): the old rule (`min_forgetting=None`) removes the higher group,
    the default removes nothing and says why; shifted above 0, the same groups are cut as before."""
    rng = np.random.default_rng(7)
    scores = np.concatenate([rng.normal(-0.03, 0.003, n_low), rng.normal(-0.004, 0.001, n_high)])
    loose = choose_threshold(scores, ThresholdConfig("auto", min_forgetting=None))
    assert abs(loose.n_removed - n_high) <= 0.03 * scores.size
    choice = choose_threshold(scores, ThresholdConfig("auto"))
    assert choice.n_removed == 0 and choice.details["high_weight"] == 0.0
    assert "not above 0" in choice.reason
    counted = choose_threshold(-np.arange(600.0), ThresholdConfig("auto"), count_scores=scores)
    assert counted.n_removed == 0
    shifted = choose_threshold(scores + 0.05, ThresholdConfig("auto"))
    assert (
        shifted.n_removed
        == choose_threshold(scores + 0.05, ThresholdConfig("auto", min_forgetting=None)).n_removed
        > 0
    )


def test_the_cut_never_removes_an_example_that_was_not_forgotten():
    """A forgotten group whose lower tail reaches below 0: phi is raised to 0, said so."""
    rng = np.random.default_rng(8)
    scores = np.concatenate([rng.normal(-0.5, 0.1, 500), rng.normal(0.05, 0.1, 100)])
    loose = choose_threshold(scores, ThresholdConfig("auto", min_forgetting=None))
    assert loose.phi < 0
    choice = choose_threshold(scores, ThresholdConfig("auto"))
    assert choice.phi == 0.0 and "floor" in choice.reason
    assert choice.n_removed == int((scores > 0).sum()) < loose.n_removed


@pytest.mark.parametrize("seed", [1, 2, 3, 5])
def test_only_the_separate_peak_is_cut_not_the_bulk_tail(seed):
    """A wide bulk (components of nearly the same mean, a long tail) and 5 far examples, as the
    relative forgetting of a tiny run at 1% unsafe: the earlier rule (`at_valley=False`) removed
    the tail with the peak, 50-100 examples; the default cuts at the density's valley."""
    r = np.random.default_rng(seed)
    scores = np.concatenate(
        [
            r.normal(0.016, 0.009, 440),
            r.normal(0.017, 0.0175, 445),
            r.normal(0.046, 0.046, 110),
            r.normal(0.234, 0.02, 5),
        ]
    )
    old = choose_threshold(scores, ThresholdConfig("auto", min_forgetting=None, at_valley=False))
    assert old.n_removed > 50
    choice = choose_threshold(scores, ThresholdConfig("auto"))
    assert 3 <= choice.n_removed <= 8 and "valley" in choice.reason
    assert choice.phi > 0.14 and choice.details["high_weight"] < 0.01
