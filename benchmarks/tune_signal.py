"""Sweep ForgetFilter training settings and report the forgetting AUROC of each (a tuning tool).

For every (risk mixture, config) pair it runs `run_forgetfilter` without the final stage and prints
the AUROC of several forgetting definitions for label == unsafe against all other examples and
against same-risk safe examples only, next to the static low-NLL-under-M1 baseline. Runs go to
separate processes (`--workers`), so a GPU can host several small runs at once.

    python benchmarks/tune_signal.py --model PATH --mixture bias=/tmp/bias600 --out sweep.json \
        --lr 5e-4 1e-3 --epochs 5 10 --safety-steps 13 40
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score


def variants(before: np.ndarray, after: np.ndarray, m0: np.ndarray) -> dict[str, np.ndarray]:
    """Forgetting definitions compared by the sweep (larger = more forgotten)."""
    from forgetfilter.recipes import forgetting, learning

    names = {"diff": "none", "relative": "relative", "relative+learning": "relative+learning"}
    out = {k: forgetting(before, after, "loss", norm, m0) for k, norm in names.items()}
    return out | {"learning": learning(m0, before), "static_low_nll": -before}


def aurocs(run_dir: Path, noisy: Path) -> dict:
    """AUROC of each variant, against all others and against same-risk safe examples only."""
    rows = {r["id"]: r for r in map(json.loads, open(run_dir / "scores.jsonl"))}
    recs = [json.loads(line) for line in open(noisy)]
    unsafe = np.array([r["label"] == "unsafe" for r in recs])
    same_risk = np.array([r["label"] in ("unsafe", "safe") for r in recs])
    b = np.array([rows[r["id"]]["before"] for r in recs])
    a = np.array([rows[r["id"]]["after"] for r in recs])
    m0 = np.array([rows[r["id"]]["m0"] for r in recs])
    out = {}
    for name, s in variants(b, a, m0).items():
        out[name] = round(roc_auc_score(unsafe, s), 4)
        out[name + "_vs_safe"] = round(roc_auc_score(unsafe[same_risk], s[same_risk]), 4)
    out["nll_before"] = {g: round(float(b[m].mean()), 3) for g, m in _groups(recs).items()}
    out["nll_after"] = {g: round(float(a[m].mean()), 3) for g, m in _groups(recs).items()}
    return out


def _groups(recs: list[dict]) -> dict[str, np.ndarray]:
    keys = [r["label"] if r["label"] != "task" else r["source"] for r in recs]
    return {k: np.array([x == k for x in keys]) for k in sorted(set(keys))}


def one(job: dict) -> dict:
    """Run one configuration (in a worker process) and return its AUROCs."""
    from forgetfilter.pipeline import default_run_config, run_forgetfilter

    t0 = time.perf_counter()
    cfg = default_run_config(
        job["model"],
        full=True,
        lr=job["lr"],
        safety_lr=job["safety_lr"],
        epochs=job["epochs"],
        safety_steps=job["safety_steps"],
        final=False,
        seed=job["seed"],
    )
    cfg.noisy_train.save_every = cfg.safety_train.save_every = 0
    mix = Path(job["mixture"])
    run_forgetfilter(mix / "noisy.jsonl", mix / "safe.jsonl", job["out"], cfg)
    return (
        job
        | aurocs(Path(job["out"]), mix / "noisy.jsonl")
        | {"seconds": round(time.perf_counter() - t0, 1)}
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument(
        "--mixture", nargs="+", required=True, help="risk=DIR (from `forgetfilter data build`)"
    )
    ap.add_argument("--lr", nargs="+", type=float, default=[5e-4])
    ap.add_argument("--safety-lr", nargs="+", type=float, default=[None])
    ap.add_argument("--epochs", nargs="+", type=float, default=[5])
    ap.add_argument("--safety-steps", nargs="+", type=int, default=[None])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--work", default="sweep-runs")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    jobs = []
    grid = itertools.product(a.mixture, a.lr, a.safety_lr, a.epochs, a.safety_steps, a.seeds)
    for i, (mix, lr, slr, ep, steps, seed) in enumerate(grid):
        risk, path = mix.split("=", 1)
        jobs.append(
            {
                "risk": risk,
                "mixture": path,
                "model": a.model,
                "lr": lr,
                "safety_lr": slr or lr,
                "epochs": ep,
                "safety_steps": steps,
                "seed": seed,
                "out": f"{a.work}/run{i:03d}",
            }
        )
    ctx = mp.get_context("spawn")
    results = []
    with ctx.Pool(a.workers) as pool:
        for r in pool.imap_unordered(one, jobs):
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if not k.startswith("nll_")}), flush=True)
            Path(a.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
