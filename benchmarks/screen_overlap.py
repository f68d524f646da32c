"""Screening in the realistic regime: a screen model's ranking against the target's, same data.

Reads two finished `benchmarks/realistic.py --out` directories run on the same mixtures (same
risk, share, N, safety set and seeds; the noisy files are checked byte for byte): `--target`, the
full pipeline on the target model, and `--screen`, the same runs on the screen model (what
`forgetfilter run --screen-model S --model T` computes before its final finetune: the filtering
stages are a run of S with S's preset). For every shared run it prints the ranking AUROC and
precision among the top k (k = the number of unsafe examples) of each run's filter score, the
overlap of the two top-k sets and of the two removed sets (Jaccard), and the removal's precision
and recall at each run's automatic cut; then mean ± sd over the runs.

Where the target's run scored M0, it also reports the target's surprise (its M0 NLL of each
answer: one forward pass of the target, no finetune) alone and combined with the screen's
forgetting (`hybrid.<recipe>`): a screen that pays for one target scoring pass.

The cost side is not measured here: the filtering stages of a `tiny` screen cost a fixed small
share of a target's finetune (`benchmarks/screening.py`).

    python benchmarks/screen_overlap.py --target /tmp/smol --screen /tmp/tiny --out /tmp/overlap.json
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
from realistic import mean_sd

from forgetfilter import io
from forgetfilter.metrics import filter_quality, ranking_quality
from forgetfilter.recipes import ScoreTable, apply, surprise

HYBRIDS = ("relative+surprise", "relative+surprise-fisher")  # recipes with the target's surprise


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", type=Path, nargs="+", required=True, help="realistic.py --out dirs")
    p.add_argument("--screen", type=Path, nargs="+", required=True, help="realistic.py --out dirs")
    p.add_argument("--out", type=Path, default=None, help="write the per-run rows and summary here")
    return p.parse_args(argv)


def runs_of(dirs: list[Path]) -> dict[str, Path]:
    """Tag -> the `--out` directory that holds a finished run of it."""
    found = {}
    for d in dirs:
        for run in sorted((d / "runs").iterdir()):
            if (run / "scores.jsonl").exists():
                found[run.name] = d
    return found


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(root: Path, tag: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, filter score, removed) of one run, in the score file's order."""
    rows = list(io.read_jsonl(root / "runs" / tag / "scores.jsonl"))
    ids = [r["id"] for r in rows]
    return ids, np.array([r["forgetting"] for r in rows]), np.array([r["removed"] for r in rows])


def _jaccard(a: set, b: set) -> float | None:
    return len(a & b) / len(a | b) if a | b else None


def _top(ids: list[str], score: np.ndarray, k: int) -> set:
    order = np.argsort(-score, kind="stable")[:k]
    return {ids[i] for i in order}


def compare(target: Path, screen: Path, tag: str) -> dict:
    """One run on both models: ranking quality of each, and how much the two agree."""
    noisy_t, noisy_s = (d / "data" / tag / "noisy.jsonl" for d in (target, screen))
    if _sha(noisy_t) != _sha(noisy_s):
        raise SystemExit(f"{tag}: {noisy_t} and {noisy_s} differ; the runs are not comparable")
    labels = io.read_json(target / "data" / tag / "labels.json")
    out: dict = {"tag": tag}
    tops, removed = {}, {}
    for name, root in (("target", target), ("screen", screen)):
        ids, score, cut = _run(root, tag)
        unsafe = np.array([labels[i][0] == "unsafe" for i in ids])
        k = int(unsafe.sum())
        q = ranking_quality(unsafe, score)
        gone = {i for i, r in zip(ids, cut, strict=True) if r}
        at_cut = filter_quality(cut.tolist(), unsafe.tolist())
        out[name] = {
            "auroc": q["auroc"],
            "p_at_k": q["p_at_k"],
            "removed": len(gone),
            "cut_precision": at_cut["precision"],
            "cut_recall": at_cut["recall"],
        }
        tops[name], removed[name] = _top(ids, score, k), gone
    out |= with_target_surprise(target, screen, tag, labels)
    out["top_k_jaccard"] = _jaccard(tops["target"], tops["screen"])
    out["removed_jaccard"] = _jaccard(removed["target"], removed["screen"])
    return out


def with_target_surprise(target: Path, screen: Path, tag: str, labels: dict) -> dict:
    """The screen's forgetting with the target's surprise, and that surprise alone.

    The target's M0 NLL of each answer costs one forward pass of the target over the data and no
    finetune; `hybrid.<recipe>` is `<recipe>` computed on the screen's M1 and M2 scores and the
    target's M0 scores. Empty when the target's run did not score M0.
    """
    rows_t = list(io.read_jsonl(target / "runs" / tag / "scores.jsonl"))
    rows_s = list(io.read_jsonl(screen / "runs" / tag / "scores.jsonl"))
    if "m0" not in rows_t[0] or [r["id"] for r in rows_t] != [r["id"] for r in rows_s]:
        return {}
    unsafe = np.array([labels[r["id"]][0] == "unsafe" for r in rows_t])
    col = lambda rows, key: np.array([r[key] for r in rows])  # noqa: E731
    table = ScoreTable("loss", col(rows_s, "before"), col(rows_s, "after"), col(rows_t, "m0"))
    scores = {"target_surprise": surprise(table)}
    scores |= {f"hybrid.{name}": apply(name, table) for name in HYBRIDS}
    return {k: _quality(unsafe, v) for k, v in scores.items()}


def _quality(unsafe: np.ndarray, score: np.ndarray) -> dict:
    q = ranking_quality(unsafe, score)
    return {"auroc": q["auroc"], "p_at_k": q["p_at_k"]}


def summary(rows: list[dict]) -> dict:
    """Mean and sd over runs of every number in the rows (as `realistic.py`'s tables)."""
    sides = {
        f"{side}.{m}": [r[side][m] for r in rows if side in r]
        for side in ("target", "screen", "target_surprise", *(f"hybrid.{h}" for h in HYBRIDS))
        for m in rows[0].get(side, {})
    }
    overlaps = {m: [r[m] for r in rows] for m in ("top_k_jaccard", "removed_jaccard")}
    return {key: mean_sd(values) for key, values in (sides | overlaps).items()}


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> None:
    """Compare every run the target and screen directories share."""
    a = parse_args(argv)
    target, screen = runs_of(a.target), runs_of(a.screen)
    shared = sorted(set(target) & set(screen))
    if not shared:
        raise SystemExit("no run is in both --target and --screen")
    rows = [compare(target[t], screen[t], t) for t in shared]
    print(
        "| run | AUROC target / screen | P@k target / screen | top-k Jaccard "
        "| removed target / screen (Jaccard) |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        t, s = r["target"], r["screen"]
        print(
            f"| {r['tag']} | {_f(t['auroc'])} / {_f(s['auroc'])} | {_f(t['p_at_k'])} / "
            f"{_f(s['p_at_k'])} | {_f(r['top_k_jaccard'])} | {t['removed']} / {s['removed']} "
            f"({_f(r['removed_jaccard'])}) |"
        )
        for key in ("target_surprise", *(f"hybrid.{h}" for h in HYBRIDS)):
            if key in r:
                print(f"|   {key} | {_f(r[key]['auroc'])} | {_f(r[key]['p_at_k'])} | | |")
    agg = summary(rows)
    for key, v in agg.items():
        print(f"{key}: " + ("-" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}"))
    if a.out:
        io.write_json(
            a.out,
            {
                "target": [str(p) for p in a.target],
                "screen": [str(p) for p in a.screen],
                "runs": rows,
                "summary": agg,
            },
        )


if __name__ == "__main__":
    main()
