"""Choosing the forgetting threshold phi: absolute, by fraction, or automatically from the scores.

Every function here sees only the forgetting scores, never ground-truth labels. An example is
removed when its forgetting score is strictly greater than phi.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .errors import ConfigError

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
        max_remove: a cap no cut exceeds: a number of examples (>= 1) or a share of them (< 1);
            None = no cap.
        max_false_removal: with a trusted sample, `auto` becomes the split-conformal cut that
            removes at most this expected share of the clean examples (`conformal`).
        min_dip: `auto` without a trusted sample removes a group of forgotten examples only
            when the fitted score density has a peak above the bulk's with a valley at least this
            share below the lower peak (0.1: 10% below); None = any higher component the fit
            finds is removed.
        min_forgetting: `auto` without a trusted sample removes only examples scored above this,
            and only when a component above the bulk has its mean above it (0: safety finetuning
            must have undone something; an example whose loss fell was not forgotten); None = no
            floor.
        at_valley: with `min_dip`, `auto` removes only what lies beyond the density's lowest
            valley above the bulk that is `min_dip` deep (the separate group), not everything the
            components above the bulk explain better (which can reach into the bulk's own tail);
            False = the latter.
    """

    method: str = "auto"
    threshold: float | None = None
    fraction: float | None = None
    seed: int = 0
    max_remove: float | None = None
    max_false_removal: float = 0.05
    min_dip: float | None = 0.1
    min_forgetting: float | None = 0.0
    at_valley: bool = True


# Fields added after runs were first recorded, with the value that reproduces those runs.
ADDED_FIELDS = {
    "max_false_removal": 0.05,
    "min_dip": None,
    "min_forgetting": None,
    "at_valley": False,
}


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


def choose_threshold(
    scores: np.ndarray,
    cfg: ThresholdConfig,
    count_scores: np.ndarray | None = None,
    trusted: np.ndarray | None = None,
) -> ThresholdChoice:
    """Pick phi from the filter scores according to `cfg`.

    `trusted` (optional): the same score of a sample known to be clean; with `auto` the cut is
    then the split-conformal one (`conformal`), not a fit to the score distribution.

    `count_scores` (optional, same examples) serves `auto` when `scores` are ranks without a scale
    (a mean rank spreads the same way whether or not anything was forgotten): how many examples to
    remove is chosen from `count_scores` (`_auto`), and which ones by `scores` (the highest).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return ThresholdChoice(float("inf"), cfg.method, "no scores", 0, 0, {})
    if trusted is not None and cfg.method == "auto":
        choice = conformal(scores, np.asarray(trusted, dtype=np.float64), cfg.max_false_removal)
    else:
        choice = _choose(scores, cfg, count_scores)
    return capped(scores, choice, cfg.max_remove)


def conformal_rank(n: int, alpha: float) -> int:
    """The rank k (1-based, ascending) of the trusted score that is phi: ceil((n + 1)(1 - alpha));
    larger than `n` when the sample is too small for `alpha` (then nothing can be removed)."""
    return math.ceil((n + 1) * (1.0 - alpha) - 1e-12)


def min_trusted(alpha: float) -> int:
    """The smallest trusted sample for which the conformal cut can remove anything at `alpha`."""
    return math.ceil(1.0 / alpha - 1.0 - 1e-12)


def conformal(scores: np.ndarray, trusted: np.ndarray, alpha: float) -> ThresholdChoice:
    """phi = the k-th smallest trusted score, k = `conformal_rank(n, alpha)`.

    If the trusted scores and the scores of the clean noisy examples are exchangeable (the
    trusted sample is drawn like the clean part of the data and scored the same way), a clean
    noisy example is removed (score > phi) with probability at most `alpha`. Nothing is promised
    about how many unsafe examples are removed (recall).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"max_false_removal must be in (0, 1), got {alpha}")
    n = int(trusted.size)
    k = conformal_rank(n, alpha)
    details = {"alpha": alpha, "n_trusted": n, "rank": k, "min_trusted": min_trusted(alpha)}
    if n == 0 or k > n:
        reason = (
            f"the trusted sample ({n}) is too small for a false-removal bound of {alpha:g}: it "
            f"needs at least {min_trusted(alpha)}; nothing removed"
        )
        return _finish(scores, float("inf"), "conformal", reason, details)
    phi = float(np.sort(trusted)[k - 1])
    details["trusted_removed_share"] = round(float((trusted > phi).mean()), 6)
    reason = (
        f"split-conformal cut on {n} trusted examples: at most {alpha:g} of the clean examples "
        f"are removed in expectation (phi = trusted score of rank {k} of {n}), assuming the "
        "trusted sample is exchangeable with the clean data; recall is not bounded"
    )
    return _finish(scores, phi, "conformal", reason, details)


def cap_count(max_remove: float, n: int) -> int:
    """How many examples a cap allows: `max_remove` itself (>= 1), or that share of `n` (< 1)."""
    return int(max_remove) if max_remove >= 1 else int(math.floor(max_remove * n))


def capped(
    scores: np.ndarray, choice: ThresholdChoice, max_remove: float | None
) -> ThresholdChoice:
    """`choice`, or when it removes more than `max_remove` allows, the cut that removes that many
    with the highest scores (`details.capped` records what the cut would have removed)."""
    if max_remove is None:
        return choice
    limit = cap_count(max_remove, int(scores.size))
    if choice.n_removed <= limit:
        return choice
    phi = float(scores.max()) if limit == 0 else _phi_for_top(scores, limit)
    reason = (
        f"{choice.reason}; capped by the removal cap {max_remove:g} (`threshold.max_remove`, "
        f"--remove-at-most): the cut would have removed "
        f"{choice.n_removed}, the cap allows {limit}"
    )
    details = choice.details | {"capped": {"would_remove": choice.n_removed, "limit": limit}}
    return _finish(scores, max(phi, choice.phi), choice.method, reason, details)


def _choose(
    scores: np.ndarray, cfg: ThresholdConfig, count_scores: np.ndarray | None
) -> ThresholdChoice:
    if cfg.method == "threshold":
        if cfg.threshold is None:
            raise ValueError("method 'threshold' needs a threshold value")
        return _finish(scores, float(cfg.threshold), "threshold", "given by --threshold", {})
    if cfg.method == "fraction":
        return _by_fraction(scores, cfg.fraction)
    if cfg.method == "auto" and count_scores is not None:
        count_scores = np.asarray(count_scores, dtype=np.float64)
        return _auto_count(scores, count_scores, cfg.seed, cfg)
    if cfg.method == "auto":
        return _auto(scores, cfg.seed, cfg)
    raise ValueError(f"unknown threshold method {cfg.method!r}; choose from {METHODS}")


def _finish(
    scores: np.ndarray, phi: float, method: str, reason: str, details: dict
) -> ThresholdChoice:
    n_removed = int((scores > phi).sum())
    return ThresholdChoice(phi, method, reason, n_removed, int(scores.size), details)


def _by_fraction(scores: np.ndarray, fraction: float | None) -> ThresholdChoice:
    if fraction is None or not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"`threshold.fraction` must be in [0, 1], got {fraction}")
    k = int(round(fraction * scores.size))
    if k == 0:
        return _finish(scores, float(scores.max()), "fraction", "fraction 0: remove nothing", {})
    reason = f"remove the {fraction:.1%} of examples with the strongest forgetting ({k} of {scores.size})"
    return _finish(
        scores, _phi_for_top(scores, k), "fraction", reason, {"fraction": fraction, "k": k}
    )


def _phi_for_top(scores: np.ndarray, k: int) -> float:
    """phi halfway between the k-th highest score and the next (ties may remove fewer than k)."""
    ordered = np.sort(scores)[::-1]
    lowest_kept = ordered[k] if k < scores.size else ordered[-1] - 1.0
    return float((ordered[k - 1] + lowest_kept) / 2)


def _auto_count(
    scores: np.ndarray, count_scores: np.ndarray, seed: int, cfg: ThresholdConfig
) -> ThresholdChoice:
    """`_auto` on `count_scores` decides how many to remove; the highest `scores` are removed."""
    counted = _auto(count_scores, seed, cfg)
    k = counted.n_removed
    details = {"count": counted.to_dict()}
    if k == 0:
        return _finish(scores, float(scores.max()), "auto", counted.reason, details)
    phi = _phi_for_top(scores, k)
    counted_reason = counted.reason.replace("phi =", "cut at")
    reason = (
        f"how many, on relative forgetting (the part of the score with a scale): {counted_reason}; "
        f"so the {k} examples with the highest filter score are removed: phi = {phi:.4g}"
    )
    return _finish(scores, phi, "auto", reason, details)


MIN_SEPARATION = 1.0  # mean gap / pooled sd for a component below the median one to count as apart


def _auto(
    scores: np.ndarray,
    seed: int,
    cfg: ThresholdConfig,
    max_components: int = 4,
) -> ThresholdChoice:
    """Gaussian mixtures with 1..4 components, the number chosen by BIC.

    The component holding the median example is the bulk, and components with a higher mean hold
    the strongly forgotten examples. When the median example is in the highest component (half of
    the examples or more are forgotten, as in the paper's half-unsafe noisy sets), the next lower
    component is the bulk instead, provided it stands apart (separation >= MIN_SEPARATION pooled
    sd); otherwise nothing stands out. phi is the lowest score above the bulk's mean at which the
    forgotten components become the likelier explanation, so every score above phi is removed.

    With `min_dip`, the fitted density must have a peak above the bulk's, with a valley at least
    that share below the lower of the two (`density_valleys`). Otherwise the components only shape a skewed or heavy tail
    of one group (BIC adds them there too), and nothing is removed, saying so. `details["high_weight"]` is the fitted share of the
    components above the bulk (beyond the valley with `at_valley`; 0 when nothing is removed): an estimate of the forgotten share from
    the score distribution alone.

    With `min_forgetting`, only components whose mean is above it count as forgotten (none:
    nothing is removed, saying so), and phi is at least `min_forgetting`. With `at_valley` (and
    `min_dip`), phi is at least the score of the lowest valley that deep, so only the separate
    group beyond it goes.
    """
    from sklearn.mixture import GaussianMixture

    min_dip, min_forgetting = cfg.min_dip, cfg.min_forgetting
    x = scores.reshape(-1, 1)
    ks = range(1, min(max_components, len(np.unique(scores))) + 1)
    fits = {k: GaussianMixture(k, random_state=seed, n_init=3).fit(x) for k in ks}
    bic = {k: float(m.bic(x)) for k, m in fits.items()}
    k = min(bic, key=bic.get)
    gm = fits[k]
    means, sds = gm.means_.ravel(), np.sqrt(gm.covariances_.ravel())
    median_comp = int(gm.predict(x)[np.argsort(scores, kind="stable")[len(scores) // 2]])
    bulk, stepped = _bulk(means, sds, median_comp)
    details = {
        "bic": bic,
        "components": k,
        "means": means.tolist(),
        "sds": sds.tolist(),
        "weights": gm.weights_.tolist(),
        "median_component": median_comp,
        "bulk": bulk,
    }
    details["high_weight"] = 0.0
    if k == 1 or bulk is None:
        return _finish(scores, float(scores.max()), "auto", _nothing_reason(k, ks), details)
    above = np.flatnonzero(means > means[bulk])
    valleys = density_valleys(gm, float(scores.min()), float(scores.max()), means[bulk])
    details["dip"] = max((d for d, _ in valleys), default=0.0)
    # the lowest valley deep enough to count: everything beyond it is the separate group
    valley = next((x for d, x in valleys if min_dip is not None and d >= min_dip), None)
    if min_dip is not None and details["dip"] < min_dip:
        reason = _no_group_reason(details["dip"], min_dip)
        return _finish(scores, float(scores.max()), "auto", reason, details)
    if min_forgetting is not None and not (means[above] > min_forgetting).any():
        reason = _not_forgotten_reason(float(means[above].max()), min_forgetting)
        return _finish(scores, float(scores.max()), "auto", reason, details)
    details["high_weight"] = float(gm.weights_[above].sum())
    phi = _crossing(scores, gm, means, bulk)
    floor = ""
    if cfg.at_valley and valley is not None and phi < valley:
        below = scores[scores <= valley]
        phi = float(below.max()) if below.size else valley
        details["high_weight"] = float(gm.weights_[means > valley].sum())
        floor = f" (raised to the density's valley at {valley:.4g}: only the group beyond it)"
    if min_forgetting is not None and phi < min_forgetting:
        phi = float(min_forgetting)
        floor += f" (raised to the floor {min_forgetting:g})"
    high = int(above.size)
    where = (
        f"the component holding the median example (mean {means[median_comp]:.3g}) is the most "
        f"forgotten one, so half of the examples or more are forgotten; the next lower component "
        f"(mean {means[bulk]:.3g}) stands apart from it and is the bulk"
        if stepped
        else f"the component holding the median example (mean {means[bulk]:.3g}) is the bulk"
    )
    reason = (
        f"Gaussian mixture with {k} components (fewest BIC among 1-{max(ks)}); {where}, and the "
        f"{high} component(s) with a higher mean hold the strongly forgotten examples: phi = {phi:.4g}"
        f"{floor}"
    )
    return _finish(scores, phi, "auto", reason, details)


def density_valleys(
    gm, low: float, high: float, bulk: float, points: int = 1024
) -> list[tuple[float, float]]:
    """The fitted density's valleys above the bulk, on [low, high], lowest score first: (depth,
    score) per pair of consecutive peaks from the peak nearest the bulk's mean upward, the depth
    being 1 - f(valley) / min(f(peak), f(later peak)); empty when no peak lies above the bulk's."""
    if high <= low:
        return []
    grid = np.linspace(low, high, points)
    f = np.exp(gm.score_samples(grid.reshape(-1, 1)))
    rising = np.r_[True, f[1:] > f[:-1]]
    falling = np.r_[f[:-1] >= f[1:], True]
    peaks = np.flatnonzero(rising & falling)
    start = int(np.argmin(np.abs(grid[peaks] - bulk)))
    valleys = []
    for a, b in zip(peaks[start:], peaks[start + 1 :], strict=False):
        depth = 1.0 - float(f[a : b + 1].min()) / max(min(f[a], f[b]), 1e-300)
        valleys.append((depth, float(grid[a + int(np.argmin(f[a : b + 1]))])))
    return valleys


def _no_group_reason(dip: float, min_dip: float) -> str:
    valley = f"its deepest valley is {dip:.1%} deep" if dip > 0 else "no valley"
    return (
        f"no separate group of strongly forgotten examples: the fitted score density has no "
        f"peak above the bulk's ({valley}; {min_dip:.0%} needed), so the "
        "mixture's components shape the tails of one group; nothing removed. To cut anyway: a trusted "
        "sample of clean data (--trusted, with a bound on the clean data removed), "
        "--remove-fraction, or --threshold"
    )


def _not_forgotten_reason(top_mean: float, floor: float) -> str:
    return (
        f"no group of forgotten examples: the most forgotten component's mean score is {top_mean:.3g}, "
        f"not above {floor:g} (safety finetuning did not undo these examples: their loss fell or "
        "stayed), so the components only split examples that were not forgotten; nothing removed. "
        "To cut anyway: a trusted sample of clean data (--trusted), --remove-fraction, or --threshold"
    )


def _bulk(means: np.ndarray, sds: np.ndarray, median_comp: int) -> tuple[int | None, bool]:
    """The bulk component, and whether it is the one below the median example's (see `_auto`)."""
    if (means > means[median_comp]).any():
        return median_comp, False
    lower = np.flatnonzero(means < means[median_comp])
    if lower.size == 0:
        return None, False
    below = int(lower[np.argmax(means[lower])])
    gap = means[median_comp] - means[below]
    if gap / np.sqrt((sds[median_comp] ** 2 + sds[below] ** 2) / 2) < MIN_SEPARATION:
        return None, False
    return below, True


def _crossing(scores: np.ndarray, gm, means: np.ndarray, bulk: int) -> float:
    """The highest score below the first score above the bulk mean that is likelier forgotten."""
    high = means > means[bulk]
    ordered = np.sort(scores)
    above = ordered[ordered > means[bulk]]
    if above.size == 0:
        return float(ordered[-1])
    p_high = gm.predict_proba(above.reshape(-1, 1))[:, high].sum(axis=1)
    first = above[np.argmax(p_high >= 0.5)] if (p_high >= 0.5).any() else np.inf
    below = ordered[ordered < first]
    return float(below.max()) if below.size else float(first) - 1e-9


def _nothing_reason(k: int, ks: range) -> str:
    if k == 1:
        return (
            f"the scores fit best as one group (BIC over 1-{max(ks)} components): nothing stands out, "
            "nothing removed"
        )
    return (
        f"Gaussian mixture with {k} components (fewest BIC), but the component holding the median "
        "example is the most forgotten one and no lower component stands apart from it by "
        f"{MIN_SEPARATION:g} sd: no group of strongly forgotten examples, nothing removed "
        "(use --remove-fraction or --threshold)"
    )
