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
import json
from pathlib import Path

import numpy as np
from realistic import (
    keep,
    label_free_scores,
    rankings,
    rebuilt,
    recorded_runs,
    recorded_table,
    rescore_parser,
    rescored_markdown,
)

from forgetfilter import io
from forgetfilter.metrics import ranking_quality
from forgetfilter.neighbours import similar, smooth
from forgetfilter.records import content

BASE = ("relative+surprise", "relative", "surprise", "relative+learning")


def one_run(label: str, args: argparse.Namespace, run: dict, a: argparse.Namespace) -> dict:
    """Rebuild one recorded run's mixture, smooth its recorded scores and rank them."""
    tag, records, _, lengths = rebuilt(args, run, Path(a.data) / label)
    unsafe = np.array(run["examples"]["unsafe"], dtype=bool)
    given = label_free_scores(recorded_table(run), lengths)
    base = {"surprise": given["surprise"], "static": given["static"], "length": lengths}
    base |= {b: given[f"forgetting_{b}"] for b in BASE if f"forgetting_{b}" in given}
    base["random"] = np.random.default_rng(a.seed).random(len(records))
    scores, purity = dict(base), {}
    for k in a.k:
        near, sim = similar([content(r) for r in records], k)
        scores |= {f"{name} ~{k}": smooth(s, near) for name, s in base.items()}
        scores |= {f"{name} ~{k}w": smooth(s, near, sim) for name, s in base.items()}
        purity[k] = round(float(unsafe[near[unsafe]].mean()), 4)
    return {
        "label": label,
        "tag": tag,
        "ranking": rankings(unsafe, scores, lengths),
        "neighbour_purity": purity,
    }


def fewer_unsafe(args: argparse.Namespace, run: dict, a: argparse.Namespace, label: str) -> dict:
    """Each of `a.draws` seeded draws keeps `a.unsafe_kept` of the run's unsafe conversations
    (and every clean one), then ranks the scores and their k-smoothed forms on that subset:
    the recorded per-example signal, with the unsafe group as small as at a lower share."""
    _, records, _, lengths = rebuilt(args, run, Path(a.data) / label)
    unsafe = np.array(run["examples"]["unsafe"], dtype=bool)
    rng = np.random.default_rng(a.seed)
    draws = []
    for _ in range(a.draws):
        kept = np.sort(
            np.concatenate(
                [np.flatnonzero(~unsafe), rng.choice(np.flatnonzero(unsafe), a.unsafe_kept, False)]
            )
        )
        given = label_free_scores(recorded_table(run, rows=kept), lengths[kept])
        base = {b: given[f"forgetting_{b}"] for b in BASE[:2]} | {"surprise": given["surprise"]}
        near, sim = similar([content(records[i]) for i in kept], min(a.k))
        scores = base | {f"{n} ~{min(a.k)}": smooth(v, near) for n, v in base.items()}
        scores |= {f"{n} ~{min(a.k)}w": smooth(v, near, sim) for n, v in base.items()}
        draws.append({k: ranking_quality(unsafe[kept], v) for k, v in scores.items()})
    mean = {
        k: {m: round(float(np.mean([d[k][m] for d in draws])), 4) for m in ("auroc", "p_at_k")}
        for k in draws[0]
    }
    return {"label": label, "unsafe_kept": a.unsafe_kept, "draws": a.draws, "mean": mean}


def main() -> None:
    p = rescore_parser(__doc__.split("\n")[0])  # --model unused: no model is loaded
    p.add_argument("--k", type=int, nargs="+", default=[5, 10, 20], help="neighbours averaged")
    p.add_argument("--seed", type=int, default=0, help="of the random control score")
    p.add_argument(
        "--unsafe-kept", type=int, default=None,
        help="rank subsets that keep this many unsafe conversations of each run (`fewer_unsafe`)",
    )  # fmt: skip
    p.add_argument("--draws", type=int, default=20, help="subsets per run with --unsafe-kept")
    a = p.parse_args()
    results: list[dict] = []
    if a.unsafe_kept is not None:
        for label, args, run in recorded_runs(a.runs):
            results.append(fewer_unsafe(args, run, a, label))
            print(label, json.dumps(results[-1]["mean"]), flush=True)
            io.write_json(Path(a.out), {"k": min(a.k), "runs": results})
        return
    for label, args, run in recorded_runs(a.runs):
        keep(results, one_run(label, args, run, a), Path(a.out), k=a.k)
    Path(a.out).with_suffix(".md").write_text(rescored_markdown(results))


if __name__ == "__main__":
    main()
