"""Cost of the loss signal (teacher-forced response NLL) vs the rouge signal (greedy ROUGE-1).

Both signals score the same records on the same model, measured side by side in one process in
the order loss, rouge, loss, rouge(cap), loss, so machine load affects both alike. The rouge
signal runs with our default budget (each target's length + 8 new tokens, at most 500) and, as a
second row, with `--max-new-tokens` for every record (default 500, the authors' cap).

With `--run-dir DIR` (a `forgetfilter run` output) it also scores the run's noisy records on its
M1 and M2 and reports the AUROC of forgetting for label == unsafe, for both signals. For a LoRA
run it then times both signals on M1 with the adapter kept apart and merged into the float32
weights (as `forgetfilter run` scores), alternating apart, merged, three times, and compares the
loss forgetting scored in bf16 with the adapters apart or merged against fp32.

    python benchmarks/signal_cost.py --quick
    python benchmarks/signal_cost.py --model tiny --records data/bias/noisy.jsonl
    python benchmarks/signal_cost.py --run-dir runs/bias-loss
    python benchmarks/signal_cost.py --run-dir runs/smol --authors --n 96   # any model, any format
    python benchmarks/signal_cost.py --run-dir runs/smol --authors --one-at-a-time --n 32
    python benchmarks/signal_cost.py --run-dir runs/smol --precision --n 400   # bf16 scoring
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from pathlib import Path

import _common as C  # noqa: N812
import numpy as np
import torch
from scipy.stats import spearmanr

from forgetfilter import inference, recipes, signals
from forgetfilter.batching import encode_example


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model", default="tiny", help="model name/path, `tiny`, or `random` (a random toy GPT-2)"
    )
    p.add_argument(
        "--records", default=None, help="JSONL records (default: synthetic bias-like mixture)"
    )
    p.add_argument("--n", type=int, default=600, help="records to score")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--max-new-tokens", type=int, default=500, help="the fixed-cap rouge row")
    p.add_argument(
        "--run-dir", default=None, help="a forgetfilter run dir: AUROCs of both signals on M1/M2"
    )
    p.add_argument(
        "--authors",
        action="store_true",
        help="with --run-dir: only the loss vs rouge table at our budget and the authors' protocol "
        "on the run's M1 and M2 (the run's noisy records, any input format, first --n)",
    )
    p.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="with --authors: also decode one prompt per generate call, as the authors' code does",
    )
    p.add_argument(
        "--precision",
        action="store_true",
        help="with --run-dir: only the loss forgetting scored in bf16 (adapter apart, merged) "
        "against fp32, on the run's first --n noisy records (labels.json beside them if any)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="fewer records, cap row at 64 tokens")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.max_new_tokens = min(args.n, 200), min(args.max_new_tokens, 64)
    return args


def load(model: str, device: str, records):
    """(model, tokenizer) by name, or a random toy GPT-2 with a tokenizer trained on the records."""
    if model == "random":
        tok = C.train_tokenizer(records, vocab_size=2000)
        m = C.random_model(C.model_config("toy", len(tok), 512), tok, device, torch.float32)
        return m, tok
    from forgetfilter.models import load_model

    return load_model(model, device=device, dtype="fp32")


def cost_rows(model, tok, records, args) -> list[dict]:
    """Seconds and tokens/s of both signals, interleaved; ratio rouge/loss."""
    kw = {"batch_size": args.batch_size, "max_length": args.max_length, "progress": False}
    real = sum(len(encode_example(tok, ex, args.max_length).input_ids) for ex in records)
    inference.response_nll(model, tok, records[: args.batch_size], **kw)  # warm-up
    runs = {
        "loss": lambda: inference.response_nll(model, tok, records, **kw),
        "rouge (target+8, cap 500)": lambda: signals.greedy_rouge1(model, tok, records, **kw),
        f"rouge (cap {args.max_new_tokens})": lambda: signals.greedy_rouge1(
            model, tok, records, max_new_tokens=args.max_new_tokens, **kw
        ),
        "rouge (target+8), no first-line stop": lambda: _rouge_without_early_stop(
            model, tok, records, kw
        ),
    }
    order = [
        "loss",
        "rouge (target+8, cap 500)",
        "loss",
        f"rouge (cap {args.max_new_tokens})",
        "loss",
        "rouge (target+8), no first-line stop",
        "loss",
    ]
    times: dict[str, list[float]] = {k: [] for k in runs}
    for name in order:
        s, _ = C.timed(runs[name], args.device)
        times[name].append(s)
    loss_s = float(np.median(times["loss"]))
    budget = sum(inference.target_lengths(tok, records))
    rows = []
    for name, ts in times.items():
        s = float(np.median(ts))
        new = (
            budget
            if "target" in name
            else (args.max_new_tokens * len(records) if "cap" in name else 0)
        )
        rows.append(
            {
                "signal": name,
                "runs": len(ts),
                "seconds": s,
                "examples_per_s": len(records) / s,
                "prompt+resp_tok_per_s": real / s,
                "gen_budget_tokens": new or None,
                "ratio_vs_loss": s / loss_s,
                "loss_runs_s": ",".join(f"{t:.2f}" for t in times["loss"])
                if name == "loss"
                else None,
            }
        )
    return rows


def _rouge_without_early_stop(model, tok, records, kw, cap: int | None = None) -> np.ndarray:
    """greedy_rouge1 as before the first-line stop: whole generations up to each budget (each
    target's length + 8, or `cap` for every record); `normalise_for_rouge` reads the first line."""
    from forgetfilter.metrics import rouge1_f

    outs = inference.generate(
        model,
        tok,
        list(records),
        max_new_tokens=cap if cap is not None else inference.target_lengths(tok, records),
        **kw,
    )
    return np.asarray(
        [
            rouge1_f(signals.normalise_for_rouge(o), signals.normalise_for_rouge(ex.response))
            for o, ex in zip(outs, records, strict=True)
        ]
    )


AUTHORS_CODE = "rouge (authors' code: one prompt at a time)"


def authors_rows(run_dir: Path, records, args) -> tuple[list[dict], list[dict]]:
    """The loss signal against the rouge signal at our budget and at the authors' protocol, on a
    run's M1 and M2 (adapters merged, as `forgetfilter run` scores): seconds, tokens/s and the
    AUROC of forgetting (label == unsafe) of each, same records, models in turn.

    The authors' protocol decodes greedily up to `--max-new-tokens` (500) and reads the first
    line: `rouge (authors' decode)` times that decode as their code runs it (each generation to
    EOS or the cap), `rouge (cap, first-line stop)` our implementation of the same score, which
    stops a generation once its first line is complete (the two give the same scores; checked).
    With `--one-at-a-time`, `rouge (authors' code: one prompt at a time)` decodes as the authors'
    evaluation loop does (`src/train_eval.py` of andotalao24/learn-forget-unsafe-llm: one
    tokenised prompt per `generate` call, greedy, up to 500 new tokens, the first non-empty line
    kept); it leaves out their `output_scores=True`, which only adds to their cost.
    """
    from forgetfilter.metrics import auroc
    from forgetfilter.models import load_model

    kw = {"batch_size": args.batch_size, "max_length": args.max_length, "progress": False}
    cap = args.max_new_tokens
    # the prompt keeps its --max-length tokens and the cap comes on top (generation cuts prompts
    # to max_length - budget at the left)
    kw_cap = kw | {"max_length": args.max_length + cap}
    runs = {
        "loss": lambda m, t: inference.response_nll(m, t, records, **kw),
        "rouge (target+8, ours)": lambda m, t: signals.greedy_rouge1(m, t, records, **kw),
        f"rouge (cap {cap}, first-line stop)": lambda m, t: signals.greedy_rouge1(
            m, t, records, max_new_tokens=cap, **kw_cap
        ),
        f"rouge (authors' decode, cap {cap})": lambda m, t: _rouge_without_early_stop(
            m, t, records, kw_cap, cap
        ),
    }
    if args.one_at_a_time:
        runs[AUTHORS_CODE] = lambda m, t: _rouge_without_early_stop(
            m, t, records, kw_cap | {"batch_size": 1}, cap
        )
    real = 0
    secs = {k: 0.0 for k in runs}
    scores: dict[tuple[str, str], np.ndarray] = {}
    for stage in ("m1", "m2"):
        model, tok = load_model(run_dir / stage / "model", device=args.device, merge=True)
        real = sum(len(encode_example(tok, ex, args.max_length).input_ids) for ex in records)
        inference.response_nll(model, tok, records[: args.batch_size], **kw)  # warm-up
        for name, fn in runs.items():
            s, values = C.timed(functools.partial(fn, model, tok), args.device)
            secs[name] += s
            scores[stage, name] = np.asarray(values)
            print(f"  {stage} {name}: {s:.1f} s", flush=True)
    same = all(
        np.allclose(scores[st, f"rouge (cap {cap}, first-line stop)"], scores[st, name])
        for st in ("m1", "m2")
        for name in runs
        if name.startswith("rouge (authors")
    )
    unsafe = [ex.label == "unsafe" for ex in records]
    rows = []
    for name in runs:
        sig = "loss" if name == "loss" else "rouge"
        f = {
            norm: recipes.forgetting(scores["m1", name], scores["m2", name], sig, norm)
            for norm in ("none", "relative")
        }
        rows.append(
            {
                "signal": name,
                "seconds_m1+m2": secs[name],
                "prompt+resp_tok_per_s": 2 * real / secs[name],
                "ratio_vs_loss": secs[name] / secs["loss"],
                "auroc_none": auroc(unsafe, f["none"]),
                "auroc_relative": auroc(unsafe, f["relative"]),
            }
        )
    check = [
        {
            "check": "authors' decode (batched and, if run, one at a time) and first-line stop "
            "give the same rouge scores",
            "ok": same,
        }
    ]
    return rows, check


def authors_main(args: argparse.Namespace) -> dict:
    """`--authors`: the protocol table on a run's first `--n` noisy records."""
    run_dir, records = run_records(args, "--authors")
    n_unsafe = sum(ex.label == "unsafe" for ex in records)
    print(
        f"# signal cost, authors' protocol: run={run_dir} records={len(records)} "
        f"({n_unsafe} unsafe) batch={args.batch_size} max_length={args.max_length} "
        f"cap={args.max_new_tokens}",
        flush=True,
    )
    rows, check = authors_rows(run_dir, records, args)
    print(C.table(rows))
    print(C.table(check))
    for row in rows:
        if row["signal"].startswith("rouge (authors"):
            ratio = row["ratio_vs_loss"]
            print(
                f"\n{row['signal']} / loss = {ratio:.1f}x  (goal >= 20x: "
                f"{'met' if ratio >= 20 else 'not met'})"
            )
    out = {"args": vars(args), "authors": rows, "check": check}
    C.save_json(args.json, out)
    return out


def run_records(args: argparse.Namespace, flag: str) -> tuple[Path, list]:
    """(run dir, its first `--n` noisy records, labelled from labels.json beside them if any)."""
    from forgetfilter.readers import read_examples

    if not args.run_dir:
        raise SystemExit(f"{flag} needs --run-dir")
    run_dir = Path(args.run_dir)
    noisy = Path(run_inputs(run_dir)["noisy"])
    return run_dir, with_labels(read_examples(noisy)[0][: args.n], noisy.parent / "labels.json")


def with_labels(records: list, labels: Path) -> list:
    """The records with the hidden labels of a `realistic.py` data set (labels.json beside the
    noisy file: id -> [label, source]) where the file itself has none."""
    if not labels.exists():
        return records
    known = json.loads(labels.read_text())
    return [
        dataclasses.replace(ex, label=known[ex.id][0], source=known[ex.id][1])
        if ex.id in known
        else ex
        for ex in records
    ]


def run_inputs(run_dir: Path) -> dict[str, str]:
    """Paths of a run's input files by role (`noisy`, `safe`), from its config.json."""
    inputs = json.loads((run_dir / "config.json").read_text())["inputs"]
    if all(isinstance(v, dict) for v in inputs.values()):
        return {role: v["path"] for role, v in inputs.items()}
    return dict(zip(("noisy", "safe"), inputs, strict=True))  # older runs: keyed by the path given


def auroc_rows(run_dir: Path, records, args) -> list[dict]:
    """AUROC of forgetting (label == unsafe) for both signals, scored on the run's M1 and M2."""
    from forgetfilter.metrics import auroc
    from forgetfilter.models import load_model

    unsafe = [ex.label == "unsafe" for ex in records]
    kw = {"batch_size": args.batch_size, "max_length": args.max_length, "progress": False}
    scores: dict[tuple[str, str], np.ndarray] = {}
    secs: dict[str, float] = {"loss": 0.0, "rouge": 0.0}
    for stage in ("m1", "m2"):
        model, tok = load_model(run_dir / stage / "model", device=args.device, merge=True)
        for sig in ("loss", "rouge"):
            t0 = time.perf_counter()
            scores[stage, sig] = signals.score(model, tok, records, sig, **kw)
            secs[sig] += time.perf_counter() - t0
    rows = []
    for sig in ("loss", "rouge"):
        for norm in ("none", "relative"):
            f = recipes.forgetting(scores["m1", sig], scores["m2", sig], sig, norm)
            rows.append(
                {
                    "signal": sig,
                    "normalise": norm,
                    "auroc_unsafe": auroc(unsafe, f),
                    "n": len(records),
                    "n_unsafe": sum(unsafe),
                    "scoring_s_both_models": secs[sig],
                }
            )
    return rows


def merge_rows(run_dir: Path, records, args) -> list[dict]:
    """Seconds of both signals on M1 with its LoRA adapter kept apart vs merged (medians of 3)."""
    from forgetfilter.models import is_peft_model, load_model, merge_for_inference

    apart, tok = load_model(run_dir / "m1" / "model", device=args.device, dtype="fp32")
    if not is_peft_model(apart):
        return []
    merged = merge_for_inference(  # float32 on every device: merging is what is timed
        load_model(run_dir / "m1" / "model", device=args.device, dtype="fp32")[0]
    )
    kw = {"batch_size": args.batch_size, "max_length": args.max_length, "progress": False}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(3):
        for sig in ("loss", "rouge"):
            for name, model in (("apart", apart), ("merged", merged)):
                run = functools.partial(signals.score, model, tok, records, sig, **kw)
                s, _ = C.timed(run, args.device)
                times.setdefault((sig, name), []).append(s)
    rows = []
    for sig in ("loss", "rouge"):
        a, m = (float(np.median(times[sig, n])) for n in ("apart", "merged"))
        rows.append(
            {"signal": sig, "n": len(records), "apart_s": a, "merged_s": m, "speedup": a / m}
        )
    return rows


def merge_precision_rows(run_dir: Path, records, args) -> list[dict]:
    """Loss forgetting (relative, M1 -> M2) in bf16, adapters apart vs merged: agreement with fp32."""
    from forgetfilter.metrics import auroc
    from forgetfilter.models import load_model

    unsafe = [ex.label == "unsafe" for ex in records]
    kw = {"batch_size": args.batch_size, "max_length": args.max_length, "progress": False}

    def forgetting(dtype: str, merged: bool) -> np.ndarray:
        nll = []
        for stage in ("m1", "m2"):
            model, tok = load_model(run_dir / stage / "model", device=args.device, dtype=dtype)
            model = model.merge_and_unload() if merged else model
            nll.append(inference.response_nll(model, tok, records, **kw))
        return recipes.forgetting(nll[0], nll[1], "loss", "relative")

    ref = forgetting("fp32", False)
    rows = []
    for name, merged in (("bf16, adapter apart", False), ("bf16, adapter merged", True)):
        f = forgetting("bf16", merged)
        corr = float(np.corrcoef(ref, f)[0, 1])
        rank = float(spearmanr(ref, f).statistic)
        rows.append(
            {
                "scoring": name,
                "corr_with_fp32": corr,
                "spearman_with_fp32": rank,
                "auroc_unsafe": auroc(unsafe, f),
            }
        )
    return [
        {
            "scoring": "fp32, adapter apart",
            "corr_with_fp32": 1.0,
            "spearman_with_fp32": 1.0,
            "auroc_unsafe": auroc(unsafe, ref),
        }
    ] + rows


def precision_main(args: argparse.Namespace) -> dict:
    """`--precision`: the bf16-vs-fp32 scoring table on a run's first `--n` noisy records."""
    run_dir, records = run_records(args, "--precision")
    print(f"# loss forgetting in bf16 vs fp32: run={run_dir} records={len(records)}", flush=True)
    rows = merge_precision_rows(run_dir, records, args)
    print(C.table(rows))
    out = {"args": vars(args), "merge_precision": rows}
    C.save_json(args.json, out)
    return out


def main(argv: list[str] | None = None) -> dict:
    """Print the cost table (and the AUROC table with --run-dir)."""
    args = parse_args(argv)
    torch.manual_seed(0)
    if args.authors:
        return authors_main(args)
    if args.precision:
        return precision_main(args)
    records = C.read_records(args.records, args.n) if args.records else C.synthetic_records(args.n)
    model, tok = load(args.model, args.device, records)
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"# signal cost: model={args.model} ({n_params / 1e6:.2f}M params) records={len(records)} "
        f"device={args.device} batch={args.batch_size} max_length={args.max_length}",
        flush=True,
    )
    rows = cost_rows(model, tok, records, args)
    print(C.table(rows))
    out = {"args": vars(args), "cost": rows}
    ratio = rows[1]["ratio_vs_loss"]
    print(
        f"\nrouge (default budget) / loss = {ratio:.1f}x  (target >= 20x: {'MET' if ratio >= 20 else 'NOT MET'})"
    )
    if args.run_dir:
        run_records = C.read_records(run_inputs(Path(args.run_dir))["noisy"])
        arows = auroc_rows(Path(args.run_dir), run_records, args)
        print("\n# AUROC of forgetting for label == unsafe (M1 -> M2 of the run)")
        print(C.table(arows))
        out["auroc"] = arows
        mrows = merge_rows(Path(args.run_dir), run_records, args)
        if mrows:
            print("\n# M1's LoRA adapter kept apart vs merged into the float32 weights")
            print(C.table(mrows))
            out["merge"] = mrows
            prows = merge_precision_rows(Path(args.run_dir), run_records, args)
            print("\n# why half precision keeps the adapter apart: loss forgetting vs fp32")
            print(C.table(prows))
            out["merge_precision"] = prows
    C.save_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
