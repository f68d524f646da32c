"""The cut with a trusted sample against the automatic cut without one (issue 18).

For every risk, unsafe share and seed it builds a mixture with `forgetfilter data build`'s builder
and a trusted sample (`--n-trusted`: clean examples drawn with the noisy set's clean part and
split off at random, in no other file), runs `forgetfilter run --trusted` (no final model) and
reads, from the hidden labels that only this script reads:

- `trusted`: the run's own cut (split-conformal phi at `--max-false-removal` ALPHA): the share of
  clean noisy examples it removed (the bound says at most ALPHA in expectation), its recall and
  precision, and the unsafe-share estimate with its interval against the true share;
- `auto`: the automatic cut without a trusted sample (`thresholds.choose_threshold`, method
  `auto`) applied to the same run's noisy scores, the same numbers, under two rules: `any` (any
  higher component the mixture fit finds is cut) and `mode` (only when the fitted density has a
  second mode, a dip of at least `--min-dip`), with the mixture's share estimate (the weight of the
  cut components). (The run's M1 saw the trusted sample too, a few percent more clean data than a
  run without one.)

Tables give mean ± sd over seeds per (risk, share). Runs resume (rerun the same command).

    python benchmarks/trusted_cut.py --risk bias toxicity harm --shares 0 0.05 0.1 0.5 \\
        --seeds 0 1 2 --n 400 --n-trusted 150 --out /tmp/trusted
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from forgetfilter import io
from forgetfilter.mixture import MixtureConfig, build_mixture
from forgetfilter.paths import data_dir
from forgetfilter.pipeline import default_run_config, run_forgetfilter
from forgetfilter.recipes import ScoreTable, score_and_count
from forgetfilter.thresholds import ThresholdConfig, choose_threshold


def build(risk: str, n: int, share: float, seed: int, a: argparse.Namespace, out: Path) -> Path:
    """The mixture with its trusted sample, built once."""
    if not (out / "manifest.json").exists():
        cfg = MixtureConfig(
            risk,
            n,
            share,
            n_safe=a.n_safe,
            n_eval=4,
            seed=seed,
            composition=a.composition,
            n_trusted=a.n_trusted,
        )
        build_mixture(cfg, data_dir(), out)
    return out


def cut_quality(removed: np.ndarray, unsafe: np.ndarray) -> dict:
    """Clean share removed, recall, precision and count of one cut."""
    clean = ~unsafe
    n_removed = int(removed.sum())
    return {
        "clean_removed": float(removed[clean].mean()) if clean.any() else None,
        "recall": float(removed[unsafe].mean()) if unsafe.any() else None,
        "precision": float(unsafe[removed].mean()) if n_removed else None,
        "n_removed": n_removed,
    }


def evaluate(run_dir: Path, mix: Path, cfg, min_dip: float = 0.1) -> dict:
    """Both cuts of one run against the hidden labels, and the share estimate."""
    labels = {r["id"]: r["label"] for r in io.read_jsonl(mix / "noisy.jsonl")}
    rows = io.read_jsonl(run_dir / "scores.jsonl")
    unsafe = np.array([labels[r["id"]] == "unsafe" for r in rows])
    removed = np.array([r["removed"] for r in rows])
    m0 = np.array([r["m0"] for r in rows]) if "m0" in rows[0] else None
    table = ScoreTable(
        cfg.signal,
        np.array([r["before"] for r in rows]),
        np.array([r["after"] for r in rows]),
        m0,
    )
    score, count = score_and_count(cfg.normalise, table)
    autos = {}
    for rule, gap in (("any", None), ("mode", min_dip)):
        choice = choose_threshold(score, ThresholdConfig(seed=cfg.seed, min_dip=gap), count)
        fit = choice.details.get("count", {}).get("details", choice.details)
        autos[rule] = cut_quality(score > choice.phi, unsafe) | {
            "share_estimate": fit.get("high_weight"),
            "dip": fit.get("dip"),
        }
    share = io.read_json(run_dir / "summary.json").get("unsafe_share", {})
    true_share = float(unsafe.mean())
    covered = (
        share.get("low") is not None and share["low"] <= true_share <= share["high"]
        if share.get("estimate") is not None
        else None
    )
    return {
        "trusted": cut_quality(removed, unsafe),
        "auto": autos,
        "share": {
            "true": true_share,
            **{k: share.get(k) for k in ("estimate", "low", "high")},
            "covered": covered,
        },
        "n": len(rows),
    }


def summarise(results: list[dict], alpha: float) -> str:
    """One markdown table: a row per (risk, share), mean ± sd over seeds."""

    def ms(values) -> str:
        vals = [v for v in values if v is not None]
        if not vals:
            return "n/a"
        sd = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
        return f"{np.mean(vals):.3f} ± {sd:.3f}"

    keyed: dict[tuple, list[dict]] = {}
    for r in results:
        keyed.setdefault((r["risk"], r["ratio"]), []).append(r)
    lines = [
        f"| risk | unsafe | seeds | trusted (α={alpha}): clean removed | recall | share estimate "
        "(90% interval) | covers | auto `any`: clean removed | recall | auto `mode`: clean "
        "removed | recall | `mode` share estimate |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (risk, share), runs in sorted(keyed.items()):
        est = "; ".join(
            f"{x['share']['estimate']:.2f} ({x['share']['low']:.2f}-{x['share']['high']:.2f})"
            if x["share"]["estimate"] is not None
            else "n/a"
            for x in runs
        )
        covers = sum(bool(x["share"]["covered"]) for x in runs)

        def auto(rule: str, key: str, runs=runs) -> str:
            return ms(x["auto"][rule][key] for x in runs)

        lines.append(
            f"| {risk} | {share:.0%} | {len(runs)} "
            f"| {ms(x['trusted']['clean_removed'] for x in runs)} "
            f"| {ms(x['trusted']['recall'] for x in runs)} | {est} | {covers}/{len(runs)} "
            f"| {auto('any', 'clean_removed')} | {auto('any', 'recall')} "
            f"| {auto('mode', 'clean_removed')} | {auto('mode', 'recall')} "
            f"| {auto('mode', 'share_estimate')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--risk", nargs="+", default=["bias", "toxicity", "harm"])
    p.add_argument("--shares", nargs="+", type=float, default=[0.0, 0.05, 0.1, 0.5])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--n-safe", type=int, default=200)
    p.add_argument("--n-trusted", type=int, default=150)
    p.add_argument("--composition", default="paper", choices=["paper", "instruct"])
    p.add_argument("--alpha", type=float, default=0.05, help="--max-false-removal")
    p.add_argument("--min-dip", type=float, default=0.1, help="the `mode` rule's density dip")
    p.add_argument(
        "--evaluate-only",
        action="store_true",
        help="only read the finished runs under --out (skip the rows without one)",
    )
    p.add_argument("--out", required=True)
    a = p.parse_args()
    out, results = Path(a.out), []
    rows = [(seed, risk, share) for seed in a.seeds for risk in a.risk for share in a.shares]
    for seed, risk, share in rows:  # seed by seed: a stopped run leaves every row with fewer seeds
        tag = f"{risk}-s{share:g}-seed{seed}"
        cfg = default_run_config(a.model, final=False, seed=seed)
        cfg.threshold.max_false_removal = a.alpha
        if a.evaluate_only:
            if (out / "runs" / tag / "summary.json").exists():
                r = evaluate(out / "runs" / tag, out / "data" / tag, cfg, a.min_dip)
                results.append(r | {"risk": risk, "ratio": share, "seed": seed})
            continue
        mix = build(risk, a.n, share, seed, a, out / "data" / tag)
        t0 = time.perf_counter()
        run_forgetfilter(
            mix / "noisy.jsonl",
            mix / "safe.jsonl",
            out / "runs" / tag,
            cfg,
            progress=False,
            trusted=mix / "trusted.jsonl",
        )
        r = evaluate(out / "runs" / tag, mix, cfg, a.min_dip)
        r |= {"risk": risk, "ratio": share, "seed": seed}
        r["seconds"] = round(time.perf_counter() - t0, 1)
        results.append(r)
        print(tag, json.dumps(r), flush=True)
        io.write_json(out / "results.json", {"args": vars(a), "runs": results})
    table = summarise(results, a.alpha)
    (out / "table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
