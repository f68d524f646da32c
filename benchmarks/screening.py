"""Screening: ForgetFilter's cost and removal with a cheaper model or a shorter noisy finetune
making the scores, against the full pipeline and one plain finetune of the target, in one run.

Builds a chat-format mixture (`smollm2_chat.chat_files`: OpenAI `messages` JSONL with hidden labels,
a ShareGPT safe set), then, one after another on the same data and seed:

- `plain`: one finetune of the target on all the noisy data with the target's settings (the cost
  unit: what the user would pay without a filter);
- `full`: `forgetfilter run --model TARGET` (every stage on the target);
- `screen:NAME`: `--screen-model NAME --model TARGET` (NAME's preset for the filtering stages, the
  target's for the one delivered finetune);
- `steps:K`: `--screen-steps K --model TARGET` (the target screens itself with a K-step noisy
  finetune);
- `screen:NAME@K`: both.

It prints each variant's cost (the sum of its stage times, `timings.json`) over the plain finetune's
(and that of its filtering stages alone, everything but the final finetune, which shrinks with
what is removed),
the ranking AUROC of the filter score and of forgetting alone against the hidden labels, the removal's
precision and recall at the run's cut and at a shared budget (the top `--budget` share of the
ranking, so that runs whose automatic cuts differ still compare), the overlap of each variant's
removed set with the full pipeline's, and, with `--eval-limit N`, the delivered models' harm and
Alpaca metrics (`forgetfilter eval`) beside the plain finetune's. Variants resume: a finished one is
read back, so the cost ratio of a rerun is the one first measured.

    python benchmarks/screening.py --out /tmp/screen --model smollm2-135m-instruct \
        --variants full screen:tiny steps:7 --epochs 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import _common as C  # noqa: N812
import numpy as np
from sklearn.metrics import roc_auc_score
from smollm2_chat import chat_files

from forgetfilter import io
from forgetfilter.pipeline import default_run_config, final_cfg, run_forgetfilter, unlabelled
from forgetfilter.readers import read_examples


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="the target model")
    p.add_argument("--variants", nargs="+", default=["full", "screen:tiny", "steps:7"])
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--n-safe", type=int, default=100)
    p.add_argument("--unsafe-ratio", type=float, default=0.5)
    p.add_argument("--epochs", type=float, default=None, help="the target's (default: its preset)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--budget", type=float, default=None, help="shared removal budget (default: R)")
    p.add_argument(
        "--eval-limit", type=int, default=0, help="harm/alpaca items per delivered model"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def variant_config(name: str, args: argparse.Namespace):
    """The RunConfig of one variant (`full`, `screen:NAME`, `steps:K`, `screen:NAME@K`)."""
    target = default_run_config(
        args.model, epochs=args.epochs, max_length=args.max_length, seed=args.seed,
        **({"screen_epochs": None} if args.epochs else {}),  # --epochs: M1's length too
    )  # fmt: skip
    if name == "full":
        return target
    screen, steps = None, None
    if name.startswith("steps:"):
        steps = int(name.split(":", 1)[1])
    elif name.startswith("screen:"):
        screen, _, k = name.split(":", 1)[1].partition("@")
        steps = int(k) if k else None
    else:
        raise SystemExit(f"unknown variant {name!r}")
    if screen is None:
        return dataclasses.replace(target, screen_steps=steps)
    cfg = default_run_config(
        args.model, max_length=args.max_length, seed=args.seed, screen_model=screen
    )
    # the delivered finetune is exactly the full pipeline's
    return dataclasses.replace(cfg, screen_steps=steps, final_train=final_cfg(target))


def warm(args: argparse.Namespace) -> None:
    """Fetch or build every model once before anything is timed (the built-in `tiny` is trained
    on first use, a named model fetched and converted)."""
    from forgetfilter.models import load_model

    for name in args.variants:
        cfg = variant_config(name, args)
        for model in {cfg.model, cfg.screener}:
            load_model(model)


def plain(args, noisy_path: Path, out: Path) -> dict:
    """One finetune of the target on every noisy record (timed; read back when done)."""
    from forgetfilter.training import train

    done = out / "plain.json"
    if done.exists():
        return io.read_json(done)
    shutil.rmtree(out / "plain", ignore_errors=True)
    examples, _ = read_examples(noisy_path)
    cfg = final_cfg(variant_config("full", args))
    t0 = time.perf_counter()
    train(args.model, unlabelled(examples), out / "plain", cfg, progress=False)
    row = {"seconds": time.perf_counter() - t0, "model_dir": str(out / "plain" / "model")}
    io.write_json(done, row)
    return row


def run_variant(name: str, args, noisy_path: Path, safe_path: Path, out: Path) -> dict:
    """One pipeline run; its stage times, scores and removals."""
    run_dir = out / name.replace(":", "_").replace("@", "_")
    t0 = time.perf_counter()
    cfg = variant_config(name, args)
    result = run_forgetfilter(noisy_path, safe_path, run_dir, cfg, progress=False)
    wall = time.perf_counter() - t0
    timings = io.read_json(run_dir / "timings.json")
    scores = {r["id"]: r for r in io.read_jsonl(run_dir / "scores.jsonl")}
    removed = {r["id"] for r in io.read_jsonl(run_dir / "removed.jsonl")}
    return {
        "name": name,
        "dir": run_dir,
        "cost_s": sum(timings.values()),
        "wall_s": wall,
        "timings": timings,
        "scores": scores,
        "removed": removed,
        "summary": result.summary,
    }


def ranking_metrics(run: dict, labels: dict[str, int], budget: float) -> dict:
    """AUROCs against the hidden labels and precision/recall at the cut and at the budget."""
    ids = sorted(labels)
    y = np.array([labels[i] for i in ids])
    score = np.array([run["scores"][i]["forgetting"] for i in ids])  # the filter's score
    quality = run["summary"].get("quality") or {}
    k = max(1, round(budget * len(ids)))
    top = {ids[j] for j in np.argsort(-score, kind="stable")[:k]}
    unsafe = {i for i in ids if labels[i]}

    def pr(chosen: set[str]) -> tuple[float | None, float]:
        hit = len(chosen & unsafe)
        return (hit / len(chosen) if chosen else None), hit / max(1, len(unsafe))

    cut_p, cut_r = pr(run["removed"])
    top_p, top_r = pr(top)
    return {
        "auroc": float(roc_auc_score(y, score)),
        "auroc_forgetting": (quality.get("forgetting_relative") or {}).get("auroc"),
        "removed": len(run["removed"]),
        "cut_precision": cut_p,
        "cut_recall": cut_r,
        "top_precision": top_p,
        "top_recall": top_r,
        "top": top,
    }


def jaccard(a: set, b: set) -> float | None:
    """|a & b| / |a | b| (None when both are empty)."""
    return len(a & b) / len(a | b) if a | b else None


def delivered_metrics(model_dir: str, data: Path, limit: int) -> dict:
    """Harm and Alpaca metrics of a delivered model on the mixture's evaluation sets."""
    from forgetfilter.evaluation import EvalConfig, evaluate

    res = evaluate(model_dir, ["harm", "alpaca"], data, EvalConfig(limit=limit, progress=False))[
        "suites"
    ]
    return {
        "harm_frac_harmful": res["harm"]["frac_harmful"],
        "harm_refusal": res["harm"]["refusal_rate"],
        "alpaca_rouge_l": res["alpaca"]["rouge_l"],
        "alpaca_nll": res["alpaca"]["response_nll"],
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the variants, print the table, and save `results.json`."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    n_eval = max(4, args.eval_limit)
    noisy_path, safe_path = chat_files(
        args.n, args.n_safe, args.unsafe_ratio, args.seed, args.out, n_eval=n_eval
    )
    labels = {
        r["id"]: int(r["label"] == "unsafe")
        for r in io.read_jsonl(args.out / "mix" / "noisy.jsonl")
    }
    budget = args.unsafe_ratio if args.budget is None else args.budget
    print(
        f"# screening: target={args.model} n={args.n} R={args.unsafe_ratio} safe={args.n_safe} "
        f"seed={args.seed} variants={' '.join(args.variants)}",
        flush=True,
    )
    warm(args)
    base = plain(args, noisy_path, args.out)
    print(f"plain finetune of {args.model}: {base['seconds']:.1f} s", flush=True)
    runs = []
    for name in args.variants:
        run = run_variant(name, args, noisy_path, safe_path, args.out)
        run["metrics"] = ranking_metrics(run, labels, budget)
        runs.append(run)
        print(
            f"{name}: cost {run['cost_s']:.1f} s ({run['cost_s'] / base['seconds']:.2f}x)",
            flush=True,
        )
    ref = next((r for r in runs if r["name"] == "full"), runs[0])
    rows = []
    for r in runs:
        m = r["metrics"]
        rows.append(
            {
                "variant": r["name"],
                "cost_s": r["cost_s"],
                "vs_plain": r["cost_s"] / base["seconds"],
                "filter_vs_plain": (r["cost_s"] - r["timings"].get("final", 0)) / base["seconds"],
                "auroc": m["auroc"],
                "auroc_forget": m["auroc_forgetting"],
                "removed": m["removed"],
                "cut_P": m["cut_precision"],
                "cut_R": m["cut_recall"],
                f"top{budget:.0%}_P": m["top_precision"],
                "jaccard_cut": jaccard(r["removed"], ref["removed"]),
                "jaccard_top": jaccard(m["top"], ref["metrics"]["top"]),
            }
        )
    print(C.table(rows))
    stages = [{"variant": r["name"], **r["timings"]} for r in runs]
    print("\n# stage seconds (timings.json)")
    print(C.table(stages))
    evals = {}
    if args.eval_limit:
        models = {
            f"M0 ({args.model}, not finetuned)": args.model,
            "plain (no filter)": base["model_dir"],
        }
        models |= {r["name"]: str(r["dir"] / "final" / "model") for r in runs}
        for name, path in models.items():
            if path == args.model or Path(path).exists():
                evals[name] = delivered_metrics(path, args.out / "mix" / "eval", args.eval_limit)
        print(f"\n# delivered models, {args.eval_limit} items per suite")
        print(C.table([{"model": k, **v} for k, v in evals.items()]))
    out = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "plain_s": base["seconds"],
        "rows": rows,
        "stages": stages,
        "delivered": evals,
    }
    (args.out / "results.json").write_text(json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
