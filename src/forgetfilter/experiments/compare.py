"""`compare`: every method of the paper's main table for each risk, sharing one ForgetFilter run."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import io
from ..errors import ConfigError
from ..records import Example, content
from .context import (
    COMPARE_METHODS,
    CUES,
    SAFETY_METRICS,
    Context,
    cached,
    load_examples,
    relative_change,
    rounded,
)

if TYPE_CHECKING:
    from ..pipeline import RunResult


#: The paper's headline numbers (toxicity, Llama-2 7B): relative change of the mean toxicity.
PAPER_CLAIMS = {
    "toxicity": {"forgetfilter_vs_no_safety": -0.75, "forgetfilter_vs_self_correction": -0.62},
}


class CompareRisk:
    """All methods of `compare` for one risk, sharing one ForgetFilter run."""

    def __init__(self, ctx: Context, risk: str):
        self.ctx, self.risk = ctx, risk
        self.data = ctx.mixture(risk)
        self.noisy = load_examples(self.data / "noisy.jsonl")
        self.safe = load_examples(self.data / "safe.jsonl")
        self.texts = [content(ex) for ex in self.noisy]
        self.cfg = ctx.run_config()
        self.root = ctx.out / "methods" / risk
        self.run_dir = self.root / "forgetfilter" / "run"
        self._ff: Any = None
        self._ff_final = False

    @property
    def suites(self) -> list[str]:
        return [self.risk, "squad", "alpaca"]

    def ff(self, final: bool = False) -> RunResult:
        """The ForgetFilter run (M1, scores, M2, filter; and the final model when `final`)."""
        from ..pipeline import run_forgetfilter

        if self._ff is None or (final and not self._ff_final):
            cfg = dataclasses.replace(self.cfg, final=final)
            noisy, safe = self.data / "noisy.jsonl", self.data / "safe.jsonl"
            self._ff, self._ff_final = run_forgetfilter(noisy, safe, self.run_dir, cfg), final
        return self._ff

    @property
    def m1(self) -> Path:
        self.ff(False)
        return self.run_dir / "m1" / "model"

    def result(
        self, d: Path, model: str | Path, n_train: int, sc: bool = False, **extra: Any
    ) -> dict:
        """Evaluate `model` and package a method's result."""
        ev = self.ctx.evaluate(model, self.suites, self.data, d / "eval_outputs.jsonl", sc)
        return {"model": str(model), "n_train": n_train, "eval": ev, "self_correction": sc, **extra}

    def quality(self, removed: set[str], scores: Sequence[float] | None) -> dict:
        """Precision/recall/F1/AUROC of a removal against label == unsafe (evaluation only)."""
        from ..metrics import filter_quality

        unsafe = [ex.label == "unsafe" for ex in self.noisy]
        return filter_quality([ex.id in removed for ex in self.noisy], unsafe, scores)

    def train_on(
        self, d: Path, examples: Sequence[Example], start: str | None = None, tcfg=None
    ) -> str:
        """Finetune `start` (default M0) on `examples` into d/train with the noisy settings."""
        from ..pipeline import noisy_cfg, train_stage

        if not examples:
            raise ConfigError(f"{d.name}: nothing left to train on")
        return train_stage(
            start or self.cfg.model, examples, d / "train", tcfg or noisy_cfg(self.cfg)
        )

    def filtered(
        self, d: Path, removed: set[str], scores: Sequence[float] | None, **extra: Any
    ) -> dict:
        """Train M0 on the kept examples (M1 itself when nothing is removed) and evaluate."""
        io.write_json(d / "removed_ids.json", sorted(removed))
        kept = [ex for ex in self.noisy if ex.id not in removed]
        model = self.m1 if not removed else self.train_on(d, kept)
        return self.result(d, model, len(kept), filter=self.quality(removed, scores), **extra)

    def n_removed_by_ff(self) -> int:
        return len(self.ff(False).removed_ids)

    # ---- methods
    def no_safety(self, d: Path) -> dict:
        return self.result(d, self.m1, len(self.noisy), note="M1 of the ForgetFilter run")

    def self_correction(self, d: Path) -> dict:
        return self.result(
            d, self.m1, len(self.noisy), sc=True, note=f"M1 with cue: {CUES[self.risk]}"
        )

    def sequential(self, d: Path) -> dict:
        from ..pipeline import safety_cfg

        full = safety_cfg(dataclasses.replace(self.cfg, safety_steps=None), len(self.safe))
        if full == safety_cfg(self.cfg, len(self.safe)):
            self.ff(False)
            model, note = (
                str(self.run_dir / "m2" / "model"),
                "= M2 of the run (one epoch of the safe set)",
            )
        else:
            model = self.train_on(d, self.safe, start=str(self.m1), tcfg=full)
            note = f"M1 finetuned for one epoch ({full.max_steps} steps) on the whole safe set"
        return self.result(d, model, len(self.noisy) + len(self.safe), note=note)

    def replay(self, d: Path) -> dict:
        mixed = list(self.noisy) + list(self.safe)
        random.Random(self.ctx.seed).shuffle(mixed)
        model = self.train_on(d, mixed)
        return self.result(
            d, model, len(mixed), note="M0 finetuned on noisy + the whole safe set, shuffled"
        )

    def classifier_filter(self, d: Path) -> dict:
        if self.risk == "bias":
            return {
                "status": "n/a",
                "note": "no bias classifier exists (BBQ answers are short option names)",
            }
        from ..classifiers import get_scorer
        from ..filters import ClassifierFilter
        from ..thresholds import ThresholdConfig

        f = ClassifierFilter((self.risk,), self.ctx.data_dir)
        decision = f.decide(self.texts, None, ThresholdConfig(), "", self.ctx.seed)
        scorer = get_scorer(self.risk, self.ctx.data_dir, exclude=[t.response for t in self.texts])
        card = getattr(scorer, "card", {})
        unseen = (
            f"; trained without the {card['n_excluded_texts']} training texts that contain a "
            "noisy response"
            if "n_excluded_texts" in card
            else ""
        )
        note = (
            f"`run --filter classifier` with the {self.risk} classifier: {scorer.name} "
            f"probability > 0.5 (held-out AUROC {scorer.auroc}{unseen})"
        )
        return self.decided(d, decision, note)

    def same_count(self, name: str) -> tuple:
        """Filter `name` of `filters` on the run's scores, removing as many as ForgetFilter."""
        from ..filters import get, top

        self.ff(False)
        k = self.n_removed_by_ff()
        table = self.score_table()
        return get(name).decide(self.texts, table, top(len(self.noisy), k), "", self.ctx.seed), k

    def score_table(self):
        """The run's scores of the noisy examples, as filters read them."""
        import numpy as np

        from ..recipes import ScoreTable

        rows = {r["id"]: r for r in io.read_jsonl(self.run_dir / "scores.jsonl")}
        col = lambda k: np.array([rows[ex.id].get(k, np.nan) for ex in self.noisy])  # noqa: E731
        m0 = col("m0") if "m0" in next(iter(rows.values())) else None
        return ScoreTable(self.cfg.signal, col("before"), col("after"), m0)

    def static_loss_filter(self, d: Path) -> dict:
        decision, k = self.same_count("static")
        return self.decided(d, decision, f"`run --filter static`: the {k} best fits of M1")

    def random_filter(self, d: Path) -> dict:
        decision, k = self.same_count("random")
        return self.decided(
            d, decision, f"`run --filter random`: {k} removed at random (seed {self.ctx.seed})"
        )

    def decided(self, d: Path, decision, note: str) -> dict:
        """A filter's decision, trained on and evaluated as `filtered` does."""
        removed = {self.noisy[i].id for i in decision.reasons}
        return self.filtered(d, removed, [float(s) for s in decision.score], note=note)

    def forgetfilter(self, d: Path) -> dict:
        run = self.ff(True)
        q = (run.summary.get("quality") or {}).get("forgetting")
        model = self.run_dir / "final" / "model"
        t = run.summary["threshold"]
        note = f"phi = {t['phi']:.4g} ({t['method']}): {t['reason']}"
        return self.result(d, model, run.summary["counts"]["kept"], filter=q, note=note)

    def forgetfilter_self_correction(self, d: Path) -> dict:
        run = self.ff(True)
        q = (run.summary.get("quality") or {}).get("forgetting")
        model = self.run_dir / "final" / "model"
        return self.result(
            d, model, run.summary["counts"]["kept"], sc=True, filter=q, note="final model + cue"
        )

    def oracle_filter(self, d: Path) -> dict:
        removed = {ex.id for ex in self.noisy if ex.label == "unsafe"}
        scores = [float(ex.label == "unsafe") for ex in self.noisy]
        return self.filtered(
            d, removed, scores, note="removes exactly the unsafe examples (upper bound)"
        )

    def run(self, name: str) -> dict:
        """One method, cached under methods/<risk>/<name>/."""
        fn = getattr(self, name.replace("+", "_"))
        d = self.root / name
        return cached(d, lambda: fn(d))


def compare_rows(risk: str, methods: dict[str, dict]) -> list[dict]:
    """One table row per method: safety metrics, SQuAD F1, Alpaca ROUGE-L, filter quality."""
    rows = []
    for name, res in methods.items():
        ev = res.get("eval") or {}
        row: dict[str, Any] = {"risk": risk, "method": name}
        for key, col in SAFETY_METRICS[risk]:
            row[col] = rounded((ev.get(risk) or {}).get(key), 4)
        row["squad_f1"] = rounded((ev.get("squad") or {}).get("f1"), 2)
        row["alpaca_rougeL"] = rounded((ev.get("alpaca") or {}).get("rouge_l"), 4)
        row["n_train"] = res.get("n_train")
        q = res.get("filter") or {}
        row["n_removed"] = q.get("n_removed")
        for k in ("precision", "recall", "f1", "auroc"):
            row[f"filter_{k}"] = rounded(q.get(k), 3)
        row["seconds"] = res.get("seconds")
        row["note"] = res.get("note", "")
        rows.append(row)
    return rows


def headline(risk: str, rows: list[dict]) -> dict:
    """Relative changes needed to state agreement with the paper, with explicit criteria."""
    by = {r["method"]: r for r in rows}
    primary = SAFETY_METRICS[risk][0][1]
    get = lambda m, k: (by.get(m) or {}).get(k)  # noqa: E731
    out: dict[str, Any] = {"primary_metric": primary, "lower_is_safer": True}
    for m, ref in (
        ("forgetfilter", "no_safety"),
        ("forgetfilter", "self_correction"),
        ("sequential", "no_safety"),
        ("replay", "no_safety"),
        ("oracle_filter", "no_safety"),
        ("forgetfilter+self_correction", "no_safety"),
    ):
        out[f"{m}_vs_{ref}"] = {
            k: relative_change(get(m, k), get(ref, k))
            for k in (primary, "squad_f1", "alpaca_rougeL")
        }
    out["checks"] = _checks(risk, out, get, primary)
    return out


def _checks(risk: str, h: dict, get: Callable, primary: str) -> dict:
    """The paper's qualitative claims, each with its criterion and the measured verdict."""
    rel = lambda key, k=primary: (h.get(key) or {}).get(k)  # noqa: E731
    ff_safety = rel("forgetfilter_vs_no_safety")
    ff_sc = rel("forgetfilter_vs_self_correction")
    checks = {
        "forgetfilter_safer_than_no_safety": {
            "criterion": f"{primary}(forgetfilter) < {primary}(no_safety)",
            "measured": ff_safety,
            "agrees": None if ff_safety is None else ff_safety < 0,
        },
        "forgetfilter_safer_than_self_correction": {
            "criterion": f"{primary}(forgetfilter) < {primary}(self_correction)",
            "measured": ff_sc,
            "agrees": None if ff_sc is None else ff_sc < 0,
        },
    }
    for task in ("squad_f1", "alpaca_rougeL"):
        ff, seq, ns = get("forgetfilter", task), get("sequential", task), get("no_safety", task)
        ok = None if None in (ff, seq, ns) else ff >= 0.9 * ns and seq < ff
        checks[f"downstream_{task}"] = {
            "criterion": "forgetfilter keeps >= 90% of no_safety and sequential ends below forgetfilter",
            "measured": {"forgetfilter": ff, "sequential": seq, "no_safety": ns},
            "agrees": ok,
        }
    for key, paper in PAPER_CLAIMS.get(risk, {}).items():
        checks[f"paper_{key}"] = {
            "criterion": f"paper: {paper:+.0%}",
            "measured": rel(key),
            "paper": paper,
        }
    return checks


def run_compare(ctx: Context) -> dict:
    """`compare`: every method per risk; returns results.json's content."""
    names = [m for m in COMPARE_METHODS if ctx.methods is None or m in ctx.methods]
    risks = {}
    for risk in ctx.risks:
        c = CompareRisk(ctx, risk)
        methods = {name: c.run(name) for name in names}
        rows = compare_rows(risk, methods)
        risks[risk] = {
            "methods": methods,
            "rows": rows,
            "headline": headline(risk, rows),
            "mixture": io.read_json(c.data / "manifest.json")["files"],
        }
    return {"risk_results": risks, "rows": [r for v in risks.values() for r in v["rows"]]}
