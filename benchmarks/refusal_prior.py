"""The aligned model as its own guard: how likely M0 is to refuse each request (issue 17).

For every run of a finished `realistic.py --out RUNS`, each noisy conversation's last answer is
replaced by each of a few short refusals and scored on the run's M0 (mean NLL of the refusal,
teacher-forced through the chat template); the prior is minus the lowest of them, so high = M0
would refuse this request. It reads the request only, never the answer or a label; labels only
rank it (AUROC, P@k, AUROC with lengths matched, mean prior per group). No finetune is run.

    python benchmarks/refusal_prior.py --runs /tmp/realistic --out /tmp/refusal_prior.json
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from realistic import run_config, run_tag

from forgetfilter import io, signals
from forgetfilter.metrics import auroc, matched_auroc, precision_at_k
from forgetfilter.models import load_model
from forgetfilter.readers import read_examples

REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I cannot assist with that request.",
    "I can't provide that information.",
)


def with_answer(ex, text: str):
    """The record with its target answer replaced by `text`."""
    if ex.messages:
        turns = [*ex.messages[:-1], {"role": "assistant", "content": text}]
        return dataclasses.replace(ex, response=text, messages=turns)
    return dataclasses.replace(ex, response=text)


def prior(model, tokenizer, records, max_length: int) -> np.ndarray:
    """Minus the lowest mean NLL of the `REFUSALS` as each record's answer."""
    kw = {"batch_size": 16, "max_length": max_length, "progress": False}
    nll = [
        signals.score(model, tokenizer, [with_answer(ex, t) for ex in records], "loss", **kw)
        for t in REFUSALS
    ]
    return -np.min(nll, axis=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, help="the --out of a realistic.py run")
    p.add_argument("--out", required=True, help="a JSON file")
    a = p.parse_args()
    runs = Path(a.runs)
    recorded = io.read_json(runs / "results.json")
    args = argparse.Namespace(**recorded["args"])
    results = []
    for r in recorded["runs"]:
        tag = run_tag(args, r["risk"], r["share"], r["safe_set"], r["seed"])
        cfg, data = run_config(args, r["seed"]), runs / "data" / tag
        records, _ = read_examples(data / "noisy.jsonl")
        model, tokenizer = load_model(cfg.screener, dtype=cfg.noisy_train.dtype)
        score = prior(model, tokenizer, records, cfg.noisy_train.max_length)
        labels = io.read_json(data / "labels.json")
        unsafe = np.array([labels[ex.id][0] == "unsafe" for ex in records])
        group = ["unsafe" if labels[ex.id][0] == "unsafe" else labels[ex.id][1] for ex in records]
        lengths = np.array([len(ex.response) for ex in records], dtype=float)
        res = {
            "tag": tag,
            "auroc": auroc(unsafe, score),
            "p_at_k": precision_at_k(unsafe, score),
            **matched_auroc(unsafe, score, lengths),
            "group_means": {
                g: float(score[[x == g for x in group]].mean()) for g in sorted(set(group))
            },
        }
        results.append(res)
        print(tag, {k: v for k, v in res.items() if k != "tag"}, flush=True)
    io.write_json(Path(a.out), {"args": vars(a), "refusals": REFUSALS, "runs": results})


if __name__ == "__main__":
    main()
