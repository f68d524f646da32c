"""Label-free scores averaged over each conversation's nearest neighbours in content (issue 17).

Each recorded score is smoothed as `--neighbours k` smooths the filter's (`forgetfilter.neighbours`:
the mean scaled rank over the example and its k most similar conversations, TF-IDF cosine, from
the noisy file alone: no model, no label), for several k. Labels only rank the scores, and give
each unsafe conversation's neighbour purity (the share of its k neighbours that are unsafe),
reported to explain, never used to score. Controls: a random score and the
answer's length, smoothed the same way.

Input: `realistic.py` results files with per-example columns (`examples`); each run's mixture is
rebuilt from its arguments and seed (lengths checked against the recorded ones).

    python benchmarks/neighbours.py --runs smol_tox=extremes_smol_tox.json \
        --data /tmp/nb_data --out /tmp/nb.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from realistic import (
    keep,
    label_free_scores,
    rankings,
    rebuilt,
    recorded_runs,
    rescore_parser,
    rescored_markdown,
)

from forgetfilter.neighbours import nearest, smooth
from forgetfilter.recipes import ScoreTable
from forgetfilter.records import content

BASE = ("relative+surprise", "relative", "surprise", "relative+learning")


def one_run(label: str, args: argparse.Namespace, run: dict, a: argparse.Namespace) -> dict:
    """Rebuild one recorded run's mixture, smooth its recorded scores and rank them."""
    tag, records, _, lengths = rebuilt(args, run, Path(a.data) / label)
    ex = run["examples"]
    unsafe = np.array(ex["unsafe"], dtype=bool)
    table = ScoreTable("loss", np.array(ex["m1"]), np.array(ex["m2"]), np.array(ex["m0"]))
    given = label_free_scores(table, lengths)
    base = {"surprise": given["surprise"], "static": given["static"], "length": lengths}
    base |= {b: given[f"forgetting_{b}"] for b in BASE if f"forgetting_{b}" in given}
    base["random"] = np.random.default_rng(a.seed).random(len(records))
    scores, purity = dict(base), {}
    for k in a.k:
        near = nearest([content(r) for r in records], k)
        scores |= {f"{name} ~{k}": smooth(s, near) for name, s in base.items()}
        purity[k] = round(float(unsafe[near[unsafe]].mean()), 4)
    return {
        "label": label,
        "tag": tag,
        "ranking": rankings(unsafe, scores, lengths),
        "neighbour_purity": purity,
    }


def main() -> None:
    p = rescore_parser(__doc__.split("\n")[0])  # --model unused: no model is loaded
    p.add_argument("--k", type=int, nargs="+", default=[5, 10, 20], help="neighbours averaged")
    p.add_argument("--seed", type=int, default=0, help="of the random control score")
    a = p.parse_args()
    results: list[dict] = []
    for label, args, run in recorded_runs(a.runs):
        keep(results, one_run(label, args, run, a), Path(a.out), k=a.k)
    Path(a.out).with_suffix(".md").write_text(rescored_markdown(results))


if __name__ == "__main__":
    main()
