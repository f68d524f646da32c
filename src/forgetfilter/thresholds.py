"""Choosing the forgetting threshold phi: absolute, by fraction, or automatically from the scores.

Every function here sees only the forgetting scores, never ground-truth labels. An example is
removed when its forgetting score is strictly greater than phi.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

METHODS = ("auto", "threshold", "fraction")


@dataclass
class ThresholdConfig:
    """How phi is chosen.

    Attributes:
        method: `auto` (label-free, from the score distribution), `threshold` (use `threshold`)
            or `fraction` (remove the `fraction` of examples with the strongest forgetting).
        threshold: the absolute phi for `method="threshold"`.
        fraction: the share to remove for `method="fraction"`, in [0, 1].
        seed: seed of the mixture fit used by `auto`.
    """

    method: str = "auto"
    threshold: float | None = None
    fraction: float | None = None
    seed: int = 0


@dataclass
class ThresholdChoice:
    """The chosen phi, how it was chosen, and what it does to the data."""

    phi: float
    method: str
    reason: str
    n_removed: int
    n_total: int
    details: dict

    @property
    def degenerate(self) -> bool:
        """True when phi removes everything or nothing."""
        return self.n_removed in (0, self.n_total)

    def to_dict(self) -> dict:
        """JSON-ready form for summary.json."""
        return asdict(self) | {"degenerate": self.degenerate}


def choose_threshold(scores: np.ndarray, cfg: ThresholdConfig) -> ThresholdChoice:
    """Pick phi from the forgetting scores according to `cfg`."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return ThresholdChoice(float("inf"), cfg.method, "no scores", 0, 0, {})
    if cfg.method == "threshold":
        if cfg.threshold is None:
            raise ValueError("method 'threshold' needs a threshold value")
        return _finish(scores, float(cfg.threshold), "threshold", "given by --threshold", {})
    if cfg.method == "fraction":
        return _by_fraction(scores, cfg.fraction)
    if cfg.method == "auto":
        return _auto(scores, cfg.seed)
    raise ValueError(f"unknown threshold method {cfg.method!r}; choose from {METHODS}")


def _finish(scores: np.ndarray, phi: float, method: str, reason: str, details: dict) -> ThresholdChoice:
    n_removed = int((scores > phi).sum())
    return ThresholdChoice(phi, method, reason, n_removed, int(scores.size), details)


def _by_fraction(scores: np.ndarray, fraction: float | None) -> ThresholdChoice:
    if fraction is None or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"--remove-fraction must be in [0, 1], got {fraction}")
    k = int(round(fraction * scores.size))
    if k == 0:
        return _finish(scores, float(scores.max()), "fraction", "fraction 0: remove nothing", {})
    ordered = np.sort(scores)[::-1]
    lowest_kept = ordered[k] if k < scores.size else ordered[-1] - 1.0
    phi = float((ordered[k - 1] + lowest_kept) / 2)
    reason = f"remove the {fraction:.1%} of examples with the strongest forgetting ({k} of {scores.size})"
    return _finish(scores, phi, "fraction", reason, {"fraction": fraction, "k": k})


def _auto(scores: np.ndarray, seed: int) -> ThresholdChoice:
    """Two-component Gaussian mixture: phi where the high-forgetting component becomes more likely."""
    from sklearn.mixture import GaussianMixture

    x = scores.reshape(-1, 1)
    fits = {k: GaussianMixture(k, random_state=seed, n_init=3).fit(x) for k in (1, 2)}
    bic = {k: float(m.bic(x)) for k, m in fits.items()}
    gm = fits[2]
    means = gm.means_.ravel()
    hi, lo = int(np.argmax(means)), int(np.argmin(means))
    details = {
        "bic_1": bic[1],
        "bic_2": bic[2],
        "means": sorted(means.tolist()),
        "weights": [float(gm.weights_[lo]), float(gm.weights_[hi])],
    }
    if bic[2] >= bic[1]:
        phi = float(scores.max())
        reason = "scores look unimodal (1-component BIC <= 2-component BIC): no group of strongly forgotten examples, nothing removed"
        return _finish(scores, phi, "auto", reason, details)
    phi = _posterior_crossing(gm, hi, lo)
    reason = (
        f"2-component Gaussian mixture on the forgetting scores (BIC {bic[2]:.1f} < {bic[1]:.1f} for one): "
        f"phi = {phi:.4g}, where the high-forgetting component (mean {means[hi]:.3g}, weight "
        f"{gm.weights_[hi]:.2f}) becomes more probable than the low one (mean {means[lo]:.3g})"
    )
    return _finish(scores, phi, "auto", reason, details)


def _posterior_crossing(gm, hi: int, lo: int) -> float:
    """The score between the two means where the posterior of component `hi` reaches 0.5."""
    a, b = float(gm.means_.ravel()[lo]), float(gm.means_.ravel()[hi])
    grid = np.linspace(a, b, 2001).reshape(-1, 1)
    post = gm.predict_proba(grid)[:, hi]
    idx = int(np.argmax(post >= 0.5))
    return float(grid[idx, 0]) if post[idx] >= 0.5 else (a + b) / 2
