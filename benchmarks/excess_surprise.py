"""M0's surprise beyond what M0 itself expects: the Fast-DetectGPT criterion under M0 (issue 17).

M0's surprise (its mean NLL of an answer) is as high for an answer where M0 is merely unsure (a
terse extractive answer: many are possible) as for one that conflicts with the aligned model.
This benchmark scores each noisy answer on M0 once, with per token t the NLL of the answer's
token, the entropy H_t of M0's next-token distribution and the variance V_t of -log p under it,
and ranks by

    z = sum_t (NLL_t - H_t) / sqrt(sum_t V_t)

(the analytic criterion of Bao et al., "Fast-DetectGPT", 2024, with the sign turned so that high
= unlike what M0 would write), alone and combined with relative forgetting by mean rank; also
the mean excess per token, sum_t (NLL_t - H_t) / n. Labels only rank the scores.

Input: `realistic.py` results files with per-example columns (`examples`); each mixture is
rebuilt from its arguments and seed, and the rebuilt M0 NLLs must equal the recorded ones.

    python benchmarks/excess_surprise.py --runs smol_tox=extremes_smol_tox.json \
        --data /tmp/es_data --out /tmp/es.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from realistic import (
    keep,
    rankings,
    rebuilt_m0,
    recorded_forgetting,
    recorded_runs,
    rescore_parser,
    rescored_markdown,
)

from forgetfilter import inference, signals
from forgetfilter.recipes import mean_rank


def token_stats(logits: torch.Tensor, labels: torch.Tensor, reduce) -> torch.Tensor:
    """Per row: [mean NLL, z, mean excess] over the positions with a label (`_token_nll`'s
    signature, so `response_nll` runs unchanged; `reduce` is ignored)."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    mask = labels.ne(inference.IGNORE_INDEX)
    out = []
    for row in range(logits.shape[0]):  # one row at a time: [length, vocab] stays small
        m = mask[row]
        logp = torch.log_softmax(logits[row][m], dim=-1)
        nll = -logp.gather(1, labels[row][m][:, None]).squeeze(1)
        p = logp.exp()
        h = -(p * logp).sum(-1)
        var = (p * logp.square()).sum(-1) - h.square()
        n = max(int(m.sum()), 1)
        excess = (nll - h).sum()
        out.append([nll.sum() / n, excess / var.sum().clamp(min=1e-6).sqrt(), excess / n])
    return torch.tensor(out, dtype=torch.float64)


def m0_stats(model, tokenizer, records, max_length: int, batch_size: int) -> np.ndarray:
    """[n, 3]: mean NLL, z and mean excess of each answer on M0."""
    kw = {"batch_size": batch_size, "max_length": max_length, "progress": False}
    with mock.patch.object(inference, "_token_nll", token_stats):
        return np.asarray(signals.score(model, tokenizer, records, "loss", **kw))


def one_run(label: str, args: argparse.Namespace, run: dict, a: argparse.Namespace) -> dict:
    """Rebuild one recorded run's mixture, score M0 once and rank every score."""
    tag, records, _, lengths, cfg, model, tokenizer = rebuilt_m0(
        args, run, Path(a.data) / label, a.model
    )
    stats = m0_stats(model, tokenizer, records, cfg.noisy_train.max_length, args.score_batch_size)
    given, ex = stats[:, 0], run["examples"]
    forgetting = recorded_forgetting(run, given)
    rel = forgetting["relative"]
    scores = {
        "surprise": given,
        "excess_z": stats[:, 1],
        "excess_mean": stats[:, 2],
        **forgetting,
        "relative+excess": mean_rank(rel, stats[:, 1]),
        "relative+excess_mean": mean_rank(rel, stats[:, 2]),
    }
    unsafe = np.array(ex["unsafe"])
    group = np.array(["unsafe" if u else s for u, s in zip(unsafe, ex["source"], strict=True)])
    return {
        "label": label,
        "tag": tag,
        "ranking": rankings(unsafe, scores, lengths),
        "group_means": {
            k: {g: round(float(scores[k][group == g].mean()), 4) for g in sorted(set(group))}
            for k in ("surprise", "excess_z", "excess_mean")
        },
        "examples": {"z": stats[:, 1].tolist(), "excess_mean": stats[:, 2].tolist()},
    }


def main() -> None:
    a = rescore_parser(__doc__.split("\n")[0]).parse_args()
    results: list[dict] = []
    for label, args, run in recorded_runs(a.runs):
        keep(results, one_run(label, args, run, a), Path(a.out))
    Path(a.out).with_suffix(".md").write_text(rescored_markdown(results))


if __name__ == "__main__":
    main()
