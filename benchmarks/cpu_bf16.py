"""bf16 against fp32 on the CPU (issue 20): training and scoring speed, and what it does to the ranking.

On SmolLM2-135M-Instruct through its chat template (`smollm2_chat.chat_files`: a harm mixture as
chat JSONL), it runs the same `forgetfilter run` (no final model) three times, fp32, bf16, fp32
again, alternated so that drift of the machine shows up as a difference between the two fp32 runs.
It prints per stage the wall time and the ratio fp32/bf16 (the fp32 time is the mean of its two
runs), training's real tokens/s, the Spearman correlation of the filter score and of relative
forgetting between bf16 and fp32, and each run's ranking AUROC against the hidden labels.

    python benchmarks/cpu_bf16.py --n 96 --out /tmp/bf16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from smollm2_chat import chat_files

from forgetfilter import io
from forgetfilter.pipeline import default_run_config, run_forgetfilter
from forgetfilter.training import finished_run


def one_run(noisy: Path, safe: Path, out: Path, dtype: str, a: argparse.Namespace) -> dict:
    cfg = default_run_config(
        a.model,
        epochs=a.epochs,
        screen_epochs=a.epochs,  # M1's length is what the scores come from
        max_length=a.max_length,
        dtype=dtype,
        score_dtype="train",  # score in the dtype trained in: bf16 scoring is part of what is measured
        seed=a.seed,
        final=False,
    )
    t0 = time.perf_counter()
    result = run_forgetfilter(noisy, safe, out, cfg, progress=False)
    rows = io.read_jsonl(out / "scores.jsonl")
    before = np.array([r["before"] for r in rows])
    after = np.array([r["after"] for r in rows])
    train = {}
    for stage in ("m1", "m2"):
        st = finished_run(out / stage)
        train[stage] = st["tokens"] / st["elapsed_s"]
    q = result.summary.get("quality") or {}
    return {
        "dtype": dtype,
        "wall_s": time.perf_counter() - t0,
        "timings": result.summary["timings_s"],
        "train_tokens_per_s": train,
        "score": np.array([r["forgetting"] for r in rows]),
        "relative": (after - before) / np.maximum(before, 1e-6),
        "auroc": {k: q[k]["auroc"] for k in ("forgetting", "forgetting_relative") if k in q},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--n-safe", type=int, default=64)
    ap.add_argument("--unsafe-ratio", type=float, default=0.5)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    noisy, safe = chat_files(a.n, a.n_safe, a.unsafe_ratio, a.seed, a.out)
    runs = [
        one_run(noisy, safe, a.out / f"run-{i}-{dtype}", dtype, a)
        for i, dtype in enumerate(("fp32", "bf16", "fp32"))
    ]
    fp32, bf16, fp32b = runs
    print(f"{a.model}, {a.n} chat records, max_length {a.max_length}: fp32, bf16, fp32 again")
    print(f"{'stage':<14} {'fp32 s':>8} {'fp32 again':>10} {'bf16 s':>8} {'fp32/bf16':>9}")
    table = {}
    for stage in fp32["timings"]:
        t32 = (fp32["timings"][stage] + fp32b["timings"][stage]) / 2
        t16 = bf16["timings"][stage]
        table[stage] = t32 / t16 if t16 else None
        ratio = f"{t32 / t16:.2f}x" if t16 > 0.5 else "-"
        print(
            f"{stage:<14} {fp32['timings'][stage]:8.1f} {fp32b['timings'][stage]:10.1f} "
            f"{t16:8.1f} {ratio:>9}"
        )
    for stage in ("m1", "m2"):
        t32 = (fp32["train_tokens_per_s"][stage] + fp32b["train_tokens_per_s"][stage]) / 2
        t16 = bf16["train_tokens_per_s"][stage]
        print(
            f"training {stage}: fp32 {t32:.0f} tokens/s, bf16 {t16:.0f} tokens/s: {t16 / t32:.2f}x"
        )
    rho_score = spearmanr(fp32["score"], bf16["score"]).statistic
    rho_rel = spearmanr(fp32["relative"], bf16["relative"]).statistic
    rho_same = spearmanr(fp32["relative"], fp32b["relative"]).statistic
    print(
        f"Spearman bf16 vs fp32: filter score {rho_score:.3f}, relative forgetting {rho_rel:.3f} "
        f"(fp32 vs fp32 again: {rho_same:.3f})"
    )
    for r in runs:
        print(f"AUROC {r['dtype']}: {json.dumps({k: round(v, 3) for k, v in r['auroc'].items()})}")
    io.write_json(
        a.out / "results.json",
        {
            "ratios_fp32_over_bf16": table,
            "spearman": {"score": rho_score, "relative": rho_rel, "fp32_repeat": rho_same},
            "runs": [{k: v for k, v in r.items() if k not in ("score", "relative")} for r in runs],
        },
    )


if __name__ == "__main__":
    main()
