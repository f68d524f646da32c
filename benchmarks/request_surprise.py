"""M0's surprise at an answer against its surprise with no request, or at a refusal (issue 17).

M0's surprise (its mean NLL of an answer, `surprise`) is high for an answer that conflicts with
the aligned model's judgement of its request, and as high for any answer text M0 finds rare (a
terse extractive answer, an unusual task answer). This benchmark removes the second part: each
noisy answer is scored on M0 once more with its request emptied (the system prompt and the chat
template kept, earlier turns dropped), and

    pmi = NLL_M0(answer | its request) - NLL_M0(answer | an empty request)

is minus the pointwise mutual information of request and answer under M0: high where the request
helps M0 predict the answer least. Also reported: `ifd`, the ratio of the two NLLs (the
instruction-following difficulty of Li et al., 2023), the empty-request NLL alone, and the
margin `surprise + refusal prior` (`refusal_prior.py`): how much less likely M0 finds the answer
than its likeliest short refusal to the same request, an aligned model's own preference between
the answer as written and refusing. Each is also combined with relative forgetting by mean rank.
Labels only rank the scores.

Input: `realistic.py` results files with per-example columns (`examples`). Each run's mixture is
rebuilt from its recorded arguments and seed, and its rebuilt lengths and M0 NLLs must equal the
recorded ones (checked), so the new score lines up with the recorded M1 and M2. With `--seeds`,
the recorded mixture is built at those seeds instead and only the M0 scores are ranked (any
`realistic.py` results file will do). `--cached` reuses the NLLs of an earlier output.

    python benchmarks/request_surprise.py --runs qwen_tox=extremes_qwen_tox.json \
        --model /tmp/qw/qwen05.gguf --data /tmp/rs_data --out /tmp/rs.json
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from realistic import (
    keep,
    rankings,
    rebuilt_m0,
    recorded_forgetting,
    recorded_runs,
    rescore_parser,
    rescored_markdown,
    run_tag,
)
from refusal_prior import prior

from forgetfilter import io, signals
from forgetfilter.recipes import mean_rank


def without_request(ex):
    """The record with every turn before its answer replaced by one empty user turn."""
    system = [m for m in (ex.messages or [])[:1] if m["role"] == "system"]
    turns = [
        *system,
        {"role": "user", "content": ""},
        {"role": "assistant", "content": ex.response},
    ]
    return dataclasses.replace(ex, prompt="", messages=turns)


def m0_scores(model, tokenizer, records, max_length: int, batch_size: int) -> tuple:
    """(NLL of each answer given its request, given an empty request, the refusal prior) on M0."""
    kw = {"batch_size": batch_size, "max_length": max_length, "progress": False}
    given = signals.score(model, tokenizer, records, "loss", **kw)
    empty = signals.score(model, tokenizer, [without_request(ex) for ex in records], "loss", **kw)
    return given, empty, prior(model, tokenizer, records, max_length)


def scores_of(given, empty, refusal, forgetting: dict) -> dict[str, np.ndarray]:
    """The label-free scores compared here; the forgetting combinations where `forgetting`
    (`realistic.recorded_forgetting`) is known.

    `refusal` is the refusal prior (minus the lowest NLL of a short refusal to the request), so
    `margin` = given + refusal is how much less likely M0 finds the answer than its likeliest
    refusal."""
    out = {
        "surprise": given,
        "pmi": given - empty,
        "ifd": given / empty,
        "empty_nll": empty,
        "refusal_prior": refusal,
        "margin": given + refusal,
    }
    if forgetting:
        out |= forgetting
        for k in ("pmi", "ifd", "margin"):
            out[f"relative+{k}"] = mean_rank(forgetting["relative"], out[k])
    return out


def one_run(
    label: str,
    args: argparse.Namespace,
    run: dict,
    a: argparse.Namespace,
    cached: dict | None = None,
) -> dict:
    """Rebuild one recorded run's mixture, score M0 and rank every score (with `cached`, the
    given and empty-request NLLs of an earlier output of this script for the same run)."""
    tag, records, labels, lengths, cfg, model, tokenizer = rebuilt_m0(
        args, run, Path(a.data) / label, a.model
    )
    if cached is not None:
        given, empty = np.array(cached["given"]), np.array(cached["empty"])
        refusal = prior(model, tokenizer, records, cfg.noisy_train.max_length)
    else:
        given, empty, refusal = m0_scores(
            model, tokenizer, records, cfg.noisy_train.max_length, args.score_batch_size
        )
    unsafe = np.array([labels[r.id][0] == "unsafe" for r in records])
    scores = scores_of(given, empty, refusal, recorded_forgetting(run, given))
    group = np.array(
        ["unsafe" if u else labels[r.id][1] for r, u in zip(records, unsafe, strict=True)]
    )
    return {
        "label": label,
        "tag": tag,
        "ranking": rankings(unsafe, scores, lengths),
        "group_means": {
            k: {g: round(float(v[group == g].mean()), 4) for g in sorted(set(group))}
            for k, v in scores.items()
            if k in ("surprise", "pmi", "empty_nll", "refusal_prior", "margin")
        },
        "examples": {"given": given.tolist(), "empty": empty.tolist(), "refusal": refusal.tolist()},
    }


def main() -> None:
    p = rescore_parser(__doc__.split("\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="M0-only: other seeds")
    p.add_argument(
        "--cached", default=None, help="an earlier --out: reuse its NLLs of the same runs"
    )
    a = p.parse_args()
    earlier = io.read_json(Path(a.cached))["runs"] if a.cached else []
    results: list[dict] = []
    for label, args, run in recorded_runs(a.runs, a.seeds):
        tag = run_tag(args, run["risk"], run["share"], run["safe_set"], run["seed"])
        hit = [e["examples"] for e in earlier if (e["label"], e["tag"]) == (label, tag)]
        keep(results, one_run(label, args, run, a, hit[0] if hit else None), Path(a.out))
    Path(a.out).with_suffix(".md").write_text(rescored_markdown(results))


if __name__ == "__main__":
    main()
