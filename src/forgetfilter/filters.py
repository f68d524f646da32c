"""Filters: which noisy examples a run removes, each with the reason (`--filter`).

A filter reads the noisy records' text (`records.Content`: no label, source or risk: the type
has no such field) and the run's `recipes.ScoreTable` (scores of the noisy examples on M0, M1
and M2), and returns a `Decision`: its score for every example, the threshold it chose, and a
reason for every example it removes. The pipeline writes the decision
(kept.jsonl, removed.jsonl with the reasons, the cleaned file) the same way for every filter, so
a user can run ForgetFilter and a baseline on the same data and compare what each removes.

- `forgetfilter`: the recipe's score (`--normalise`), averaged over each example's most similar
  examples with `--neighbours k` (`neighbours`), cut at phi (`thresholds`): the method. With
  smoothing, how many `auto` removes is decided on the score before it (or the recipe's
  `count_with`), which ones by the smoothed score.
- `static`: how well M1 fits each example (low NLL, high ROUGE), cut the same way: a
  baseline that needs no safety finetune.
- `random`: a seeded random score; it needs `--remove-fraction` or `--threshold`.
- `classifier`: the project's content classifiers (`classifiers`: harm and toxicity, trained on
  the data pack without the noisy responses) on each response; the largest probability is the
  score, removed above 0.5 (the automatic cut) or at the cut asked for. Needs the data pack.

With a trusted sample (`--trusted`), the records and the table hold the noisy examples followed by
the `n_trusted` trusted ones; a filter scores them all and `cut_with` calibrates phi on the
trusted part (`thresholds.conformal`) and cuts only the noisy part.

A filter declares the models whose scores it reads (`needs`); a run trains and scores only those
(`classifier` and `random` need none, `static` only M1), and the table holds None for the rest.

A new filter is one class with `name`, `help`, `needs` and `decide`, and one `register(...)` call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from . import recipes
from .errors import ConfigError
from .neighbours import nearest, smooth
from .recipes import ScoreTable
from .records import Content
from .thresholds import ThresholdChoice, ThresholdConfig, capped, choose_threshold


@dataclass(frozen=True)
class Decision:
    """What a filter decided: its score per example, the cut, and why each removed one went.

    Attributes:
        score: the filter's score of every noisy example (input order; larger = removed first).
        choice: the threshold and how it was chosen.
        reasons: position -> reason, for every removed example.
        trusted: the score of every trusted example (None without a trusted sample).
        own: with neighbour smoothing, each example's score before it (noisy then trusted).
        near: with neighbour smoothing, the positions of each example's neighbours (`neighbours`).
    """

    score: np.ndarray
    choice: ThresholdChoice
    reasons: dict[int, str]
    trusted: np.ndarray | None = None
    own: np.ndarray | None = None
    near: np.ndarray | None = None


class Filter(Protocol):
    """The interface of a filter."""

    name: str
    help: str
    automatic: bool  # whether `--auto` (the default cut) works with it

    def needs(self, normalise: str) -> frozenset[str]:
        """The models whose scores it reads (`m0`, `m1`, `m2`): the run trains and scores no other."""
        ...

    def decide(
        self,
        records: Sequence[Content],
        table: ScoreTable,
        threshold: ThresholdConfig,
        normalise: str,
        seed: int,
        n_trusted: int = 0,
        neighbours: int = 0,
    ) -> Decision: ...


FILTERS: dict[str, Filter] = {}


def register(f: Filter) -> Filter:
    """Add a filter to the registry (by its name)."""
    FILTERS[f.name] = f
    return f


def get(name: str) -> Filter:
    """The registered filter called `name` (ConfigError naming the choices otherwise)."""
    if name not in FILTERS:
        raise ConfigError(f"unknown filter {name!r}; choose from {', '.join(FILTERS)}")
    return FILTERS[name]


def top(n: int, k: int) -> ThresholdConfig:
    """The cut that removes the `k` highest-scoring of `n` examples (ties may remove fewer)."""
    return ThresholdConfig("fraction", fraction=k / n if n else 0.0)


def cut(score: np.ndarray, choice: ThresholdChoice, what: str, trusted=None) -> Decision:
    """Remove every example whose score is above phi, saying so."""
    reasons = {
        i: f"{what} {s:.4g} > phi {choice.phi:.4g} ({choice.method})"
        for i, s in enumerate(score)
        if s > choice.phi
    }
    return Decision(score, choice, reasons, trusted)


def split(values: np.ndarray | None, n_trusted: int):
    """(noisy part, trusted part or None) of scores over the noisy records then the trusted ones."""
    if values is None:
        return None, None
    n = len(values) - n_trusted
    return values[:n], (values[n:] if n_trusted else None)


def cut_with(
    score: np.ndarray,
    threshold: ThresholdConfig,
    what: str,
    n_trusted: int = 0,
    count: np.ndarray | None = None,
) -> Decision:
    """Choose phi on the noisy part of `score` (calibrated on the trusted part, if any) and cut."""
    noisy, trusted = split(score, n_trusted)
    count_noisy, _ = split(count, n_trusted)
    choice = choose_threshold(noisy, threshold, count_noisy, trusted)
    return cut(noisy, choice, what, trusted)


class ForgetFilter:
    """The paper's method (Algorithm 1): remove the examples forgotten most."""

    name = "forgetfilter"
    help = "remove the examples with the highest forgetting score (--normalise), cut at phi"
    automatic = True

    def needs(self, normalise: str) -> frozenset[str]:
        return frozenset({"m1", "m2", *recipes.RECIPES[normalise].needs})

    def decide(
        self, records, table, threshold, normalise, seed, n_trusted=0, neighbours=0
    ) -> Decision:
        score, count = recipes.score_and_count(normalise, table)
        if not neighbours:
            return cut_with(score, threshold, "forgetting", n_trusted, count)
        near = nearest(records, neighbours)
        count = score if count is None else count  # how many: on the score that has a scale
        what = f"forgetting (mean rank with its {near.shape[1]} nearest)"
        decision = cut_with(smooth(score, near), threshold, what, n_trusted, count)
        return dataclasses.replace(decision, own=score, near=near)


class StaticFilter:
    """Baseline: remove the examples M1 fits best (no safety finetune needed)."""

    name = "static"
    help = "remove the examples M1 fits best (lowest NLL / highest ROUGE), cut at phi"
    automatic = True

    def needs(self, normalise: str) -> frozenset[str]:
        return frozenset({"m1"})

    def decide(
        self, records, table, threshold, normalise, seed, n_trusted=0, neighbours=0
    ) -> Decision:
        return cut_with(recipes.static(table), threshold, "static fit", n_trusted)


class RandomFilter:
    """Baseline: remove examples at random (seeded)."""

    name = "random"
    help = "remove examples at random (seeded); needs --remove-fraction or --threshold in [0, 1]"
    automatic = False

    def needs(self, normalise: str) -> frozenset[str]:
        return frozenset()

    def decide(
        self, records, table, threshold, normalise, seed, n_trusted=0, neighbours=0
    ) -> Decision:
        if threshold.method == "auto":
            raise ConfigError(
                "the random filter has no automatic cut: set `threshold.fraction` or `threshold.threshold`"
            )
        score = np.random.default_rng(seed).random(len(records))
        return cut_with(score, threshold, "random draw", n_trusted)


class ClassifierFilter:
    """Baseline: remove the responses a content classifier calls harmful or toxic."""

    name = "classifier"
    help = "remove responses the harm/toxicity classifiers score above 0.5 (needs the data pack)"
    automatic = True

    def __init__(
        self,
        kinds: tuple[str, ...] = ("harm", "toxicity"),
        data_dir=None,
        holdout_sources: tuple[str, ...] = (),
    ):
        self.kinds, self.data_dir = kinds, data_dir
        self.holdout_sources = holdout_sources

    def needs(self, normalise: str) -> frozenset[str]:
        return frozenset()

    def decide(
        self, records, table, threshold, normalise, seed, n_trusted=0, neighbours=0
    ) -> Decision:
        score = self.probabilities(records)
        if threshold.method != "auto" or n_trusted:
            return cut_with(score, threshold, "classifier probability", n_trusted)
        n = int((score > 0.5).sum())
        choice = ThresholdChoice(0.5, "classifier", "probability > 0.5", n, len(score), {})
        return cut(score, capped(score, choice, threshold.max_remove), "classifier probability")

    def probabilities(self, records: Sequence[Content]) -> np.ndarray:
        """The largest of the classifiers' probabilities (`kinds`) of each response."""
        from .classifiers import get_scorer

        responses = [r.response for r in records]
        prompts = [r.prompt for r in records]
        probs = [
            get_scorer(
                kind, self.data_dir, exclude=responses, holdout_sources=self._holdout(kind)
            ).score(responses, prompts=prompts)
            for kind in self.kinds
        ]
        return np.max(np.asarray(probs, dtype=np.float64), axis=0)

    def _holdout(self, kind: str) -> tuple[str, ...]:
        """The held-out sources that are training sources of classifier `kind`."""
        from .classifiers import SOURCES

        return tuple(s for s in self.holdout_sources if s in SOURCES[kind])


for _filter in (ForgetFilter(), StaticFilter(), RandomFilter(), ClassifierFilter()):
    register(_filter)
