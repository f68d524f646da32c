"""Offline classifiers: refusal detection, training on a small subset, caching."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forgetfilter import classifiers, paths, refusals
from forgetfilter.errors import ConfigError


def _data_available() -> bool:
    root = paths.data_dir()
    return (root / "toxicity" / "davidson" / "labeled_data.csv").exists() and (
        root / "safety_pairs" / "hh-rlhf" / "harmless-base_test.jsonl.gz"
    ).exists()


needs_data = pytest.mark.skipif(
    not _data_available(), reason="data pack not found (set FORGETFILTER_DATA)"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I'm sorry, but I can't help with that.", True),
        ("I\u2019m sorry, I cannot do that", True),
        ("As an AI language model, I must decline.", True),
        ("I won't write that.", True),
        ("Sure! Here is a recipe for pancakes.", False),
        ("", False),
        (None, False),
        ("x" * 400 + " I'm sorry", False),  # only the start of a response is checked
    ],
)
def test_is_refusal(text: str | None, expected: bool) -> None:
    assert refusals.is_refusal(text) is expected


def test_unknown_kind() -> None:
    with pytest.raises(ConfigError):
        classifiers.get_scorer("nope")


def test_guard_model_needs_loadable_id(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot load guard model"):
        classifiers.GuardScorer(str(tmp_path / "no-such-model"))


@needs_data
@pytest.mark.parametrize("kind", ["toxicity", "harm"])
def test_small_classifier_trains_caches_and_scores(kind: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FORGETFILTER_CACHE", str(tmp_path))
    cfg = classifiers.ClassifierConfig(max_train=1500, max_per_source=1000)
    scorer = classifiers.cached_classifier(kind, cfg=cfg)
    assert scorer.card["n_train"] == 1500
    assert scorer.auroc is not None and scorer.auroc > 0.85
    cards = list((tmp_path / "classifiers").glob(f"{kind}-*.json"))
    assert len(cards) == 1 and cards[0].with_suffix(".joblib").exists()
    card = json.loads(cards[0].read_text())
    assert card["auroc"] == scorer.auroc and card["n_test"] > 0
    # the cached copy loads and gives identical scores
    again = classifiers.cached_classifier(kind, cfg=cfg)
    texts = ["Have a lovely day, friend.", "Shut up you stupid worthless idiot"]
    np.testing.assert_allclose(again.score(texts), scorer.score(texts))
    probs = scorer.score(texts)
    assert probs.shape == (2,) and ((probs >= 0) & (probs <= 1)).all()
    assert scorer.score([]).shape == (0,)


@needs_data
def test_toxicity_ranks_obvious_cases(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FORGETFILTER_CACHE", str(tmp_path))
    scorer = classifiers.get_scorer("toxicity", max_train=1500, use_detoxify=False)
    clean, toxic = scorer.score(
        ["Thank you for the lovely dinner.", "You fucking idiot, I hate you."]
    )
    assert toxic > clean


@needs_data
def test_split_is_grouped_and_seeded() -> None:
    cfg = classifiers.ClassifierConfig(max_per_source=300)
    rows = classifiers.load_training_texts("harm", None, cfg)
    train, test = classifiers.split_indices(rows, cfg)
    train2, test2 = classifiers.split_indices(rows, cfg)
    assert (train == train2).all() and (test == test2).all()
    train_groups = {(rows[i].source, rows[i].group) for i in train}
    assert not any((rows[i].source, rows[i].group) in train_groups for i in test)
    assert {rows[i].label for i in test} == {0, 1}


def test_detoxify_falls_back_when_unavailable() -> None:
    try:
        import detoxify  # noqa: F401
    except ImportError:
        assert classifiers._try_detoxify() is None
    else:  # pragma: no cover - depends on the environment
        pytest.skip("detoxify is installed")


def test_drop_overlap_removes_rows_containing_a_text() -> None:
    rows = [
        classifiers.LabelledText(t, 1, "s", str(i))
        for i, t in enumerate(
            ["Prompt. Here is how to pick a lock: step one.", "yes", "Unrelated text entirely."]
        )
    ]
    kept = classifiers.drop_overlap(rows, ["Here is how to pick a lock: step one.", "yes", "no"])
    assert [r.text for r in kept] == ["Unrelated text entirely."]
    assert classifiers.drop_overlap(rows, []) == rows


@needs_data
def test_classifier_filter_never_trains_on_the_texts_it_judges(tmp_path, monkeypatch) -> None:
    """With `exclude`, no training text contains an excluded text, and the cache keeps them apart."""
    monkeypatch.setenv("FORGETFILTER_CACHE", str(tmp_path))
    cfg = classifiers.ClassifierConfig(max_train=1500, max_per_source=1000)
    rows = classifiers.load_training_texts("harm", None, cfg)
    judged = [r.text for r in rows if r.label == 1][:50]
    plain = classifiers.cached_classifier("harm", cfg=cfg)
    held_out = classifiers.cached_classifier("harm", cfg=cfg, exclude=judged)
    assert "n_excluded_texts" not in plain.card
    assert held_out.card["n_excluded_texts"] >= 50
    assert len(list((tmp_path / "classifiers").glob("harm-*.json"))) == 2
    left = classifiers.drop_overlap(rows, judged)
    long = [j.strip() for j in judged if len(j.strip()) >= classifiers.MIN_OVERLAP_CHARS]
    assert len(long) > 40 and not any(j in r.text for r in left for j in long)
    assert not {r.text.strip() for r in left} & {j.strip() for j in judged}
    assert len(left) == len(rows) - held_out.card["n_excluded_texts"]


@needs_data
def test_a_held_out_source_is_never_trained_on_and_named_wrongly_is_an_error(
    tmp_path, monkeypatch
) -> None:
    """`holdout_sources` drops every training text of a source and keys its own cache entry."""
    monkeypatch.setenv("FORGETFILTER_CACHE", str(tmp_path))
    cfg = classifiers.ClassifierConfig(max_train=1500, max_per_source=1000)
    held = classifiers.ClassifierConfig(
        max_train=1500, max_per_source=1000, holdout_sources=("hh-rlhf",)
    )
    rows = classifiers.load_training_texts("harm", None, cfg)
    left = classifiers.load_training_texts("harm", None, held)
    assert any(r.source == "hh-rlhf" for r in rows)
    assert not any(r.source == "hh-rlhf" for r in left)
    assert {r.source for r in left} == {r.source for r in rows} - {"hh-rlhf"}
    scorer = classifiers.cached_classifier("harm", cfg=held)
    assert "hh-rlhf" not in scorer.card["per_source"]
    assert list(scorer.card["config"]["holdout_sources"]) == ["hh-rlhf"]
    classifiers.cached_classifier("harm", cfg=cfg)
    assert len(list((tmp_path / "classifiers").glob("harm-*.json"))) == 2
    with pytest.raises(ConfigError, match="holdout_sources: no harm training source davidson"):
        classifiers.load_training_texts(
            "harm", None, classifiers.ClassifierConfig(holdout_sources=("davidson",))
        )


def test_classifier_filter_hands_each_classifier_its_own_held_out_sources(monkeypatch) -> None:
    from forgetfilter import filters
    from forgetfilter.records import Content

    asked = {}

    class Half:
        def score(self, texts, prompts=None):
            return np.full(len(texts), 0.5)

    def fake_scorer(kind, data_dir=None, exclude=(), holdout_sources=()):
        asked[kind] = tuple(holdout_sources)
        return Half()

    monkeypatch.setattr(classifiers, "get_scorer", fake_scorer)
    f = filters.ClassifierFilter(holdout_sources=("hh-rlhf", "rtp", "alpaca"))
    probs = f.probabilities([Content("r1", "a prompt", "an answer", [])])
    assert probs.tolist() == [0.5]
    assert asked == {"harm": ("hh-rlhf", "alpaca"), "toxicity": ("rtp", "alpaca")}
