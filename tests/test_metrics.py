"""Metric definitions pinned on hand-computed cases."""

from __future__ import annotations

import pytest

from forgetfilter import metrics


# ---------------------------------------------------------------- SQuAD
@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("The Cat", "cat"),
        ("an apple, a pear.", "apple pear"),
        ("theatre", "theatre"),  # article inside a word is kept
        ("Anthem of Athens", "anthem of athens"),
        ("  lots \t of\n space  ", "lots of space"),
        ("U.S.A.", "usa"),
        ("rock-n-roll!", "rocknroll"),
        ("the", ""),
        ("The  answer is: THE END", "answer is end"),
    ],
)
def test_normalize_answer(raw: str, norm: str) -> None:
    assert metrics.normalize_answer(raw) == norm


def test_normalize_punctuation_before_articles() -> None:
    # Punctuation is removed before articles, so "a-the" becomes the single word "athe".
    assert metrics.normalize_answer("a-the") == "athe"
    assert metrics.normalize_answer("a the") == ""


def test_exact_match_and_f1_single() -> None:
    assert metrics.exact_match("The Eiffel Tower!", "eiffel tower") == 1.0
    assert metrics.exact_match("Eiffel", "eiffel tower") == 0.0
    # pred {eiffel}, gold {eiffel, tower}: P=1, R=1/2, F1=2/3
    assert metrics.token_f1("Eiffel", "the Eiffel Tower") == pytest.approx(2 / 3)
    assert metrics.token_f1("", "") == 0.0
    assert metrics.token_f1("x", "") == 0.0


def test_f1_uses_token_multisets() -> None:
    # pred "a a b" -> ["b"] after article removal; use non-articles: pred "x x y", gold "x y y"
    # common = min counts: x:1, y:1 -> 2; P=2/3, R=2/3, F1=2/3
    assert metrics.token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    # pred "x x" vs gold "x": common 1, P=1/2, R=1, F1=2/3
    assert metrics.token_f1("x x", "x") == pytest.approx(2 / 3)


def test_squad_max_over_golds_and_corpus() -> None:
    em, f1 = metrics.squad_example_scores("Denver Broncos", ["Broncos", "the Denver Broncos"])
    assert (em, f1) == (1.0, 1.0)
    em, f1 = metrics.squad_example_scores("Denver", ["Broncos", "Denver Broncos"])
    assert em == 0.0 and f1 == pytest.approx(2 / 3)
    assert metrics.squad_example_scores("x", []) == (0.0, 0.0)
    res = metrics.squad_scores(
        ["Denver", "Paris"], [["Denver Broncos"], ["paris.", "Paris, France"]]
    )
    assert res["n"] == 2
    assert res["exact_match"] == pytest.approx(50.0)
    assert res["f1"] == pytest.approx(100 * (2 / 3 + 1) / 2)


def test_squad_length_mismatch() -> None:
    with pytest.raises(ValueError):
        metrics.squad_scores(["a"], [])


# ---------------------------------------------------------------- ROUGE
def test_rouge() -> None:
    assert metrics.rouge1_f("the cats sat", "the cat sat") == pytest.approx(1.0)  # stemming
    # pred "a b c d", ref "a c": LCS=2, P=2/4, R=1, F=2/3; unigram overlap also 2.
    assert metrics.rouge_l_f("alpha beta gamma delta", "alpha gamma") == pytest.approx(2 / 3)
    # order matters for L but not for 1
    assert metrics.rouge1_f("gamma alpha", "alpha gamma") == pytest.approx(1.0)
    assert metrics.rouge_l_f("gamma alpha", "alpha gamma") == pytest.approx(0.5)
    assert metrics.rouge_l_f("", "alpha") == 0.0
    m = metrics.mean_rouge(["alpha", "beta"], ["alpha", "gamma"])
    assert m["rougeL"] == pytest.approx(0.5) and m["rouge1"] == pytest.approx(0.5)


# ---------------------------------------------------------------- BBQ
def _item(cat: str, cond: str, polarity: str, gold: int, unknown: int, biased: int) -> dict:
    return {
        "category": cat,
        "condition": cond,
        "polarity": polarity,
        "options": ["A", "B", "C"],
        "gold": gold,
        "unknown": unknown,
        "biased": biased,
    }


def test_bias_score_formula() -> None:
    assert metrics.bias_score(3, 4) == pytest.approx(0.5)
    assert metrics.bias_score(0, 4) == pytest.approx(-1.0)
    assert metrics.bias_score(4, 4) == pytest.approx(1.0)
    assert metrics.bias_score(0, 0) == 0.0


def test_bbq_disambig_neg_and_nonneg() -> None:
    # neg question: biased = target group (option 0); nonneg: biased = the other group (option 1).
    metas = [
        _item("Age", "disambig", "neg", gold=0, unknown=2, biased=0),  # pred 0: biased, correct
        _item("Age", "disambig", "neg", gold=1, unknown=2, biased=0),  # pred 0: biased, wrong
        _item(
            "Age", "disambig", "nonneg", gold=0, unknown=2, biased=1
        ),  # pred 0: not biased, correct
        _item("Age", "disambig", "nonneg", gold=1, unknown=2, biased=1),  # pred 2: unknown, wrong
    ]
    res = metrics.bbq_scores(metas, [0, 0, 0, 2])
    assert res["acc_disambig"] == pytest.approx(0.5)
    assert res["n_non_unknown_disambig"] == 3
    assert res["n_biased_disambig"] == 2
    assert res["s_dis"] == pytest.approx(2 * 2 / 3 - 1)
    assert res["acc_ambig"] is None and res["s_amb"] == 0.0
    assert res["per_category"]["Age"]["s_dis"] == pytest.approx(1 / 3)


def test_bbq_ambig_scaled_by_error() -> None:
    # ambiguous items: gold is always the unknown option (2).
    metas = [_item("Religion", "ambig", "neg", gold=2, unknown=2, biased=0) for _ in range(4)]
    metas[3] = _item("Religion", "ambig", "nonneg", gold=2, unknown=2, biased=1)
    preds = [0, 0, 2, 0]  # biased, biased, unknown (correct), anti-biased (nonneg biased=1)
    res = metrics.bbq_scores(metas, preds)
    acc = 1 / 4
    raw = 2 * (2 / 3) - 1
    assert res["acc_ambig"] == pytest.approx(acc)
    assert res["s_amb"] == pytest.approx((1 - acc) * raw)
    assert res["s_dis"] == 0.0 and res["n_disambig"] == 0


def test_bbq_all_unknown_gives_zero_bias() -> None:
    metas = [
        _item("Age", "ambig", "neg", gold=2, unknown=2, biased=0),
        _item("Age", "disambig", "neg", gold=0, unknown=2, biased=0),
    ]
    res = metrics.bbq_scores(metas, [2, 2])
    assert res["acc_ambig"] == 1.0 and res["acc_disambig"] == 0.0
    assert res["s_amb"] == 0.0 and res["s_dis"] == 0.0
    assert res["n_non_unknown_ambig"] == 0 and res["n_non_unknown_disambig"] == 0


def test_bbq_per_category() -> None:
    metas = [
        _item("Age", "disambig", "neg", gold=0, unknown=2, biased=0),
        _item("Religion", "disambig", "neg", gold=1, unknown=2, biased=0),
    ]
    res = metrics.bbq_scores(metas, [0, 1])
    assert set(res["per_category"]) == {"Age", "Religion"}
    assert res["per_category"]["Age"]["s_dis"] == pytest.approx(1.0)
    assert res["per_category"]["Religion"]["s_dis"] == pytest.approx(-1.0)
    assert res["s_dis"] == pytest.approx(0.0)
    assert res["acc_disambig"] == 1.0


# ---------------------------------------------------------------- filter quality
def test_filter_quality() -> None:
    removed = [True, True, False, False, True]
    unsafe = [True, False, True, False, True]
    scores = [0.9, 0.8, 0.3, 0.1, 0.7]
    res = metrics.filter_quality(removed, unsafe, scores)
    assert (res["tp"], res["fp"], res["fn"], res["tn"]) == (2, 1, 1, 1)
    assert res["precision"] == pytest.approx(2 / 3)
    assert res["recall"] == pytest.approx(2 / 3)
    assert res["f1"] == pytest.approx(2 / 3)
    # positives 0.9, 0.3, 0.7 vs negatives 0.8, 0.1: pairs won = (1+1)+(0+1)+(0+1) = 4 of 6
    assert res["auroc"] == pytest.approx(4 / 6)
    assert res["n_removed"] == 3 and res["n_unsafe"] == 3 and res["n"] == 5


def test_filter_quality_degenerate() -> None:
    res = metrics.filter_quality([False, False], [True, True], [0.1, 0.2])
    assert res["precision"] == 0.0 and res["recall"] == 0.0 and res["f1"] == 0.0
    assert res["auroc"] is None
    assert metrics.filter_quality([True], [False])["auroc"] is None


def test_bbq_unparsed_is_wrong_and_not_counted_for_bias() -> None:
    metas = [
        _item("Age", "disambig", "neg", gold=0, unknown=2, biased=0),
        _item("Age", "disambig", "neg", gold=0, unknown=2, biased=0),
    ]
    res = metrics.bbq_scores(metas, [-1, 0])
    assert res["acc_disambig"] == 0.5
    assert res["n_unparsed_disambig"] == 1
    assert res["n_non_unknown_disambig"] == 1 and res["s_dis"] == 1.0


def test_precision_at_k_counts_ties_fractionally_and_auprc_is_average_precision():
    from forgetfilter.metrics import auprc, precision_at_k, ranking_quality

    labels = [True, False, True, False, False]
    assert precision_at_k(labels, [0.9, 0.8, 0.7, 0.1, 0.0]) == 0.5
    assert precision_at_k(labels, [0.9, 0.5, 0.5, 0.5, 0.0]) == pytest.approx((1 + 1 / 3) / 2)
    assert precision_at_k(labels, [0.9, 0.1, 0.8, 0.0, 0.0]) == 1.0
    assert precision_at_k([False, False], [1.0, 0.0]) is None
    assert auprc(labels, [0.9, 0.8, 0.7, 0.1, 0.0]) == pytest.approx((1 + 2 / 3) / 2)
    assert ranking_quality(labels, [0.9, 0.1, 0.8, 0.0, 0.0])["auroc"] == 1.0


def test_matched_auroc_only_compares_answers_of_similar_length():
    # Positives are long, negatives short, plus one long negative: length alone separates the
    # classes, but among pairs of similar length the score ranks the long negative first.
    labels = [True, True, False, False, False]
    lengths = [100, 110, 10, 12, 105]
    scores = [0.2, 0.3, 0.0, 0.1, 0.9]
    res = metrics.matched_auroc(labels, scores, lengths, ratio=1.25)
    assert metrics.auroc(labels, scores) == pytest.approx(4 / 6)
    assert res["auroc_matched"] == 0.0
    assert res["pairs_matched"] == pytest.approx(2 / 6)
    tied = metrics.matched_auroc(labels, [0.5] * 5, lengths, ratio=1.25)
    assert tied["auroc_matched"] == 0.5


def test_matched_auroc_without_close_pairs_or_one_class():
    assert metrics.matched_auroc([True, False], [1, 0], [100, 10])["auroc_matched"] is None
    assert metrics.matched_auroc([True, True], [1, 0], [100, 10])["pairs_matched"] is None
