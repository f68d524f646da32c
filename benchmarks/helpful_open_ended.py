"""Open-ended helpful answers in the safety set: do they stop open-ended task answers being forgotten?

A probe of the mechanism `open_ended.py` measures (pre-registered in
`results/cpu-2026-12-07/helpful_open_ended_prereg.md`). It takes one finished `realistic.py` run
with a `mixed` safety set, keeps its noisy set, M0 and M1 (the run directory is copied, so only
what reads the safe file is computed again: M2, its scores, the filter) and its refusals in their
places, and replaces each helpful Alpaca answer of the safety set by an Alpaca answer to an
open-ended request (`open_ended.OPEN_ENDED`) that no file of the mixture holds, drawn at random
under `--seed`. It reports the run's ranking (`realistic.evaluate`) and the open-ended analysis
(`open_ended.one_run`) before and after.

    python benchmarks/helpful_open_ended.py --runs /tmp/realistic \\
        --tag harm-s0.05-mixed-seed0 --out /tmp/helpful_open_ended
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from open_ended import OPEN_ENDED, first_word
from open_ended import one_run as open_ended_run
from realistic import chat_row, evaluate, recorded_run

from forgetfilter import io
from forgetfilter.datasets import alpaca_examples
from forgetfilter.paths import data_dir
from forgetfilter.pipeline import run_forgetfilter


def mixture_ids(mix: Path) -> set[str]:
    """Every id in the mixture's files (noisy, safe, evaluation sets)."""
    return {r["id"] for f in mix.rglob("*.jsonl") for r in io.read_jsonl(f)}


def open_ended_safety_set(data: Path, out: Path, seed: int) -> tuple[Path, list[str]]:
    """The run's safety set with every helpful answer replaced by an open-ended one (same places);
    written to `out` once. Returns its path and the new helpful ids."""
    path = out / "safe.jsonl"
    records = list(io.read_jsonl(data / "mix" / "safe.jsonl"))
    helpful = [i for i, r in enumerate(records) if r["label"] != "safe"]
    used = mixture_ids(data / "mix")
    pool = [
        ex
        for ex in alpaca_examples(data_dir())
        if ex.id not in used and first_word([{"role": "user", "content": ex.prompt}]) in OPEN_ENDED
    ]
    picked = np.random.default_rng(seed).choice(len(pool), len(helpful), replace=False)
    if not path.exists():
        rows = list(io.read_jsonl(data / "safe.jsonl"))
        for i, j in zip(helpful, picked, strict=True):
            rows[i] = chat_row(pool[j].to_dict(), 1)
        out.mkdir(parents=True, exist_ok=True)
        io.write_jsonl(path, rows)
    return path, [pool[j].id for j in picked]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, help="a realistic.py --out directory")
    p.add_argument("--tag", required=True, help="the run under it, e.g. harm-s0.05-mixed-seed0")
    p.add_argument("--seed", type=int, default=0, help="draws the open-ended helpful answers")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    runs, out = Path(a.runs), Path(a.out)
    cfg, data, before = recorded_run(runs, a.tag)
    safe, picked = open_ended_safety_set(data, out, a.seed)
    after = out / "run"
    if not after.exists():
        shutil.copytree(before, after)
    run_forgetfilter(data / "noisy.jsonl", safe, after, cfg, progress=False)
    labels = io.read_json(data / "labels.json")
    result = {"tag": a.tag, "helpful": picked}
    for name, run in (("before", before), ("after", after)):
        r = evaluate(run, labels, cfg.signal, False, data / "noisy.jsonl")
        result[name] = {
            "ranking": {k: r["ranking"][k] for k in ("default", "forgetting_relative", "surprise")},
            "open_ended": open_ended_run(data, run),
            "cuts": r["cuts"],
        }
    io.write_json(out / "results.json", result)
    for name in ("before", "after"):
        q = result[name]
        print(
            name,
            json.dumps({k: round(v["auroc"], 3) for k, v in q["ranking"].items()}),
            "P@k",
            round(q["ranking"]["default"]["p_at_k"], 2),
            "open-ended",
            json.dumps(q["open_ended"]["forgetting"]),
        )


if __name__ == "__main__":
    main()
