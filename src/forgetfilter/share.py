"""How much of the data looks unsafe: the unsafe share estimated from the filter scores.

With a trusted sample (scores of examples known to be clean), the noisy scores are a mixture
F = (1 - pi) G + pi H of the clean distribution G (which the trusted scores sample) and an
unknown one H. Below any cut t, F(t) >= (1 - pi) G(t), so pi >= 1 - F(t) / G(t); the estimate
is the mean of these bounds over cuts in the middle of G (where both are estimated from many
points), and the interval comes from resampling both sets. It is tight when the unsafe examples
score above most clean ones and too low (a lower bound) when they do not; its width is set
mostly by the size of the trusted sample.
"""

from __future__ import annotations

import numpy as np

# Cuts at these quantiles of the trusted scores (where G(t) is estimated from enough points).
CUT_QUANTILES = (0.3, 0.4, 0.5, 0.6, 0.7)


def point_estimate(noisy: np.ndarray, trusted: np.ndarray) -> float:
    """The mean over cuts t of 1 - F(t) / G(t) (not clipped)."""
    noisy, trusted = np.sort(noisy), np.sort(trusted)
    bounds = []
    for t in np.quantile(trusted, CUT_QUANTILES):
        g = np.searchsorted(trusted, t, side="right") / trusted.size
        f = np.searchsorted(noisy, t, side="right") / noisy.size
        bounds.append(1.0 - f / g)
    return float(np.mean(bounds))


def _clip(x: float) -> float:
    return round(min(max(float(x), 0.0), 1.0), 4)


def unsafe_share(
    noisy: np.ndarray, trusted: np.ndarray, seed: int = 0, n_boot: int = 200, level: float = 0.9
) -> dict:
    """The estimated unsafe share of the noisy data with a `level` bootstrap interval."""
    noisy, trusted = np.asarray(noisy, float), np.asarray(trusted, float)
    if noisy.size == 0 or trusted.size < 10:
        return {"estimate": None, "note": "needs at least 10 trusted examples"}
    rng = np.random.default_rng(seed)
    boots = [
        point_estimate(rng.choice(noisy, noisy.size), rng.choice(trusted, trusted.size))
        for _ in range(n_boot)
    ]
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return {
        "estimate": _clip(point_estimate(noisy, trusted)),
        "low": _clip(lo),
        "high": _clip(hi),
        "level": level,
        "method": "mixture-proportion lower bound against the trusted scores, bootstrap interval",
    }


def from_fit(choice_details: dict) -> dict | None:
    """The weaker estimate without a trusted sample: the fitted weight of the score components
    the automatic cut removed (`thresholds._auto`'s `high_weight`); None when no fit was made."""
    fit = choice_details.get("count", {}).get("details", choice_details)
    if "high_weight" not in fit:
        return None
    return {
        "estimate": round(float(fit["high_weight"]), 4),
        "basis": "score distribution",
        "note": "from the score distribution alone, with no interval: weaker than an estimate "
        "against a trusted sample (--trusted)",
    }


def describe(est: dict) -> str:
    """One line for the terminal: 'about 6% (3-9%) of your data looks unsafe'."""
    if est.get("basis") == "score distribution":
        return (
            f"about {est['estimate']:.0%} of your data looks unsafe, judged from the score "
            "distribution alone (weaker: no interval; a trusted sample, --trusted, gives one)"
        )
    if est.get("estimate") is None:
        return f"unsafe share: not estimated ({est.get('note', 'no trusted sample')})"
    return (
        f"about {est['estimate']:.0%} ({est['low']:.0%}-{est['high']:.0%}) of your data looks "
        "unsafe (estimated against the trusted sample)"
    )
