"""Score recipes: how a table of per-example scores becomes the filter's score (`--normalise`).

A run scores every noisy example on M0 (the aligned model; loss signal only), M1 (after the noisy
finetune) and M2 (after the safety finetune). A `ScoreTable` holds those columns; a `Recipe`
turns one into a filter score, larger meaning "remove first". Each recipe declares the columns
it needs, the kinds of signal it works with (`signals.KINDS`), and whether its values have a scale (a mean of ranks has
none: the automatic threshold then counts on `count_with`, another recipe that has one).

A new recipe is one function and one `register(...)` call. Pure numpy: nothing here loads a model
or reads a label.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import signals

EPS = 1e-6


@dataclass(frozen=True)
class ScoreTable:
    """Per-example scores of one signal on the run's models, in input order.

    Attributes:
        signal: the signal's name (`signals`); its kind says which way is better learned.
        m1: scores on M1 (before safety finetuning; None when the filter needs no M1).
        m2: scores on M2 (after it; None when the filter needs no M2).
        m0: scores on the aligned model M0 (None when not scored).
    """

    signal: str
    m1: np.ndarray | None
    m2: np.ndarray | None
    m0: np.ndarray | None = None

    @property
    def kind(self) -> str:
        """`nll` (lower = better learned) or `similarity` (higher = better learned)."""
        return signals.kind_of(self.signal)


@dataclass(frozen=True)
class Recipe:
    """A named way to turn a `ScoreTable` into the filter's score.

    Attributes:
        name: the name `--normalise` takes.
        fn: the score (larger = remove first).
        help: one line for `--help` and the docs.
        needs: the table columns it reads besides m1 and m2 (`m0`).
        kinds: the kinds of signal it is defined for (`nll`, `similarity`).
        scaled: whether its values have a scale an automatic threshold can fit.
        count_with: for a recipe without a scale, the scaled recipe `auto` decides how many on.
    """

    name: str
    fn: Callable[[ScoreTable], np.ndarray]
    help: str
    needs: tuple[str, ...] = ()
    kinds: tuple[str, ...] = signals.KINDS
    scaled: bool = True
    count_with: str | None = None


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add a recipe to the registry (by its name)."""
    RECIPES[recipe.name] = recipe
    return recipe


def get(name: str) -> Recipe:
    """The registered recipe called `name` (ValueError naming the choices otherwise)."""
    if name not in RECIPES:
        raise ValueError(f"unknown normalisation {name!r}; choose from {', '.join(RECIPES)}")
    return RECIPES[name]


def apply(name: str, table: ScoreTable) -> np.ndarray:
    """The filter score of recipe `name` on `table`, checking what the recipe needs."""
    recipe = get(name)
    if table.kind not in recipe.kinds:
        raise ValueError(f"{name} needs a signal of kind {' or '.join(recipe.kinds)}")
    if "m0" in recipe.needs and table.m0 is None:
        raise ValueError(f"{name} needs the scores on M0 (an NLL-like signal's reference)")
    return np.asarray(recipe.fn(table), dtype=np.float64)


def score_and_count(name: str, table: ScoreTable) -> tuple[np.ndarray, np.ndarray | None]:
    """Recipe `name`'s score, and for a recipe without a scale the scores `auto` counts on."""
    recipe = get(name)
    score = apply(name, table)
    return score, None if recipe.scaled else apply(recipe.count_with, table)


# ---------------------------------------------------------------- building blocks
def difference(t: ScoreTable) -> np.ndarray:
    """How much safety finetuning undid: NLL after - before, or similarity before - after."""
    m1, m2 = np.asarray(t.m1, float), np.asarray(t.m2, float)
    return m2 - m1 if t.kind == "nll" else m1 - m2


def relative(t: ScoreTable) -> np.ndarray:
    """The difference relative to the score before (`after/before - 1` for the loss)."""
    return difference(t) / np.maximum(np.abs(np.asarray(t.m1, float)), EPS)


def static(t: ScoreTable) -> np.ndarray:
    """How well M1 fits each example: low NLL or high similarity before safety finetuning."""
    m1 = np.asarray(t.m1, float)
    return -m1 if t.kind == "nll" else m1


def surprise(t: ScoreTable) -> np.ndarray:
    """How unlikely the aligned model M0 finds each response: its NLL on M0 (NLL-like signal).

    An answer at odds with M0's alignment is one M0 would not give; so is any answer in a style M0
    does not write (terse extractive answers, say), which is why it is paired with forgetting.
    """
    return np.asarray(t.m0, float)


def learning(reference: np.ndarray, before: np.ndarray) -> np.ndarray:
    """How much noisy finetuning raised each response's likelihood over the aligned model M0.

    1 - NLL_M1 / NLL_M0 (an NLL-like signal): the share of M0's response NLL that finetuning removed.
    Larger means learned more.
    """
    reference, before = np.asarray(reference, float), np.asarray(before, float)
    return 1.0 - before / np.maximum(reference, EPS)


def reversion(t: ScoreTable) -> np.ndarray:
    """The share of what the noisy finetune learned that safety finetuning undid (NLL-like signal).

    (NLL_M2 - NLL_M1) / (NLL_M0 - NLL_M1); an example the noisy finetune did not learn (its NLL
    fell by less than 1e-3 nats) scores 0.
    """
    m0, m1, m2 = (np.asarray(x, float) for x in (t.m0, t.m1, t.m2))
    learned = m0 - m1
    return np.where(learned > 1e-3, (m2 - m1) / np.maximum(learned, 1e-3), 0.0)


def mean_rank(*scores: np.ndarray) -> np.ndarray:
    """Mean of the (0, 1]-scaled ranks of several scores of the same examples.

    Equal means are ordered by the first score (a shift smaller than any gap between unequal
    means), so a cut by count removes the count asked for unless the first score ties too.
    """
    ranks = [_ranks(np.asarray(s, float)) for s in scores]
    n = max(len(ranks[0]), 1)
    return np.mean(ranks, axis=0) + ranks[0] / (len(ranks) * n * (n + 1))


def fisher(*scores: np.ndarray) -> np.ndarray:
    """Fisher's combination of the scores' empirical p-values: -sum(log p).

    An example's p-value under a score is the share of examples scoring at least as high, so the
    top of any one score counts for much (log n) and the middle of another adds little: an example
    extreme on either score ranks high, and one high on both ranks higher. Equal values are ordered
    by the first score.
    """
    from scipy.stats import rankdata

    cols = [np.asarray(s, float) for s in scores]
    n = max(len(cols[0]), 1)
    combined = -sum(np.log((n - rankdata(c, method="min") + 1) / n) for c in cols)
    return _ties_by(combined, _ranks(cols[0]))


def top_rank(*scores: np.ndarray) -> np.ndarray:
    """The highest of the (0, 1]-scaled ranks of several scores (Tippett's rule); ties by mean rank."""
    ranks = [_ranks(np.asarray(s, float)) for s in scores]
    return _ties_by(np.max(ranks, axis=0), np.mean(ranks, axis=0))


def _ties_by(score: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
    """`score` with equal values ordered by `tiebreak` in [0, 1] (a shift below any gap)."""
    gaps = np.diff(np.unique(score))
    return score + (gaps.min() / 2 if len(gaps) else 1.0) * tiebreak


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks scaled to (0, 1]."""
    from scipy.stats import rankdata

    return rankdata(x) / max(len(x), 1)


# ---------------------------------------------------------------- the registry
register(Recipe("none", difference, "forgetting as the plain difference of the scores"))
register(Recipe("relative", relative, "forgetting relative to the score before (the paper's)"))
register(
    Recipe(
        "relative+static",
        lambda t: mean_rank(relative(t), static(t)),
        "mean rank of relative forgetting and of how well M1 fits the example",
        scaled=False,
        count_with="relative",
    )
)


def _with_m0(name: str, fn: Callable[[ScoreTable], np.ndarray], help: str) -> Recipe:
    """Register a rank combination of forgetting with an M0-based score (no scale: `auto`
    counts on relative forgetting)."""
    recipe = Recipe(name, fn, help, ("m0",), ("nll",), scaled=False, count_with="relative")
    return register(recipe)


_with_m0(
    "relative+learning",
    lambda t: mean_rank(relative(t), learning(t.m0, t.m1)),
    "mean rank of relative forgetting and of learning over M0 (1 - NLL_M1/NLL_M0)",
)
_with_m0(
    "relative+surprise",
    lambda t: mean_rank(relative(t), surprise(t)),
    "mean rank of relative forgetting and of the aligned model's NLL of the response (M0's surprise)",
)
_with_m0(
    "relative+surprise-fisher",
    lambda t: fisher(relative(t), surprise(t)),
    "Fisher's combination of relative forgetting and M0's surprise: extreme on either ranks high",
)
_with_m0(
    "relative+surprise-max",
    lambda t: top_rank(relative(t), surprise(t)),
    "the higher of the ranks of relative forgetting and of M0's surprise (Tippett's rule)",
)
register(
    Recipe(
        "reversion",
        reversion,
        "the share of what the noisy finetune learned that the safety finetune undid",
        needs=("m0",),
        kinds=("nll",),
    )
)


def forgetting(
    before: np.ndarray,
    after: np.ndarray,
    signal: str,
    normalise: str = "none",
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """The filter score of recipe `normalise` from scores on M1 (`before`), M2 and M0 (`reference`)."""
    return apply(normalise, ScoreTable(signal, np.asarray(before), np.asarray(after), reference))
