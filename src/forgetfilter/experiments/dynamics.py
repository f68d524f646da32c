"""`dynamics`: how each group of the noisy set is learned during finetuning and forgotten after."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import io
from ..records import Example
from .context import Context, groups_of, load_examples, rounded

if TYPE_CHECKING:
    from ..training import TrainConfig


GROUP_ORDER = ("unsafe", "safe (same risk)", "SQuAD", "Alpaca")


def group_sample(examples: Sequence[Example], per_group: int) -> list[Example]:
    """Up to `per_group` examples of each group, in file order (the mixture is already shuffled)."""
    groups, out, counts = groups_of(examples), [], {}
    for ex in examples:
        g = groups[ex.id]
        if counts.get(g, 0) < per_group:
            counts[g] = counts.get(g, 0) + 1
            out.append(ex)
    return out


def group_means(
    ids: Sequence[str], values: Sequence[float], groups: dict[str, str]
) -> dict[str, float]:
    """Mean value per group."""
    acc: dict[str, list[float]] = {}
    for i, v in zip(ids, values, strict=True):
        acc.setdefault(groups[i], []).append(float(v))
    return {g: round(float(np.mean(vs)), 6) for g, vs in acc.items()}


class Dynamics:
    """Per-group mean response NLL during noisy finetuning (M0 -> M1) and safety finetuning (M1 -> M2)."""

    def __init__(self, ctx: Context):
        self.ctx, self.risk = ctx, ctx.risks[0]
        self.data = ctx.mixture(self.risk)
        s = ctx.scale
        self.cfg = ctx.run_config(  # forgetting alone: this experiment shows forgetting itself
            safety_steps=s.dynamics_safety_steps or s.safety_steps,
            curve_points=s.curve_points,
            final=False,
            normalise="relative",
        )
        self.run_dir = ctx.out / "methods" / "forgetfilter" / "run"
        self.learn_dir = ctx.out / "methods" / "learning"

    def nll(self, model, tokenizer, examples: Sequence[Example]) -> list[float]:
        from ..inference import response_nll
        from ..pipeline import unlabelled

        c = self.cfg
        v = response_nll(
            model, tokenizer, unlabelled(examples), batch_size=c.score_batch_size,
            max_length=c.noisy_train.max_length, progress=False,
        )  # fmt: skip
        return v.tolist()

    def checkpoint(
        self, step: int, model, tokenizer, sample: Sequence[Example], groups: dict
    ) -> None:
        path = self.learn_dir / f"step-{step:06d}.json"
        if not path.exists():
            means = group_means(
                [ex.id for ex in sample], self.nll(model, tokenizer, sample), groups
            )
            io.write_json(path, {"step": step, "means": means})

    def learn(self) -> None:
        """Train M1 into the run's m1/ with a checkpoint callback (the pipeline then reuses it)."""
        from ..models import load_model
        from ..pipeline import check_config, load_inputs, noisy_cfg, unlabelled
        from ..training import train

        self.run_dir.mkdir(parents=True, exist_ok=True)
        inputs = [self.data / "noisy.jsonl", self.data / "safe.jsonl"]
        check_config(self.run_dir, self.cfg, inputs, force=False)  # the run this M1 belongs to
        noisy, _, _ = load_inputs(
            self.run_dir, self.data / "noisy.jsonl", self.data / "safe.jsonl", self.cfg
        )
        sample = group_sample(noisy, self.ctx.scale.curve_per_group)
        groups = groups_of(noisy)
        if not (self.learn_dir / "step-000000.json").exists():
            m0, tok = load_model(self.cfg.model)
            self.checkpoint(0, m0, tok, sample, groups)
            del m0
        tcfg = noisy_cfg(self.cfg)
        every = max(1, _total_steps(len(noisy), tcfg) // self.ctx.scale.curve_points)
        cb = lambda step, m, tok: self.checkpoint(step, m, tok, sample, groups)  # noqa: E731
        train(
            self.cfg.model,
            unlabelled(noisy),
            self.run_dir / "m1",
            tcfg,
            callback=cb,
            callback_every=every,
        )

    def run(self) -> dict:
        from ..pipeline import run_forgetfilter

        self.learn()
        res = run_forgetfilter(
            self.data / "noisy.jsonl", self.data / "safe.jsonl", self.run_dir, self.cfg
        )
        noisy = load_examples(self.data / "noisy.jsonl")
        return dynamics_results(self.run_dir, self.learn_dir, noisy, res.summary)


def _total_steps(n: int, tcfg: TrainConfig) -> int:
    """Optimizer steps of a training run over n examples (as `training` plans them, one process)."""
    micro = tcfg.micro_batch_size or min(8, tcfg.batch_size)
    accum = max(1, tcfg.batch_size // micro)
    per_epoch = math.ceil(math.ceil(n / micro) / accum)
    return tcfg.max_steps or max(1, math.ceil(tcfg.epochs * per_epoch))


def dynamics_results(
    run_dir: Path, learn_dir: Path, noisy: Sequence[Example], summary: dict
) -> dict:
    """Learning and forgetting curves per group, forgetting scores per group, and a group table."""
    groups = groups_of(noisy)
    ids = [ex.id for ex in noisy]
    learning: dict[str, list] = {}
    for f in sorted(learn_dir.glob("step-*.json")):
        row = io.read_json(f)
        for g, v in row["means"].items():
            learning.setdefault(g, []).append([row["step"], v])
    rows = io.read_jsonl(run_dir / "scores.jsonl")
    before = {r["id"]: r["before"] for r in rows}
    curve = [(0, before)] + [
        (int(f.stem.split("-")[1]), {r["id"]: r["score"] for r in io.read_jsonl(f)})
        for f in sorted((run_dir / "curve").glob("step-*.jsonl"))
    ]
    forgetting: dict[str, list] = {}
    for step, scores in curve:
        for g, v in group_means(ids, [scores[i] for i in ids], groups).items():
            forgetting.setdefault(g, []).append([step, v])
    by_group: dict[str, list[float]] = {}
    for r in rows:
        by_group.setdefault(groups[r["id"]], []).append(r["forgetting"])
    return {
        "learning": learning,
        "forgetting": forgetting,
        "forgetting_scores": by_group,
        "phi": summary["threshold"]["phi"],
        "threshold": summary["threshold"],
        "quality": summary.get("quality"),
        "rows": dynamics_rows(learning, forgetting, by_group, rows, groups),
    }


def dynamics_rows(
    learning: dict, forgetting: dict, by_group: dict, rows: list, groups: dict
) -> list[dict]:
    """Per group: NLL at M0, M1 (sample) and before/after safety finetuning (all), mean forgetting."""
    out = []
    after = {}
    for r in rows:
        after.setdefault(groups[r["id"]], []).append(r["after"])
    for g in [g for g in GROUP_ORDER if g in by_group] + sorted(set(by_group) - set(GROUP_ORDER)):
        lc, fc = learning.get(g) or [[None, None]], forgetting.get(g) or [[None, None]]
        out.append({
            "group": g,
            "n": len(by_group[g]),
            "nll_M0": rounded(lc[0][1], 4),
            "nll_M1": rounded(fc[0][1], 4),
            "nll_M2": rounded(float(np.mean(after[g])), 4),
            "mean_forgetting": rounded(float(np.mean(by_group[g])), 4),
            "median_forgetting": rounded(float(np.median(by_group[g])), 4),
        })  # fmt: skip
    return out
