"""How forgetting develops over a longer safety finetune, on a finished `realistic.py` run's M1
(issue 17: does more safety finetuning ever forget the unsafe answers more than the task data?).

It finetunes the run's `m1/model` on the run's safety set for `--steps` optimizer steps (the
run's safety settings otherwise), scores the noisy examples every `--every` steps, and prints,
per checkpoint, each source's mean NLL change against M1 and the AUROC of the forgetting
recipes against the hidden labels (`labels.json`, read only here). M1 and its scores are the
run's own, so only the safety finetune is paid for.

    python benchmarks/safety_steps.py --runs /tmp/realistic --tag harm-s0.05-mixed-seed0 \\
        --steps 20 --every 4 --out /tmp/safety_steps
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from realistic import recorded_run

from forgetfilter import io
from forgetfilter.metrics import ranking_quality
from forgetfilter.pipeline import load_inputs, safety_cfg, score_values, unlabelled
from forgetfilter.recipes import ScoreTable, apply
from forgetfilter.training import train

RECIPES = ("none", "relative", "reversion", "relative+learning")


def curve(runs: Path, tag: str, steps: int, every: int, out: Path) -> dict:
    """Score the noisy set every `every` steps of a `steps`-step safety finetune of the run's M1."""
    cfg, data, run = recorded_run(runs, tag)
    cfg.safety_steps = steps
    noisy, safe, _ = load_inputs(out, data / "noisy.jsonl", data / "safe.jsonl", cfg, write=False)

    def on_checkpoint(step: int, model, tokenizer) -> None:
        path = out / f"step-{step:06d}.jsonl"
        if not path.exists():
            values = score_values(model, tokenizer, noisy, cfg, progress=False)
            io.write_jsonl(
                path, ({"id": ex.id, "score": v} for ex, v in zip(noisy, values, strict=True))
            )

    tcfg = safety_cfg(cfg, len(safe))
    train(
        str(run / "m1" / "model"),
        unlabelled(safe),
        out / "m2",
        tcfg,
        callback=on_checkpoint,
        callback_every=every,
        progress=False,
    )
    return evaluate(run, data, out)


def evaluate(run: Path, data: Path, out: Path) -> dict:
    """Per checkpoint: mean NLL change against M1 per source, and each recipe's AUROC."""
    labels = io.read_json(data / "labels.json")
    rows = io.read_jsonl(run / "scores.jsonl")
    ids = [r["id"] for r in rows]
    m0, m1 = (np.array([r[k] for r in rows]) for k in ("m0", "before"))
    unsafe = np.array([labels[i][0] == "unsafe" for i in ids])
    source = np.array([labels[i][1] for i in ids])
    result = {}
    for path in sorted(out.glob("step-*.jsonl")):
        by_id = {r["id"]: r["score"] for r in io.read_jsonl(path)}
        m2 = np.array([by_id[i] for i in ids])
        table = ScoreTable("loss", m1, m2, m0)
        step = int(path.stem.split("-")[1])
        result[step] = {
            "change": {
                g: round(float((m2 - m1)[source == g].mean()), 4) for g in sorted(set(source))
            },
            "auroc": {
                n: round(ranking_quality(unsafe, apply(n, table))["auroc"], 3) for n in RECIPES
            },
        }
        print(step, json.dumps(result[step]), flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, help="the --out of a realistic.py run")
    p.add_argument(
        "--tag", required=True, help="the run under RUNS/runs, e.g. harm-s0.05-mixed-seed0"
    )
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--every", type=int, default=4)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    out = Path(a.out)
    result = curve(Path(a.runs), a.tag, a.steps, a.every, out)
    io.write_json(out / "results.json", {"args": vars(a), "steps": result})


if __name__ == "__main__":
    main()
