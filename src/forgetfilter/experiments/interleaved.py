"""`interleaved`: long-term safety over rounds of noisy finetuning and safety finetuning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .context import SAFETY_METRICS, Context, cached, load_examples, rounded


class Interleaved:
    """Long-term safety: K rounds of (noisy chunk, safety finetune) vs filtering once first."""

    def __init__(self, ctx: Context):
        self.ctx, self.risk = ctx, ctx.risks[0]
        self.data = ctx.mixture(self.risk)
        self.noisy = load_examples(self.data / "noisy.jsonl")
        self.safe = load_examples(self.data / "safe.jsonl")
        self.cfg = ctx.run_config(final=False)
        self.root = ctx.out / "methods"
        k = ctx.scale.rounds
        self.chunks = [self.noisy[i::k] for i in range(k)]

    def evaluate(self, model: str, d: Path) -> dict:
        suites = [self.risk, "squad"]
        return cached(
            d / "eval",
            lambda: self.ctx.evaluate(model, suites, self.data, d / "eval_outputs.jsonl"),
        )

    def interleaved_arm(self) -> list[dict]:
        from ..pipeline import noisy_cfg, safety_cfg, train_stage

        model, points = self.cfg.model, []
        scfg = safety_cfg(
            dataclasses.replace(self.cfg, safety_steps=self.ctx.scale.round_safety_steps),
            len(self.safe),
        )
        for k, chunk in enumerate(self.chunks, start=1):
            d = self.root / "interleaved" / f"round-{k}"
            model = train_stage(model, chunk, d / "noisy", noisy_cfg(self.cfg))
            points.append(
                {
                    "round": k,
                    "phase": "after noisy chunk",
                    "x": k,
                    "eval": self.evaluate(model, d / "noisy"),
                }
            )
            model = train_stage(model, self.safe, d / "safety", scfg)
            points.append(
                {
                    "round": k,
                    "phase": "after safety finetune",
                    "x": k + 0.5,
                    "eval": self.evaluate(model, d / "safety"),
                }
            )
        return points

    def filter_first_arm(self) -> tuple[list[dict], dict]:
        from ..pipeline import noisy_cfg, run_forgetfilter, train_stage

        d0 = self.root / "filter_first"
        res = run_forgetfilter(
            self.data / "noisy.jsonl", self.data / "safe.jsonl", d0 / "run", self.cfg
        )
        removed = set(res.removed_ids)
        model, points = self.cfg.model, []
        for k, chunk in enumerate(self.chunks, start=1):
            kept = [ex for ex in chunk if ex.id not in removed]
            d = d0 / f"round-{k}"
            if kept:
                model = train_stage(model, kept, d / "noisy", noisy_cfg(self.cfg))
            points.append(
                {
                    "round": k,
                    "phase": "after kept chunk",
                    "x": k,
                    "n_kept": len(kept),
                    "eval": self.evaluate(model, d),
                }
            )
        return points, res.summary

    def run(self) -> dict:
        a = self.interleaved_arm()
        b, summary = self.filter_first_arm()
        key, col = SAFETY_METRICS[self.risk][0]
        rows = []
        for arm, pts in (("interleaved", a), ("filter_first", b)):
            for p in pts:
                ev = p["eval"]
                rows.append({
                    "arm": arm, "round": p["round"], "phase": p["phase"], "x": p["x"],
                    col: rounded((ev.get(self.risk) or {}).get(key), 4),
                    "squad_f1": rounded((ev.get("squad") or {}).get("f1"), 2),
                })  # fmt: skip
        return {
            "metric": col,
            "interleaved": a,
            "filter_first": b,
            "filter_summary": summary,
            "rows": rows,
        }
