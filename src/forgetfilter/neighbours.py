"""Neighbour smoothing: a score averaged over each example and the examples most like it.

One example's forgetting is a noisy measurement; the paper's finding is about kinds of content
(unsafe examples are forgotten as a group). With `--neighbours k` the filter's score of each
noisy example becomes the mean of its scaled rank and the scaled ranks of its k most similar
noisy examples:

    smoothed_i = mean of rank(score)/n over {i} and the k conversations nearest to i

Similarity is the cosine of TF-IDF vectors (scikit-learn, sublinear term frequency) of each
conversation's user and assistant turns (no system prompt), fitted on the scored records alone:
no model, no label. Smoothing amplifies a score's direction, right or wrong: where the unsafe
examples' neighbours are mostly unsafe, their shared signal adds up and the task data's noise
averages out; a score that ranks them low ranks them lower still (README, "Neighbours").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

from .records import Content


def text(record: Content) -> str:
    """A conversation's user and assistant turns, one after another (no system prompt)."""
    turns = [m for m in record.messages if m.get("role") in ("user", "assistant")]
    return "\n".join(str(m.get("content") or "") for m in turns)


def nearest(records: Sequence[Content], k: int) -> np.ndarray:
    """Positions (n, k') of each record's k' = min(k, n - 1) most similar others, most similar
    first (TF-IDF cosine); no columns when there is no other record or no word to compare."""
    return similar(records, k)[0]


def similar(records: Sequence[Content], k: int) -> tuple[np.ndarray, np.ndarray]:
    """`nearest`'s positions and the cosine similarity of each record with each of them."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.neighbors import NearestNeighbors

    n = len(records)
    k = max(0, min(k, n - 1))
    none = np.zeros((n, 0), dtype=int), np.zeros((n, 0))
    if k == 0:
        return none
    try:
        vectors = TfidfVectorizer(sublinear_tf=True).fit_transform([text(r) for r in records])
    except ValueError:  # empty vocabulary: no record has a word of two or more characters
        return none
    index = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(vectors)
    distance, found = index.kneighbors(vectors)
    others = found != np.arange(n)[:, None]  # each record itself is left out
    near = np.array([f[o][:k] for f, o in zip(found, others, strict=True)], dtype=int)
    return near, np.array([1.0 - d[o][:k] for d, o in zip(distance, others, strict=True)])


def smooth(score: np.ndarray, near: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Mean scaled rank of `score` over each example and its neighbours `near` (rows of
    positions), the neighbours weighted by `weights` (the example itself by 1; None: all 1).
    Equal means are ordered by the example's own rank (a shift smaller than any gap between
    unequal unweighted means)."""
    score = np.asarray(score, dtype=float)
    n = len(score)
    if n == 0:
        return score
    r = rankdata(score) / n
    w = np.ones(near.shape) if weights is None else np.clip(weights, 0.0, None)
    width = 1 + w.sum(axis=1)
    own = r / (2 * (1 + near.shape[1]) * (n + 1))
    return (r + (w * r[near]).sum(axis=1)) / width + own
