"""The realistic regime: few unsafe examples hidden in instruction-style chat data (issue 17).

For every risk, unsafe share and seed it builds custom data as a user brings it: chat-format
`messages` JSONL with no label column, 80% Alpaca and 20% SQuAD task data plus round(N x share)
unsafe examples of the risk (`mixture`, composition `instruct`; `--unsafe-sources` draws them from
the named sources only; `--match-lengths` draws the task data as long as the unsafe answers, so
that length alone ranks at chance; a prompt that holds an earlier dialogue, as hh-rlhf's do, becomes real
user and assistant turns). The safety set is one a user
could have: `refusals` (same-risk safe answers only) or `mixed` (half of them replaced by helpful
Alpaca answers no other file holds). It runs `forgetfilter run` (no final model) with the chosen
settings, then scores the ranking of each label-free score against the hidden labels, which only
this script reads (`labels.json` beside each data set: id -> [label, source]):

- `default`: the run's filter score (the default recipe and neighbour smoothing unless
  `--normalise`, `--neighbours`), and every recipe
  its scores allow (`forgetting_<recipe>`), `learning` (1 - NLL_M1/NLL_M0), `static` (low NLL on
  M1) and, with `--classifier`, the content classifiers' probability (`filters.ClassifierFilter`;
  trained on the same sources as the mixtures, so optimistic here), its mean rank with the run's
  score (`forgetting+classifier`), and the same on one unsafe source at a time with classifiers
  retrained without that source (`... [held out SOURCE]`, `held_out_source`);
- `length`: the answer's length in characters, longer = more suspect: a trivial label-free score
  any other must beat, since the unsafe answers of a source can be much longer or shorter than
  the task answers;
- AUROC, AUPRC, precision@k (k = the number of unsafe examples), the AUROC over the (unsafe,
  clean) pairs whose answer lengths differ by at most 1.25x (`metrics.matched_auroc`: what a
  score ranks once length cannot help) and, for the run's own cut and
  the classifier's, precision and recall at the cut and the share removed.

Tables give mean ± sd over seeds. Runs resume (rerun the same command).

    python benchmarks/realistic.py --model tiny --risk harm --shares 0.05 --seeds 0 1 2 \\
        --out /tmp/realistic
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from forgetfilter import filters, io
from forgetfilter.metrics import filter_quality, matched_auroc, ranking_quality
from forgetfilter.mixture import MixtureConfig, build_mixture
from forgetfilter.models import load_model
from forgetfilter.paths import data_dir
from forgetfilter.pipeline import default_run_config, run_forgetfilter
from forgetfilter.readers import read_examples
from forgetfilter.recipes import (
    RECIPES,
    ScoreTable,
    apply,
    learning,
    mean_rank,
    static,
    surprise,
)
from forgetfilter.records import Example, content, conversation
from forgetfilter.thresholds import ThresholdConfig

SYSTEMS = ["You are a helpful assistant.", None, None]


def build_data(
    risk: str,
    n: int,
    share: float,
    seed: int,
    n_safe: int,
    safe_set: str,
    out: Path,
    n_trusted: int = 0,
    unsafe_sources: tuple[str, ...] = (),
    match_lengths: bool = False,
):
    """The noisy chat file (no labels), the safe file and labels.json, built once; with
    `n_trusted`, trusted.jsonl too (clean chat records drawn with the noisy set's clean part);
    with `unsafe_sources`, the unsafe examples come from those sources only; with
    `match_lengths`, task answers as long as the unsafe ones (`MixtureConfig.match_lengths`)."""
    noisy, safe, labels = out / "noisy.jsonl", out / "safe.jsonl", out / "labels.json"
    if labels.exists():
        return noisy, safe, io.read_json(labels)
    helpful = n_safe // 2 if safe_set == "mixed" else 0
    cfg = MixtureConfig(
        risk,
        n,
        share,
        n_safe=n_safe - helpful,
        n_eval=4,
        seed=seed,
        composition="instruct",
        n_helpful=helpful,
        n_trusted=n_trusted,
        unsafe_sources=unsafe_sources,
        match_lengths=match_lengths,
    )
    build_mixture(cfg, data_dir(), out / "mix")
    if n_trusted:
        trusted = io.read_jsonl(out / "mix" / "trusted.jsonl")
        io.write_jsonl(out / "trusted.jsonl", (chat_row(r, i) for i, r in enumerate(trusted)))
    rows = list(io.read_jsonl(out / "mix" / "noisy.jsonl"))
    io.write_jsonl(noisy, (chat_row(r, i) for i, r in enumerate(rows)))
    io.write_jsonl(safe, (chat_row(r, 1) for r in io.read_jsonl(out / "mix" / "safe.jsonl")))
    io.write_json(labels, {r["id"]: [r["label"], r["source"]] for r in rows})
    return noisy, safe, io.read_json(labels)


def chat_row(r: dict, i: int) -> dict:
    """One record as an OpenAI-style conversation (a system prompt on every third), with the
    turns of a record that keeps them (`messages`, e.g. an hh-rlhf dialogue)."""
    system = SYSTEMS[i % len(SYSTEMS)]
    turns = [{"role": "system", "content": system}] if system else []
    return {"id": r["id"], "messages": turns + conversation(Example.from_dict(r))}


def run_config(a: argparse.Namespace, seed: int):
    cfg = default_run_config(
        a.model,
        lr=a.lr,
        safety_lr=a.safety_lr,
        epochs=a.epochs,
        **({"screen_epochs": a.epochs} if a.epochs else {}),  # no final model: M1's length
        batch_size=a.batch_size,
        max_length=a.max_length,
        dtype=a.dtype,
        normalise=a.normalise,
        neighbours=getattr(a, "neighbours", None),  # runs recorded before it: the default
        signal=a.signal,
        safety_steps=a.safety_steps,
        final=False,
        seed=seed,
    )
    if a.max_steps:  # M1's length in steps (no final model here)
        cfg.screen_steps = a.max_steps
    if a.lora_r:
        cfg.noisy_train.lora.r = cfg.safety_train.lora.r = a.lora_r
        cfg.noisy_train.lora.alpha = cfg.safety_train.lora.alpha = 2 * a.lora_r
    if a.lora_targets:
        targets = tuple(a.lora_targets.split(","))
        cfg.noisy_train.lora.targets = cfg.safety_train.lora.targets = targets
    cfg.score_batch_size = a.score_batch_size
    return cfg


def one_set_parser(description: str, n_safe: int) -> argparse.ArgumentParser:
    """The arguments of a script that builds one noisy set per seed and runs the default on it."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", default="tiny")
    p.add_argument("--share", type=float, default=0.05)
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--n-safe", type=int, default=n_safe)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--out", required=True)
    return p


def run_args(a: argparse.Namespace) -> argparse.Namespace:
    """`a` with the run settings of this script's parser that it lacks at their defaults, for
    `run_config` (the default recipe, loss signal, score batch 32)."""
    settings = dict.fromkeys(
        ("lr", "safety_lr", "batch_size", "normalise", "neighbours", "safety_steps", "max_steps",
         "lora_r", "lora_targets", "epochs", "max_length", "dtype"),
    )  # fmt: skip
    return argparse.Namespace(**{**settings, "signal": "loss", "score_batch_size": 32, **vars(a)})


def run_tag(a: argparse.Namespace, risk: str, share: float, safe_set: str, seed: int) -> str:
    """The name of one run (its data and run directories) under `--out`."""
    tag = f"{risk}-s{share:g}-{safe_set}-seed{seed}"
    tag += f"-trusted{a.n_trusted}" if getattr(a, "n_trusted", 0) else ""
    sources = getattr(a, "unsafe_sources", None)
    tag += f"-from-{'+'.join(sources)}" if sources else ""
    return tag + ("-matched" if getattr(a, "match_lengths", False) else "")


def recorded_run(runs: Path, tag: str):
    """(RunConfig, data dir, run dir) of run `tag` of a finished `--out RUNS`, from its arguments."""
    args = argparse.Namespace(**io.read_json(runs / "results.json")["args"])
    seed = int(tag.split("seed", 1)[1].split("-")[0])
    return run_config(args, seed), runs / "data" / tag, runs / "runs" / tag


def rebuilt(args: argparse.Namespace, run: dict, out: Path):
    """(tag, noisy records, labels, answer lengths) of a recorded run's mixture, built again under
    `out` from its arguments and seed; SystemExit where the lengths differ from its `examples`."""
    tag = run_tag(args, run["risk"], run["share"], run["safe_set"], run["seed"])
    noisy, _, labels = build_data(
        run["risk"], args.n, run["share"], run["seed"], args.n_safe, run["safe_set"], out / tag,
        getattr(args, "n_trusted", 0), tuple(getattr(args, "unsafe_sources", None) or ()),
        getattr(args, "match_lengths", False),
    )  # fmt: skip
    records, _ = read_examples(noisy)
    lengths = np.array([len(r.response) for r in records], dtype=float)
    ex = run.get("examples")
    if ex is not None and list(lengths) != list(ex["length"]):
        raise SystemExit(
            f"{out / tag}: the rebuilt mixture is not the recorded one (lengths differ)"
        )
    return tag, records, labels, lengths


def check_m0(run: dict, m0: np.ndarray, tol: float = 1e-4) -> None:
    """SystemExit where `m0` differs from a recorded run's M0 scores by more than `tol`."""
    gap = float(np.max(np.abs(m0 - np.array(run["examples"]["m0"]))))
    if gap > tol:
        raise SystemExit(f"the M0 scores differ from the recorded ones by {gap:.2g}")


def recorded_runs(specs: list[str], seeds: list[int] | None = None):
    """(label, recorded arguments, run) of each run of `LABEL=results.json` specs; with `seeds`,
    the first recorded run at those seeds instead, without its per-example columns."""
    for spec in specs:
        label, path = spec.split("=", 1)
        recorded = io.read_json(Path(path))
        runs = recorded["runs"]
        if seeds is not None:
            runs = [{**runs[0], "seed": s, "examples": None} for s in seeds]
        for run in runs:
            yield label, argparse.Namespace(**recorded["args"]), run


def keep(results: list[dict], result: dict, out: Path, **extra) -> None:
    """Add a rescored run's result, print its AUROCs and rewrite `out` with all so far."""
    results.append(result)
    aurocs = {k: round(v["auroc"], 3) for k, v in result["ranking"].items()}
    print(result["label"], result["tag"], json.dumps(aurocs), flush=True)
    io.write_json(out, {**extra, "runs": results})


def rescore_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every script that rescores recorded runs takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--runs", nargs="+", required=True, help="LABEL=results.json of realistic.py")
    p.add_argument("--model", default=None, help="M0's path, where it moved since the run")
    p.add_argument("--data", required=True, help="where the mixtures are rebuilt")
    p.add_argument("--out", required=True, help="a JSON file (and a .md beside it)")
    return p


def rebuilt_m0(args: argparse.Namespace, run: dict, data: Path, model_path: str | None):
    """(tag, records, labels, lengths, RunConfig, M0, tokenizer) of a recorded run: its mixture
    rebuilt under `data` (`rebuilt`) and its M0 loaded (from `model_path` where it moved)."""
    tag, records, labels, lengths = rebuilt(args, run, data)
    if model_path:
        args.model = model_path
    cfg = run_config(args, run["seed"])
    model, tokenizer = load_model(cfg.screener, dtype=cfg.noisy_train.dtype)
    return tag, records, labels, lengths, cfg, model, tokenizer


def recorded_forgetting(run: dict, m0: np.ndarray) -> dict[str, np.ndarray]:
    """`relative` and `relative+surprise` of a recorded run's M1 and M2 with `m0` (checked against
    the recorded M0 scores); empty where the run kept no per-example columns."""
    ex = run.get("examples")
    if ex is None or ex.get("m0") is None:
        return {}
    check_m0(run, m0)
    table = ScoreTable("loss", np.array(ex["m1"]), np.array(ex["m2"]), m0)
    return {
        "relative": apply("relative", table),
        "relative+surprise": apply("relative+surprise", table),
    }


def rescored_markdown(results: list[dict]) -> str:
    """AUROC (lengths matched), P@k of each score, a row per rescored run ("-" where it lacks one)."""
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


def run_table(rows: list[dict], signal: str = "loss") -> ScoreTable:
    """The ScoreTable of a run's `scores.jsonl` rows (M0's column where the run scored M0)."""
    column = lambda k: np.array([r[k] for r in rows])  # noqa: E731
    return ScoreTable(
        signal, column("before"), column("after"), column("m0") if "m0" in rows[0] else None
    )


def evaluate(run_dir: Path, labels: dict, signal: str, classifier: bool, noisy: Path) -> dict:
    """Ranking quality of every label-free score, and the quality of the cuts."""
    rows = io.read_jsonl(run_dir / "scores.jsonl")
    unsafe = np.array([labels[r["id"]][0] == "unsafe" for r in rows])
    table = run_table(rows, signal)
    before, after, m0 = table.m1, table.m2, table.m0
    examples, _ = read_examples(noisy)
    by_id = {ex.id: ex for ex in examples}
    scored = [by_id[r["id"]] for r in rows]
    lengths = np.array([len(ex.response) for ex in scored], dtype=float)
    scores = {"default": np.array([r["forgetting"] for r in rows])}
    scores |= label_free_scores(table, lengths)
    removed = np.array([r["removed"] for r in rows])
    cuts = {"default": _cut(removed, unsafe)}
    if not (run_dir / "trusted.jsonl").exists():
        cuts["current"] = _cut(current_cut(run_dir, table, scored), unsafe)
    share = io.read_json(run_dir / "summary.json").get("unsafe_share") or {}
    if classifier:
        from forgetfilter.filters import ClassifierFilter

        records = [content(ex) for ex in scored]
        probs = ClassifierFilter().probabilities(records)
        scores["classifier"] = probs
        scores["forgetting+classifier"] = mean_rank(scores["default"], probs)
        cuts["classifier"] = _cut(probs > 0.5, unsafe)
    ranking = rankings(unsafe, scores, lengths)
    if classifier:
        sources = np.array([labels[r["id"]][1] for r in rows])
        ranking |= held_out_source(records, scores, unsafe, sources)
    group_means = _group_means(rows, labels, before, after, m0)
    return {
        "examples": {  # per example, so any recipe can be evaluated later without the run dir
            "m0": None if m0 is None else m0.tolist(),
            "m1": before.tolist(),
            "m2": after.tolist(),
            "unsafe": unsafe.tolist(),
            "source": [labels[r["id"]][1] for r in rows],
            "length": lengths.tolist(),
        },
        "ranking": ranking,
        "cuts": cuts,
        "n": len(rows),
        "n_unsafe": int(unsafe.sum()),
        "groups": group_means,
        "share_estimate": {"true": float(unsafe.mean())}
        | {k: share.get(k) for k in ("estimate", "low", "high", "method")},
    }


def label_free_scores(table: ScoreTable, lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Every label-free score the recorded columns allow: each recipe (`forgetting_<recipe>`),
    `static`, with M0 `learning` and `surprise`, and the answer's `length` in characters."""
    scores = {"static": static(table)}
    for name, recipe in RECIPES.items():
        if table.kind in recipe.kinds and (table.m0 is not None or "m0" not in recipe.needs):
            scores[f"forgetting_{name}"] = apply(name, table)
    if table.m0 is not None:
        scores["learning"] = learning(table.m0, table.m1)
        scores["surprise"] = surprise(table)  # M0's NLL of the answer: no finetune needed
    scores["length"] = lengths  # label-free, longer = more suspect
    return scores


def recorded_table(run: dict, signal: str = "loss", rows=slice(None)) -> ScoreTable:
    """The ScoreTable of a recorded run's per-example columns (`examples`), `rows` of them."""
    ex = run["examples"]
    m0 = None if ex["m0"] is None else np.array(ex["m0"])[rows]
    return ScoreTable(signal, np.array(ex["m1"])[rows], np.array(ex["m2"])[rows], m0)


def from_examples(run: dict, signal: str) -> dict:
    """A recorded run's rankings recomputed from its per-example columns (`examples`) with
    today's recipes: no run directory, no model, no classifier."""
    ex = run["examples"]
    unsafe, lengths = np.array(ex["unsafe"]), np.array(ex["length"], dtype=float)
    return rankings(unsafe, label_free_scores(recorded_table(run, signal), lengths), lengths)


def rankings(unsafe: np.ndarray, scores: dict, lengths: np.ndarray) -> dict[str, dict]:
    """Each score's ranking quality, with the AUROC over length-matched pairs."""
    return {
        k: ranking_quality(unsafe, v) | matched_auroc(unsafe, v, lengths) for k, v in scores.items()
    }


# A mixture's unsafe source -> the classifier training source it comes from.
CLASSIFIER_SOURCE = {"decodingtrust-gpt3": "gpt", "decodingtrust-gpt4": "gpt"}


def held_out_source(records, scores: dict, unsafe: np.ndarray, sources: np.ndarray) -> dict:
    """Rankings on one unsafe source at a time, by classifiers that never saw that source.

    For every source S of the unsafe examples that the content classifiers train on, the
    classifiers are retrained without S (`ClassifierConfig.holdout_sources`) and the examples
    ranked are the clean ones and the unsafe ones from S. Keys: `<score> [held out S]` for the
    held-out classifier, its mean rank with the run's score, and the label-free scores on the same
    examples (so the rows compare like with like).
    """
    from forgetfilter.classifiers import SOURCES
    from forgetfilter.filters import ClassifierFilter

    known = {s for kind in SOURCES.values() for s in kind}
    out = {}
    for src in sorted(set(sources[unsafe])):
        held = CLASSIFIER_SOURCE.get(src, src)
        if held not in known:
            continue
        keep = ~unsafe | (sources == src)
        probs = ClassifierFilter(holdout_sources=(held,)).probabilities(records)
        tag = f" [held out {src}]"
        out[f"classifier{tag}"] = ranking_quality(unsafe[keep], probs[keep])
        combined = mean_rank(scores["default"], probs)
        out[f"forgetting+classifier{tag}"] = ranking_quality(unsafe[keep], combined[keep])
        for name in ("default", "learning", "static", "classifier"):
            if name in scores:
                label = "classifier (seen)" if name == "classifier" else name
                out[f"{label}{tag}"] = ranking_quality(unsafe[keep], scores[name][keep])
    return out


def current_cut(run_dir: Path, table: ScoreTable, records: list[Example]) -> np.ndarray:
    """Which examples the automatic cut of this code's defaults removes from a run's recorded scores
    with the run's recipe and neighbours (the run's own cut, `removed`, is the rule of the code
    that made it)."""
    cfg = io.read_json(run_dir / "config.json")["config"]
    summary = io.read_json(run_dir / "summary.json")
    decision = filters.get("forgetfilter").decide(
        [content(ex) for ex in records], table, ThresholdConfig(seed=cfg["seed"]),
        summary["normalise"], cfg["seed"], neighbours=summary.get("neighbours") or 0,
    )  # fmt: skip
    return np.isin(np.arange(len(records)), list(decision.reasons))


def _cut(removed: np.ndarray, unsafe: np.ndarray) -> dict:
    q = filter_quality(removed.tolist(), unsafe.tolist())
    clean = ~unsafe
    return {
        "clean_removed": float(removed[clean].mean()) if clean.any() else None,
        "precision": q["precision"],
        "recall": q["recall"],
        "removed_share": q["n_removed"] / max(q["n"], 1),
        "n_removed": q["n_removed"],
    }


def _group_means(rows, labels, before, after, m0) -> dict:
    """Mean score per group (unsafe, and the task sources by id prefix) on M0, M1 and M2."""
    groups: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        label, source = labels[r["id"]]
        g = "unsafe" if label == "unsafe" else source
        groups.setdefault(g, []).append(i)
    out = {}
    for g, idx in sorted(groups.items()):
        out[g] = {"n": len(idx), "m1": float(before[idx].mean()), "m2": float(after[idx].mean())}
        if m0 is not None:
            out[g]["m0"] = float(m0[idx].mean())
    return out


def summarise(results: list[dict]) -> dict:
    """Mean and sd over seeds of every metric, per (risk, share, safe set)."""
    keyed: dict[tuple, list[dict]] = {}
    for r in results:
        keyed.setdefault((r["risk"], r["share"], r["safe_set"]), []).append(r)
    out = {}
    for key, runs in keyed.items():
        agg = {}
        names = dict.fromkeys(score for x in runs for score in x["ranking"])
        for score in names:  # a held-out source can be absent from a seed's mixture
            for metric in ("auroc", "auprc", "p_at_k", "auroc_matched"):
                values = [x["ranking"][score].get(metric) for x in runs if score in x["ranking"]]
                agg[f"{score}.{metric}"] = mean_sd(values)
        for cut in runs[0]["cuts"]:
            for metric in ("precision", "recall", "removed_share", "clean_removed"):
                agg[f"cut_{cut}.{metric}"] = mean_sd([x["cuts"][cut].get(metric) for x in runs])
        agg["share_estimates"] = [x.get("share_estimate") for x in runs]
        out["|".join(map(str, key))] = agg | {"seeds": [x["seed"] for x in runs]}
    return out


def mean_sd(values: list) -> list | None:
    """[mean, sample sd] of the values that are not None (sd 0 for one value), 3 decimals."""
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return [
        round(float(np.mean(vals)), 3),
        round(float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, 3),
    ]


def markdown(summary: dict) -> str:
    """One table per (risk, share, safe set): score x (AUROC, AUPRC, P@k)."""
    fmt = lambda v: "n/a" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}"  # noqa: E731
    lines = []
    for key, agg in summary.items():
        risk, share, safe_set = key.split("|")
        lines += [
            f"\n{risk}, {float(share):.0%} unsafe, safe set `{safe_set}`, seeds {agg['seeds']}\n",
            "| score | AUROC | AUPRC | P@k | AUROC, lengths matched |",
            "|---|---|---|---|---|",
        ]
        scores = sorted({k.split(".")[0] for k in agg if "." in k and not k.startswith("cut_")})
        for s in scores:
            lines.append(
                f"| {s} | {fmt(agg[s + '.auroc'])} | {fmt(agg[s + '.auprc'])} | "
                f"{fmt(agg[s + '.p_at_k'])} | {fmt(agg.get(s + '.auroc_matched'))} |"
            )
        for cut in sorted({k.split(".")[0] for k in agg if k.startswith("cut_")}):
            lines.append(
                f"| {cut} (at the cut) | precision {fmt(agg[cut + '.precision'])} | recall "
                f"{fmt(agg[cut + '.recall'])} | removed {fmt(agg[cut + '.removed_share'])}, "
                f"clean removed {fmt(agg.get(cut + '.clean_removed'))} | |"
            )
        shares = [
            s for s in agg.get("share_estimates") or [] if s and s.get("estimate") is not None
        ]
        if shares:
            lines.append(
                "| unsafe-share estimate (interval) vs true | "
                + "; ".join(
                    f"{s['estimate']:.3f} ({_f3(s.get('low'))}-{_f3(s.get('high'))}) "
                    f"vs {s['true']:.3f}"
                    for s in shares
                )
                + " | | | |"
            )
    return "\n".join(lines) + "\n"


def _f3(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def write_results(out: Path, args: dict, results: list[dict]) -> None:
    """results.json (the arguments, every run, the summary) and table.md under `out`; prints the table."""
    summary = summarise(results)
    io.write_json(out / "results.json", {"args": args, "runs": results, "summary": summary})
    text = markdown(summary)
    (out / "table.md").write_text(text)
    print(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--risk", nargs="+", default=["harm"])
    p.add_argument("--shares", nargs="+", type=float, default=[0.05])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--n-safe", type=int, default=300)
    p.add_argument("--safe-set", nargs="+", default=["refusals"], choices=["refusals", "mixed"])
    p.add_argument("--signal", default="loss")
    p.add_argument("--normalise", default=None)
    p.add_argument(
        "--neighbours", type=int, default=None, help="the run's --neighbours (None: the default)"
    )
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--safety-lr", type=float, default=None)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="size the noisy finetune in steps")
    p.add_argument("--safety-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--lora-r", type=int, default=None)
    p.add_argument("--lora-targets", default=None, help="comma-separated module names")
    p.add_argument("--score-batch-size", type=int, default=32)
    p.add_argument("--classifier", action="store_true", help="also rank by the content classifiers")
    p.add_argument(
        "--n-trusted",
        type=int,
        default=0,
        help="a trusted clean sample of this size: the run's cut is then the conformal one",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="--max-false-removal")
    p.add_argument(
        "--evaluate-only",
        action="store_true",
        help="do not run (or continue) the pipeline where a run's scores exist: evaluate them",
    )
    p.add_argument(
        "--unsafe-sources",
        nargs="+",
        default=[],
        help="draw the unsafe examples from these sources only (e.g. hh-rlhf for harm)",
    )
    p.add_argument(
        "--match-lengths",
        action="store_true",
        help="task answers drawn as long as the unsafe ones, so length tells nothing",
    )
    p.add_argument("--out", required=True)
    a = p.parse_args()
    out = Path(a.out)
    results = []
    for risk in a.risk:
        for share in a.shares:
            for safe_set in a.safe_set:
                for seed in a.seeds:
                    tag = run_tag(a, risk, share, safe_set, seed)
                    data = out / "data" / tag
                    noisy, safe, labels = build_data(
                        risk,
                        a.n,
                        share,
                        seed,
                        a.n_safe,
                        safe_set,
                        data,
                        a.n_trusted,
                        tuple(a.unsafe_sources),
                        a.match_lengths,
                    )
                    t0 = time.perf_counter()
                    cfg = run_config(a, seed)
                    cfg.threshold.max_false_removal = a.alpha
                    trusted = data / "trusted.jsonl" if a.n_trusted else None
                    if not (a.evaluate_only and (out / "runs" / tag / "scores.jsonl").exists()):
                        run_forgetfilter(
                            noisy, safe, out / "runs" / tag, cfg, progress=False, trusted=trusted
                        )
                    r = evaluate(out / "runs" / tag, labels, cfg.signal, a.classifier, noisy)
                    r |= {
                        "risk": risk,
                        "share": share,
                        "safe_set": safe_set,
                        "seed": seed,
                        "seconds": round(time.perf_counter() - t0, 1),
                    }
                    results.append(r)
                    print(
                        tag,
                        json.dumps({k: round(v["auroc"] or 0, 3) for k, v in r["ranking"].items()}),
                        f"{r['seconds']} s",
                        flush=True,
                    )
    write_results(out, vars(a), results)


if __name__ == "__main__":
    main()
