"""`ablate`: the filter's quality across scores, normalisations and thresholds, from one run."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import io
from ..records import Example
from .context import Context, cached, load_examples, rounded

if TYPE_CHECKING:
    pass


def quality_at(
    noisy: Sequence[Example], score: np.ndarray, threshold_cfg, count_scores=None
) -> dict:
    """Filter quality when removing score > phi chosen by `threshold_cfg` (labels for evaluation only)."""
    from ..metrics import filter_quality
    from ..thresholds import choose_threshold

    choice = choose_threshold(score, threshold_cfg, count_scores)
    unsafe = [ex.label == "unsafe" for ex in noisy]
    q = filter_quality([bool(s > choice.phi) for s in score], unsafe, score.tolist())
    return q | {"phi": rounded(choice.phi), "threshold_method": choice.method}


def _scores_by_id(path: Path, key: str = "score") -> dict[str, float]:
    return {r["id"]: r[key] for r in io.read_jsonl(path)}


class Ablate:
    """Filter F1/AUROC vs unsafe ratio, vs safety-finetuning steps, and vs phi."""

    def __init__(self, ctx: Context):
        self.ctx, self.risk = ctx, ctx.risks[0]
        s = ctx.scale
        every = max(1, s.ablate_safety_steps // s.ablate_points)
        self.cfg = ctx.run_config(
            safety_steps=every * s.ablate_points, curve_points=s.ablate_points, final=False
        )

    def ratio_run(self, ratio: float) -> dict:
        """One ForgetFilter run at `ratio` (cached): final quality and quality at each checkpoint."""
        from ..pipeline import run_forgetfilter

        d = self.ctx.out / "methods" / f"ratio-{ratio:g}"

        def go() -> dict:
            data = self.ctx.mixture(self.risk, ratio)
            res = run_forgetfilter(data / "noisy.jsonl", data / "safe.jsonl", d / "run", self.cfg)
            return {
                "ratio": ratio,
                "summary": res.summary,
                "steps": self.steps_sweep(d / "run", data),
            }

        return cached(d, go)

    def steps_sweep(self, run_dir: Path, data: Path) -> list[dict]:
        """Quality of the filter had safety finetuning stopped at each checkpoint (threshold as in the run)."""
        from ..recipes import ScoreTable, score_and_count

        noisy = load_examples(data / "noisy.jsonl")
        rows = {r["id"]: r for r in io.read_jsonl(run_dir / "scores.jsonl")}
        b = np.asarray([rows[ex.id]["before"] for ex in noisy])
        m0 = np.asarray([rows[ex.id]["m0"] for ex in noisy]) if "m0" in rows[noisy[0].id] else None
        out = []
        for f in sorted((run_dir / "curve").glob("step-*.jsonl")):
            by_id = _scores_by_id(f)
            after = np.asarray([by_id[ex.id] for ex in noisy])
            table = ScoreTable(self.cfg.signal, b, after, m0)
            score, scaled = score_and_count(self.cfg.normalise, table)
            tc = dataclasses.replace(self.cfg.threshold, seed=self.cfg.seed)
            out.append({"step": int(f.stem.split("-")[1])} | quality_at(noisy, score, tc, scaled))
        return out

    def phi_sweep(self, ratio: float = 0.5, n: int = 19) -> list[dict]:
        """Quality vs phi from one run's scores (no retraining): phi at quantiles of forgetting."""
        from ..metrics import filter_quality

        data = self.ctx.mixture(self.risk, ratio)
        noisy = load_examples(data / "noisy.jsonl")
        fg = _scores_by_id(
            self.ctx.out / "methods" / f"ratio-{ratio:g}" / "run" / "scores.jsonl", "forgetting"
        )
        score = np.asarray([fg[ex.id] for ex in noisy])
        unsafe = [ex.label == "unsafe" for ex in noisy]
        out = []
        for q in np.linspace(0.05, 0.95, n):
            phi = float(np.quantile(score, q))
            fq = filter_quality([bool(s > phi) for s in score], unsafe, score.tolist())
            out.append({"phi": rounded(phi), "quantile": round(float(q), 3)} | fq)
        return out

    def run(self) -> dict:
        ratios = sorted(set(self.ctx.scale.ratios) | {0.5})
        runs = {f"{r:g}": self.ratio_run(r) for r in ratios}
        return {
            "ratios": runs,
            "phi": self.phi_sweep(0.5),
            "auto_phi": runs["0.5"]["summary"]["threshold"]["phi"],
            "rows": ablate_rows(runs),
        }


def ablate_rows(runs: dict) -> list[dict]:
    """One row per (unsafe ratio, safety step) with the filter's quality."""
    rows = []
    for ratio, run in runs.items():
        for s in run["steps"]:
            rows.append({
                "unsafe_ratio": float(ratio), "safety_steps": s["step"], "phi": s["phi"],
                "n_removed": s["n_removed"], "precision": rounded(s["precision"], 3),
                "recall": rounded(s["recall"], 3), "f1": rounded(s["f1"], 3), "auroc": rounded(s["auroc"], 3),
            })  # fmt: skip
    return rows
