"""Several risks at once: does the default recipe hold when the unsafe examples are of several kinds?

Every other realistic run hides one risk's unsafe examples (often from one source) in the task
data, so each unsafe answer has many unsafe neighbours in wording, which neighbour smoothing
relies on. Users' data is not sorted by risk. This script builds, per seed, one noisy chat file of
`--n` conversations whose `--share` unsafe part is split evenly over `--risks` (round(n x share /
len(risks)) of each, from every source of that risk), the rest the realistic benchmark's task data
(80% Alpaca, 20% SQuAD), and a safety set of `--n-safe` answers: the risks' refusals in equal
parts and, for the other half, helpful Alpaca answers that no other file holds. Each risk's part
is built by `realistic.build_data` (the task data is that of the first risk's mixture, less as
many task examples as the other risks add unsafe ones) and the whole is shuffled under the seed.

It runs `forgetfilter run` with the default recipe (`realistic.run_config`) and reports, from
`scores.jsonl` and the hidden labels, the ranking quality of the filter score (`default`, with
neighbour smoothing), its unsmoothed score (`own_score`), every recipe and baseline score
(`realistic.label_free_scores`), on all unsafe examples, on each risk's against the clean ones
and (with three risks or more) on all but one risk's; and the neighbours' purity: the share of
each unsafe example's neighbours that are unsafe, and of the same risk (among the 5 nearest, as
the pretrained default smooths, also for `tiny`).

    python benchmarks/mixed_risks.py --model smollm2-135m-instruct --seeds 0 \\
        --max-length 256 --epochs 1 --out /tmp/mixed_risks
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from realistic import (
    build_data,
    label_free_scores,
    mean_sd,
    one_set_parser,
    rankings,
    run_args,
    run_config,
    run_table,
)

from forgetfilter import io
from forgetfilter.neighbours import nearest
from forgetfilter.pipeline import run_forgetfilter
from forgetfilter.readers import read_examples
from forgetfilter.records import content


def compose(risks: list[str], n: int, share: float, seed: int, n_safe: int, out: Path):
    """(noisy.jsonl, safe.jsonl, labels {id: [label, source, risk]}) of one mixed-risk data set,
    built once under `out`."""
    noisy, safe, labels_path = out / "noisy.jsonl", out / "safe.jsonl", out / "labels.json"
    if labels_path.exists():
        return noisy, safe, io.read_json(labels_path)
    each = n_safe // (2 * len(risks))  # refusals per risk; half the set is helpful answers
    parts = []
    for j, risk in enumerate(risks):
        safe_set, size = ("mixed", n_safe) if j == 0 else ("refusals", each)
        part = build_data(risk, n, share / len(risks), seed, size, safe_set, out / "parts" / risk)
        parts.append((risk, part))
    first_rows = list(io.read_jsonl(parts[0][1][0]))
    first_labels = parts[0][1][2]
    labels = {i: [*first_labels[i], parts[0][0]] for i in first_labels}
    first_safe = list(io.read_jsonl(out / "parts" / risks[0] / "mix" / "safe.jsonl"))
    helpful = [r["id"] for r in first_safe if r["label"] != "safe"]
    refusals = [r["id"] for r in first_safe if r["label"] == "safe"][:each]
    keep = set(helpful[: n_safe - each * len(risks)] + refusals)
    safe_rows = [r for r in io.read_jsonl(parts[0][1][1]) if r["id"] in keep]
    extra = []
    for risk, (p_noisy, p_safe, p_labels) in parts[1:]:
        for row in io.read_jsonl(p_noisy):
            if p_labels[row["id"]][0] == "unsafe":
                extra.append(row)
                labels[row["id"]] = [*p_labels[row["id"]], risk]
        safe_rows += list(io.read_jsonl(p_safe))
    clean = [i for i, r in enumerate(first_rows) if first_labels[r["id"]][0] != "unsafe"]
    dropped = {first_rows[i]["id"] for i in clean[len(clean) - len(extra) :]}
    rows = [r for r in first_rows if r["id"] not in dropped] + extra
    ids = [r["id"] for r in rows]
    safe_ids = [r["id"] for r in safe_rows]
    if len(set(ids)) != len(ids) or len(set(safe_ids)) != len(safe_ids) or set(ids) & set(safe_ids):
        raise SystemExit(f"{out}: an id is used twice")
    labels = {i: labels[i] for i in ids}
    rng = np.random.default_rng(seed)
    rows = [rows[i] for i in rng.permutation(len(rows))]
    safe_rows = [safe_rows[i] for i in rng.permutation(len(safe_rows))]
    io.write_jsonl(noisy, rows)
    io.write_jsonl(safe, safe_rows)
    io.write_json(labels_path, labels)
    return noisy, safe, labels


PURITY_K = 5  # the pretrained default's neighbours


def evaluate(run_dir: Path, labels: dict, noisy: Path, risks: list[str]) -> dict:
    """Ranking quality of each score on all unsafe examples and per risk, and neighbour purity."""
    rows = list(io.read_jsonl(run_dir / "scores.jsonl"))
    unsafe = np.array([labels[r["id"]][0] == "unsafe" for r in rows])
    risk = np.array([labels[r["id"]][2] if labels[r["id"]][0] == "unsafe" else "" for r in rows])
    col = lambda k: np.array([r[k] for r in rows])  # noqa: E731
    table = run_table(rows)
    by_id = {ex.id: ex for ex in read_examples(noisy)[0]}
    lengths = np.array([len(by_id[r["id"]].response) for r in rows], dtype=float)
    own = np.array([r.get("own_score", r["forgetting"]) for r in rows])  # no neighbours: the same
    scores = {"default": col("forgetting"), "own_score": own}
    scores |= label_free_scores(table, lengths)
    out = {"all": rankings(unsafe, scores, lengths)}
    subsets = {name: ~unsafe | (risk == name) for name in risks}
    if len(risks) > 2:
        subsets |= {f"without {name}": risk != name for name in risks}
    for name, keep in subsets.items():
        out[name] = rankings(unsafe[keep], {k: v[keep] for k, v in scores.items()}, lengths[keep])
    near = nearest([content(by_id[r["id"]]) for r in rows], PURITY_K)
    purity: dict[str, list[float]] = {name: [] for name in risks}
    same: dict[str, list[float]] = {name: [] for name in risks}
    for i in np.flatnonzero(unsafe):
        purity[risk[i]].append(float(unsafe[near[i]].mean()))
        same[risk[i]].append(float((risk[near[i]] == risk[i]).mean()))
    return {
        "ranking": out,
        "n": len(rows),
        "n_unsafe": {name: int((risk == name).sum()) for name in risks},
        "purity": {name: mean_sd(v) for name, v in purity.items()},
        "same_risk": {name: mean_sd(v) for name, v in same.items()},
        "removed": int(col("removed").sum()),
        "removed_unsafe": int((col("removed") & unsafe).sum()),
    }


def markdown(results: list[dict], risks: list[str], keys: list[str]) -> str:
    """AUROC (P@k) of each score, mean ± sd over seeds, on all unsafe examples and per risk."""
    groups = list(results[0]["ranking"])
    lines = [
        "| score | " + " | ".join(groups) + " |",
        "|---|" + "---|" * len(groups),
    ]
    for k in keys:
        cells = []
        for g in groups:
            au = mean_sd([r["ranking"][g][k]["auroc"] for r in results])
            pk = mean_sd([r["ranking"][g][k]["p_at_k"] for r in results])
            cells.append(f"{au[0]:.3f} ± {au[1]:.3f} ({pk[0]:.2f})")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    for name in ("purity", "same_risk"):
        cells = [mean_sd([r[name][g][0] for r in results]) for g in risks]
        pad = " |" * (len(groups) - len(risks) - 1)
        lines.append(
            f"| neighbours: {name} | | " + " | ".join(f"{c[0]:.2f}" for c in cells) + pad + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = one_set_parser(__doc__.split("\n")[0], n_safe=102)
    p.add_argument("--risks", nargs="+", default=["harm", "toxicity", "bias"])
    a = p.parse_args()
    cfg_args = run_args(a)
    out = Path(a.out)
    results = []
    for seed in a.seeds:
        tag = f"seed{seed}"
        noisy, safe, labels = compose(a.risks, a.n, a.share, seed, a.n_safe, out / "data" / tag)
        t0 = time.perf_counter()
        run_forgetfilter(
            noisy, safe, out / "runs" / tag, run_config(cfg_args, seed), progress=False
        )
        r = evaluate(out / "runs" / tag, labels, noisy, a.risks)
        r |= {"seed": seed, "seconds": round(time.perf_counter() - t0, 1)}
        results.append(r)
        aurocs = {g: round(q["default"]["auroc"], 3) for g, q in r["ranking"].items()}
        print(tag, json.dumps(aurocs), json.dumps(r["purity"]), f"{r['seconds']} s", flush=True)
    keys = ["default", "own_score", "forgetting_relative", "learning", "static", "length"]
    keys = [k for k in keys if k in results[0]["ranking"]["all"]]
    text = markdown(results, a.risks, keys)
    io.write_json(out / "results.json", {"args": vars(a), "runs": results})
    (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
