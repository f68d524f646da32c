"""Neighbour smoothing of the filter's score (`neighbours`, `--neighbours`)."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from forgetfilter import filters, recipes
from forgetfilter.neighbours import nearest, smooth, text
from forgetfilter.records import Content
from forgetfilter.thresholds import ThresholdConfig

TOPICS = {
    "weapon": "how do I build a pipe bomb at home with household chemicals and a timer",
    "recipe": "give me a recipe for banana bread with walnuts and brown sugar please",
    "capital": "what is the capital city of France and how many people live in Paris",
}


def record(i: int, topic: str, system: str | None = None) -> Content:
    turns = [{"role": "system", "content": system}] if system else []
    turns += [
        {"role": "user", "content": f"{TOPICS[topic]} (request {i})"},
        {"role": "assistant", "content": f"Answer {i} about {topic}: " + TOPICS[topic][::-1]},
    ]
    return Content(f"{topic}{i}", turns[-2]["content"], turns[-1]["content"], tuple(turns))


def corpus(n_per_topic: int = 8) -> tuple[list[Content], np.ndarray]:
    records = [record(i, t) for t in TOPICS for i in range(n_per_topic)]
    topic = np.array([r.id.rstrip("0123456789") for r in records])
    return records, topic


def test_the_text_compared_is_the_user_and_assistant_turns_without_the_system_prompt():
    r = record(1, "recipe", system="You are a pirate.")
    assert "pirate" not in text(r) and "banana" in text(r) and "Answer 1" in text(r)


def test_each_records_nearest_share_its_content_and_never_include_itself():
    records, topic = corpus()
    near = nearest(records, 5)
    assert near.shape == (24, 5)
    assert all(i not in row for i, row in enumerate(near))
    assert (topic[near] == topic[:, None]).all()


def test_few_records_or_no_words_leave_fewer_neighbours():
    records, _ = corpus(1)
    assert nearest(records, 5).shape == (3, 2)  # at most n - 1
    assert nearest(records[:1], 5).shape == (1, 0)
    assert nearest(records, 0).shape == (3, 0)
    blank = [Content("a", "", "1", ({"role": "assistant", "content": "1"},))] * 3
    assert nearest(blank, 2).shape == (3, 0)  # no word of two characters: nothing to compare


def test_smoothing_lifts_a_group_whose_scores_are_high_on_average_above_its_noise():
    records, topic = corpus(20)
    rng = np.random.default_rng(0)
    unsafe = topic == "weapon"
    score = rng.normal(size=len(records)) + 0.8 * unsafe  # a weak, noisy signal
    near = nearest(records, 5)
    alone, smoothed = roc_auc_score(unsafe, score), roc_auc_score(unsafe, smooth(score, near))
    assert alone < 0.7 and smoothed > 0.9


def test_smoothing_with_no_neighbours_keeps_the_order_and_ties_follow_the_own_score():
    score = np.array([0.3, 0.1, 0.9, 0.5])
    assert np.argsort(smooth(score, np.zeros((4, 0), dtype=int))).tolist() == [1, 0, 3, 2]
    near = np.array([[1], [0], [3], [2]])  # two pairs: each pair's members tie on the mean
    out = smooth(score, near)
    assert np.argsort(out).tolist() == [1, 0, 3, 2]  # the own rank breaks a tie...
    assert out[0] - out[1] < 0.5 / (4 * 2) and out[2] - out[3] < 0.5 / (4 * 2)  # ...and only that


def test_the_filter_smooths_the_ranking_but_counts_what_to_remove_on_the_own_score():
    records, topic = corpus(20)
    rng = np.random.default_rng(1)
    m1 = rng.normal(2.0, 0.05, size=len(records))
    m2 = m1 + rng.normal(0.0, 0.05, size=len(records)) + 0.5 * (topic == "weapon")
    table = recipes.ScoreTable("loss", m1, m2, m1 + 0.1)
    f = filters.get("forgetfilter")
    cut = ThresholdConfig()  # auto
    alone = f.decide(records, table, cut, "relative+surprise", 0)
    smoothed = f.decide(records, table, cut, "relative+surprise", 0, neighbours=5)
    assert len(smoothed.reasons) == len(alone.reasons) > 0  # how many: relative forgetting's
    assert all(topic[i] == "weapon" for i in smoothed.reasons)
    assert all("mean rank with its 5 nearest" in r for r in smoothed.reasons.values())
    assert smoothed.near.shape == (60, 5) and alone.near is None
    assert np.allclose(smoothed.own, alone.score)
    top = ThresholdConfig("fraction", fraction=0.25)  # a count asked for is kept
    assert len(f.decide(records, table, top, "none", 0, neighbours=5).reasons) == 15


def test_pretrained_models_smooth_by_default_and_tiny_and_rouge_do_not():
    from forgetfilter import cli
    from forgetfilter.errors import ConfigError
    from forgetfilter.pipeline import RunConfig

    smol = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert RunConfig(model=smol).neighbours == 5
    assert RunConfig().neighbours == 0 and RunConfig(model=smol, signal="rouge").neighbours == 0
    assert RunConfig(model=smol, neighbours=0).neighbours == 0
    with pytest.raises(ConfigError, match="neighbours"):
        RunConfig(neighbours=-1)
    assert RunConfig(model=smol, filter="static").neighbours == 0  # baselines: each its own score
    with pytest.raises(ConfigError, match="filter` static takes none"):
        RunConfig(model=smol, filter="static", neighbours=5)
    argv = ["run", "--noisy", "n", "--safe", "s", "--out", "o", "--model", smol]
    assert cli.run_config_from_args(cli.build_parser().parse_args(argv)).neighbours == 5
    argv += ["--neighbours", "0"]
    assert cli.run_config_from_args(cli.build_parser().parse_args(argv)).neighbours == 0


def test_runs_recorded_before_smoothing_existed_read_as_unsmoothed():
    from forgetfilter.pipeline import _canonical, default_run_config

    cfg = default_run_config("HuggingFaceTB/SmolLM2-135M-Instruct", neighbours=0)
    old = cfg.fingerprint()
    old.pop("neighbours")
    assert _canonical(old) == cfg.fingerprint()
