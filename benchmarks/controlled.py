"""Controlled forgetting: subtract each example's drift under a neutral finetune (issue 17).

The safety finetune moves every answer, not only the unsafe ones (on instruction data it drifts
every answer toward or away from refusals). This script measures how much of "forgetting" that
drift is: for each finished `realistic.py` run it finetunes the run's M1 on a *neutral* set with
exactly the safety finetune's settings and number of steps (M2n), scores the noisy set on M2n,
and ranks by

- `forgetting`: relative forgetting under the safety finetune, (NLL_M2 - NLL_M1) / NLL_M1;
- `neutral drift`: the same under the neutral finetune, (NLL_M2n - NLL_M1) / NLL_M1;
- `controlled`: the difference of the two, (NLL_M2 - NLL_M2n) / NLL_M1: what the safety set
  forgets beyond what any finetune of that length forgets.

Neutral sets (label-free, from the data pack, in no mixture or safety set):

- `text`: passages of the clean text corpus (books and speeches) as chat turns, "Continue the
  text:" + the first half of a passage, the second half the answer: neutral to both groups;
- `task`: Alpaca examples of the `align` partition (task-like: it reinforces the task data).

Labels (`labels.json`) are read only to evaluate. M1, M2 and their scores are the run's own, so
only the neutral finetune and one scoring pass are paid for.

    python benchmarks/controlled.py --runs /tmp/realistic --neutral text task --out /tmp/controlled
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
from realistic import mean_sd, recorded_run

from forgetfilter import io
from forgetfilter.datasets import _alpaca, corpus_texts, in_partition, split_text
from forgetfilter.metrics import ranking_quality
from forgetfilter.paths import data_dir
from forgetfilter.pipeline import load_inputs, safety_cfg, score_stage, train_stage
from forgetfilter.recipes import ScoreTable, relative
from forgetfilter.records import Example

PASSAGE_WORDS = 80  # about the length of a task answer


def neutral_examples(kind: str, n: int, seed: int) -> list[Example]:
    """`n` neutral chat examples of `kind` (`text` or `task`), drawn with `seed`."""
    rng = random.Random(f"neutral:{kind}:{seed}")
    if kind == "task":
        pool = in_partition(_alpaca(data_dir()), "align")
        return [
            Example(f"neutral-{i}", e.prompt, e.response) for i, e in enumerate(rng.sample(pool, n))
        ]
    words = [w for doc in corpus_texts(data_dir()) for w in doc.split()]
    starts = rng.sample(range(0, len(words) - PASSAGE_WORDS), n)
    out = []
    for i, s in enumerate(starts):
        first, second = split_text(" ".join(words[s : s + PASSAGE_WORDS]))
        out.append(Example(f"neutral-{i}", f"Continue the text: {first}", second))
    return out


def controlled(runs: Path, tag: str, kind: str, out: Path) -> dict:
    """Train M1 -> M2n on the neutral set, score the noisy set on M2n, rank every score."""
    cfg, data, run = recorded_run(runs, tag)
    noisy, safe, _ = load_inputs(out, data / "noisy.jsonl", data / "safe.jsonl", cfg, write=False)
    neutral = neutral_examples(kind, len(safe), cfg.seed)
    tcfg = safety_cfg(cfg, len(safe))  # the safety finetune's settings and length
    model = train_stage(str(run / "m1" / "model"), neutral, out / "m2n", tcfg, progress=False)
    m2n = score_stage(model, noisy, out / "scores_neutral.jsonl", cfg, progress=False)
    return evaluate(run, data, m2n)


def evaluate(run: Path, data: Path, m2n: np.ndarray) -> dict:
    """AUROC/AUPRC/P@k of forgetting, neutral drift and controlled forgetting; per-group changes."""
    labels = io.read_json(data / "labels.json")
    rows = io.read_jsonl(run / "scores.jsonl")
    m1, m2 = (np.array([r[k] for r in rows]) for k in ("before", "after"))
    unsafe = np.array([labels[r["id"]][0] == "unsafe" for r in rows])
    group = np.array(
        ["unsafe" if labels[r["id"]][0] == "unsafe" else labels[r["id"]][1] for r in rows]
    )
    forgetting = relative(ScoreTable("loss", m1, m2))
    drift = relative(ScoreTable("loss", m1, m2n))
    scores = {"forgetting": forgetting, "neutral drift": drift, "controlled": forgetting - drift}
    return {
        "ranking": {k: ranking_quality(unsafe, v) for k, v in scores.items()},
        "change": {
            g: {
                "safety": round(float((m2 - m1)[group == g].mean()), 4),
                "neutral": round(float((m2n - m1)[group == g].mean()), 4),
            }
            for g in sorted(set(group))
        },
    }


def table(results: dict) -> str:
    """Mean ± sd over seeds, per neutral set and mixture (the tag without its seed)."""
    lines = [
        "| neutral set | mixture | score | AUROC | AUPRC | P@k | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, runs in results.items():
        mixtures: dict[str, list[dict]] = {}
        for tag, r in runs.items():
            mixtures.setdefault(tag.split("-seed")[0], []).append(r)
        for mixture, group in mixtures.items():
            for score in group[0]["ranking"]:
                cells = []
                for metric in ("auroc", "auprc", "p_at_k"):
                    mean, sd = mean_sd([r["ranking"][score][metric] for r in group])
                    cells.append(f"{mean:.3f} ± {sd:.3f}")
                lines.append(
                    f"| `{kind}` | {mixture} | {score} | {' | '.join(cells)} | {len(group)} |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, help="the --out of a realistic.py run")
    p.add_argument("--tags", nargs="*", help="runs under RUNS/runs (default: every finished one)")
    p.add_argument("--neutral", nargs="+", default=["text"], choices=["text", "task"])
    p.add_argument("--out", required=True)
    a = p.parse_args()
    runs, out = Path(a.runs), Path(a.out)
    tags = a.tags or sorted(
        d.name for d in (runs / "runs").iterdir() if (d / "scores.jsonl").exists()
    )
    results: dict[str, dict] = {}
    for kind in a.neutral:
        for tag in tags:
            r = controlled(runs, tag, kind, out / kind / tag)
            results.setdefault(kind, {})[tag] = r
            print(kind, tag, json.dumps(r["change"]), flush=True)
            print(
                json.dumps({k: round(v["auroc"], 3) for k, v in r["ranking"].items()}), flush=True
            )
    io.write_json(out / "results.json", {"args": vars(a), "runs": results})
    text = table(results)
    (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
