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
from realistic import check_m0, keep, rankings, rebuilt, recorded_runs, run_config, run_tag
from refusal_prior import prior

from forgetfilter import io, signals
from forgetfilter.models import load_model
from forgetfilter.recipes import ScoreTable, apply, mean_rank


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


def scores_of(given, empty, refusal, m1=None, m2=None) -> dict[str, np.ndarray]:
    """The label-free scores compared here; the forgetting combinations where M1, M2 are known.

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
    if m1 is not None:
        rel = apply("relative", ScoreTable("loss", m1, m2, given))
        out["relative"] = rel
        out["relative+surprise"] = apply("relative+surprise", ScoreTable("loss", m1, m2, given))
        for k in ("pmi", "ifd", "margin"):
            out[f"relative+{k}"] = mean_rank(rel, out[k])
    return out


def one_run(
    label: str,
    args: argparse.Namespace,
    run: dict,
    model_path: str | None,
    data: Path,
    cached: dict | None = None,
):
    """Rebuild one recorded run's mixture, score M0 and rank every score (with `cached`, the
    given and empty-request NLLs of an earlier output of this script for the same run)."""
    tag, records, labels, lengths = rebuilt(args, run, data / label)
    if model_path:
        args.model = model_path
    cfg = run_config(args, run["seed"])
    ex = run.get("examples")
    model, tokenizer = load_model(cfg.screener, dtype=cfg.noisy_train.dtype)
    if cached is not None:
        given, empty = np.array(cached["given"]), np.array(cached["empty"])
        refusal = prior(model, tokenizer, records, cfg.noisy_train.max_length)
    else:
        given, empty, refusal = m0_scores(
            model, tokenizer, records, cfg.noisy_train.max_length, args.score_batch_size
        )
    unsafe = np.array([labels[r.id][0] == "unsafe" for r in records])
    m1 = m2 = None
    if ex is not None and ex.get("m0") is not None:
        check_m0(run, given)
        m1, m2 = np.array(ex["m1"]), np.array(ex["m2"])
    scores = scores_of(given, empty, refusal, m1, m2)
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


def markdown(results: list[dict]) -> str:
    """AUROC (lengths matched), P@k of each score, a row per run ("-" where a run lacks it)."""
    keys = list(dict.fromkeys(k for r in results for k in r["ranking"]))
    head = "| run | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys) + "\n"
    rows = []
    for r in results:
        cells = [_cell(r["ranking"].get(k)) for k in keys]
        rows.append(f"| {r['label']} {r['tag']} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def _cell(q: dict | None) -> str:
    if q is None:
        return "-"
    m = q.get("auroc_matched")
    return f"{q['auroc']:.3f} ({'-' if m is None else f'{m:.3f}'}), {q['p_at_k']:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="LABEL=results.json of realistic.py")
    p.add_argument("--model", default=None, help="M0's path, where it moved since the run")
    p.add_argument("--data", required=True, help="where the mixtures are rebuilt")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="M0-only: other seeds")
    p.add_argument(
        "--cached", default=None, help="an earlier --out: reuse its NLLs of the same runs"
    )
    p.add_argument("--out", required=True, help="a JSON file (and a .md beside it)")
    a = p.parse_args()
    earlier = io.read_json(Path(a.cached))["runs"] if a.cached else []
    results: list[dict] = []
    for label, args, run in recorded_runs(a.runs, a.seeds):
        tag = run_tag(args, run["risk"], run["share"], run["safe_set"], run["seed"])
        hit = [e["examples"] for e in earlier if (e["label"], e["tag"]) == (label, tag)]
        r = one_run(label, args, run, a.model, Path(a.data), hit[0] if hit else None)
        keep(results, r, Path(a.out))
    Path(a.out).with_suffix(".md").write_text(markdown(results))


if __name__ == "__main__":
    main()
