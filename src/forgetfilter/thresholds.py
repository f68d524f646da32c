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


def _finish(
    scores: np.ndarray, phi: float, method: str, reason: str, details: dict
) -> ThresholdChoice:
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


def _auto(scores: np.ndarray, seed: int, max_components: int = 4) -> ThresholdChoice:
    """Gaussian mixtures with 1..4 components, the number chosen by BIC.

    Most examples are not forgotten, so the component holding the median example is the bulk; the
    examples assigned to components with a higher mean are the strongly forgotten ones, and phi is
    the highest score below the lowest of them. One component (BIC) means nothing stands out.
    """
    from sklearn.mixture import GaussianMixture

    x = scores.reshape(-1, 1)
    ks = range(1, min(max_components, len(np.unique(scores))) + 1)
    fits = {k: GaussianMixture(k, random_state=seed, n_init=3).fit(x) for k in ks}
    bic = {k: float(m.bic(x)) for k, m in fits.items()}
    k = min(bic, key=bic.get)
    gm = fits[k]
    means = gm.means_.ravel()
    assigned = gm.predict(x)
    bulk = assigned[np.argsort(scores, kind="stable")[len(scores) // 2]]
    high = means > means[bulk]
    details = {
        "bic": bic,
        "components": k,
        "means": means.tolist(),
        "weights": gm.weights_.tolist(),
        "bulk": int(bulk),
    }
    if k == 1 or not high.any():
        if k == 1:
            reason = f"the scores fit best as one group (BIC over 1-{max(ks)} components): nothing stands out, nothing removed"
        else:
            reason = (
                f"Gaussian mixture with {k} components (fewest BIC), but the component holding the median "
                f"example (mean {means[bulk]:.3g}) has the highest mean: no group of strongly forgotten "
                "examples stands out, nothing removed (use --remove-fraction or --threshold)"
            )
        return _finish(scores, float(scores.max()), "auto", reason, details)
    lowest_high = scores[high[assigned]].min()
    below = scores[scores < lowest_high]
    phi = float(below.max()) if below.size else float(lowest_high) - 1e-9
    reason = (
        f"Gaussian mixture with {k} components (fewest BIC among 1-{max(ks)}); the component holding the "
        f"median example (mean {means[bulk]:.3g}) is the bulk, and the {int(high.sum())} component(s) with a "
        f"higher mean hold the strongly forgotten examples: phi = {phi:.4g}"
    )
    return _finish(scores, phi, "auto", reason, details)
