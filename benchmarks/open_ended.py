"""Which task data the filter score confuses with unsafe answers: open-ended requests (issue 17).

On the realistic runs the clean conversations that rank among the top k (k = the number of unsafe
ones) under the default score are mostly Alpaca requests to create something (a poem, a story, a
plan). This script measures that on `realistic.py` (or `mixed_risks.py`) run directories: it
splits the clean conversations by the first word of the last user turn into *open-ended* requests
(`OPEN_ENDED`: create, generate, write, compose, ...) and the rest, and reports, for the run's
filter score (`forgetting`, smoothed where the run smoothed) and its unsmoothed score
(`own_score`), and the default's two parts alone (`relative` forgetting and M0's `surprise`, where
the run scored M0): each group's mean scaled rank, the AUROC of the unsafe conversations against each
clean group, and who fills the top k. The split is for this analysis only; no filter reads it.

    python benchmarks/open_ended.py --runs /tmp/realistic --out /tmp/open_ended.json
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
from realistic import run_table
from scipy.stats import rankdata

from forgetfilter import io
from forgetfilter.metrics import ranking_quality
from forgetfilter.readers import read_examples
from forgetfilter.recipes import apply, surprise
from forgetfilter.records import conversation

SCORES = ("forgetting", "own_score")  # the run's filter score and, where smoothed, its own

# A request that starts with one of these asks the model to produce new text.
OPEN_ENDED = frozenset(
    "create generate compose write tell design imagine invent brainstorm make draft construct "
    "develop produce suggest come".split()
)


def first_word(messages: list[dict]) -> str:
    """The first word of the last user turn, lower case ('' where there is none)."""
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    words = re.findall(r"[a-z]+", users[-1].lower()) if users else []
    return words[0] if words else ""


def one_run(data: Path, run: Path, noisy: Path | None = None) -> dict:
    """Group ranks, AUROCs and top-k make-up of one run's scores (see the module docstring);
    `noisy`: the run's noisy file, in any format the reader takes (default `data/noisy.jsonl`)."""
    labels = io.read_json(data / "labels.json")
    rows = list(io.read_jsonl(run / "scores.jsonl"))
    records, _ = read_examples(noisy or data / "noisy.jsonl")
    turns = {ex.id: conversation(ex) for ex in records}
    unsafe = np.array([labels[r["id"]][0] == "unsafe" for r in rows])
    opened = np.array([first_word(turns[r["id"]]) in OPEN_ENDED for r in rows])
    groups = {"unsafe": unsafe, "open-ended": opened & ~unsafe, "other": ~opened & ~unsafe}
    out = {
        "n": {g: int(m.sum()) for g, m in groups.items()},
        "unsafe_open_ended": float(opened[unsafe].mean()),
    }
    scores = {k: np.array([r[k] for r in rows], dtype=float) for k in SCORES if k in rows[0]}
    if "m0" in rows[0]:  # the default's two parts, each alone
        table = run_table(rows)
        scores |= {"relative": apply("relative", table), "surprise": surprise(table)}
    for key, score in scores.items():
        rank = rankdata(score) / len(score)
        top = np.argsort(-score, kind="stable")[: int(unsafe.sum())]
        out[key] = {
            "mean_rank": {g: round(float(rank[m].mean()), 3) for g, m in groups.items()},
            "auroc_vs": {
                g: round(ranking_quality(unsafe[m | unsafe], score[m | unsafe])["auroc"], 3)
                for g, m in groups.items()
                if g != "unsafe"
            },
            "top_k": {g: int(m[top].sum()) for g, m in groups.items()},
        }
    return out


def markdown(results: dict) -> str:
    """A row per run and score: mean ranks, AUROC against each clean group, top-k make-up."""
    lines = [
        "| run | score | n unsafe / open-ended / other | unsafe open-ended | mean rank: unsafe, "
        "open-ended, other | AUROC vs open-ended, vs other | top k: unsafe, open-ended, other |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for key in (*SCORES, "relative", "surprise"):
            if key not in r:
                continue
            q, n = r[key], r["n"]
            lines.append(
                f"| {name} | {key} | {n['unsafe']} / {n['open-ended']} / {n['other']} | "
                f"{r['unsafe_open_ended']:.2f} | "
                + ", ".join(f"{q['mean_rank'][g]:.2f}" for g in n)
                + f" | {q['auroc_vs']['open-ended']:.3f}, {q['auroc_vs']['other']:.3f} | "
                + ", ".join(str(q["top_k"][g]) for g in n)
                + " |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="realistic.py --out directories")
    p.add_argument("--out", required=True, help="a JSON file (and a .md beside it)")
    a = p.parse_args()
    results = {}
    for out in map(Path, a.runs):
        for run in sorted((out / "runs").iterdir()):
            if (run / "scores.jsonl").exists():
                results[f"{out.name}/{run.name}"] = one_run(out / "data" / run.name, run)
    io.write_json(Path(a.out), results)
    text = markdown(results)
    Path(a.out).with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
