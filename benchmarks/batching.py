"""Throughput of our length-grouped batching vs plain Hugging Face defaults, on variable-length records.

Training: `forgetfilter.training.train` (length-grouped micro-batches) vs a plain `Trainer`
(random sampler, `DataCollatorForSeq2Seq` padding, no group_by_length), same model, records, micro
batch, accumulation, steps, lr and max_length. Scoring: `inference.response_nll` (length-sorted,
sliced logits) vs a plain loop (input order, full logits). Real tokens/s (no padding) and the
padding fraction of each batching. Runs alternate A, B, A, B so machine load affects both alike.

    python benchmarks/batching.py --quick
    python benchmarks/batching.py --model tiny --records data/bias/noisy.jsonl --steps 40
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import _common as C  # noqa: N812
import numpy as np
import torch

from forgetfilter import inference
from forgetfilter.batching import encode_example, length_grouped_batches


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--model", default="tiny", help="model name/path, `tiny`, or `random` (random toy GPT-2)"
    )
    p.add_argument(
        "--records", default=None, help="JSONL records (default: synthetic bias-like mixture)"
    )
    p.add_argument("--n", type=int, default=600)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--finetune", default="full", choices=["full", "lora"])
    p.add_argument("--score-batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2, help="A/B pairs per comparison")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.steps, args.repeats = min(args.n, 300), min(args.steps, 10), 1
    return args


def model_dir_for(args, records, work: Path) -> str:
    """A model path: as given, or a random toy GPT-2 saved under `work`."""
    if args.model != "random":
        from forgetfilter.models import resolve_model

        return resolve_model(args.model)
    tok = C.train_tokenizer(records, vocab_size=2000)
    model = C.random_model(C.model_config("toy", len(tok), 512), tok, "cpu", torch.float32)
    model.save_pretrained(work / "random")
    tok.save_pretrained(work / "random")
    return str(work / "random")


def training_rows(path: str, records, args, work: Path) -> list[dict]:
    """Alternating runs of training.train and a plain Trainer; tokens/s after warm-up."""
    from forgetfilter.models import apply_lora, load_model
    from forgetfilter.training import TrainConfig, train

    cfg = TrainConfig(
        lr=1e-4,
        batch_size=args.micro_batch * args.grad_accum,
        micro_batch_size=args.micro_batch,
        max_steps=args.steps,
        finetune=args.finetune,
        dtype="fp32",
        max_length=args.max_length,
        log_every=1,
        warmup_ratio=0.0,
    )
    res: dict[str, list[dict]] = {"ours": [], "hf": []}
    for _ in range(args.repeats):
        out = work / "ours"
        shutil.rmtree(out, ignore_errors=True)
        train(path, records, out, cfg, progress=False)
        res["ours"].append(C.ours_train_throughput(out, args.warmup_steps))
        model, tok = load_model(path, dtype="fp32", device="cpu", trainable=True)
        if args.finetune == "lora":
            model = apply_lora(model)
        res["hf"].append(
            C.hf_trainer_run(
                model,
                tok,
                records,
                out_dir=work / "hf",
                micro_batch=args.micro_batch,
                grad_accum=args.grad_accum,
                steps=args.steps,
                lr=1e-4,
                max_length=args.max_length,
                bf16=False,
                warmup_steps=args.warmup_steps,
            )
        )
    _, tok = load_model(path, device="cpu")
    lengths = [len(encode_example(tok, ex, args.max_length).input_ids) for ex in records]
    pad_ours = C.padding_stats(lengths, length_grouped_batches(lengths, args.micro_batch, seed=0))
    pad_hf = C.padding_stats(lengths, C.random_batches(len(lengths), args.micro_batch, seed=0))
    hf_rate = float(np.median([r["tokens_per_s"] for r in res["hf"]]))
    rows = []
    for key, name, pad in (
        ("ours", "ours: training.train (length-grouped)", pad_ours),
        ("hf", "HF Trainer (random sampler, Seq2Seq collator)", pad_hf),
    ):
        rates = [r["tokens_per_s"] for r in res[key]]
        rows.append(
            {
                "training": name,
                "real_tok_per_s": float(np.median(rates)),
                "runs": ",".join(f"{x:.0f}" for x in rates),
                "padding_fraction": pad["padding_fraction"],
                "speedup": float(np.median(rates)) / hf_rate,
            }
        )
    return rows


def scoring_rows(path: str, records, args) -> list[dict]:
    """Alternating response_nll and the plain loop; real tokens/s and padding fraction."""
    from forgetfilter.models import load_model

    model, tok = load_model(path, device="cpu", dtype="fp32")
    kw = {"batch_size": args.score_batch, "max_length": args.max_length, "progress": False}
    lengths = [len(encode_example(tok, ex, args.max_length).input_ids) for ex in records]
    real = sum(lengths)
    inference.response_nll(model, tok, records[: args.score_batch], **kw)
    times: dict[str, list[float]] = {"ours": [], "plain": []}
    values = {}
    for _ in range(args.repeats + 1):
        for key, fn in (
            ("plain", lambda: C.plain_nll(model, tok, records, args.score_batch, args.max_length)),
            ("ours", lambda: inference.response_nll(model, tok, records, **kw)),
        ):
            s, values[key] = C.timed(fn)
            times[key].append(s)
    pads = {
        "ours": C.padding_stats(
            lengths, length_grouped_batches(lengths, args.score_batch, 0, shuffle=False)
        ),
        "plain": C.padding_stats(
            lengths,
            [
                list(range(i, min(i + args.score_batch, len(lengths))))
                for i in range(0, len(lengths), args.score_batch)
            ],
        ),
    }
    plain_s = float(np.median(times["plain"]))
    rows = []
    for key, name in (
        ("ours", "ours: response_nll (sorted, sliced logits)"),
        ("plain", "plain loop (input order, full logits)"),
    ):
        s = float(np.median(times[key]))
        rows.append(
            {
                "scoring": name,
                "seconds": s,
                "real_tok_per_s": real / s,
                "runs_s": ",".join(f"{t:.2f}" for t in times[key]),
                "padding_fraction": pads[key]["padding_fraction"],
                "speedup": plain_s / s,
                "max_abs_diff_vs_plain": float(np.abs(values[key] - values["plain"]).max()),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> dict:
    """Print the training and scoring tables."""
    args = parse_args(argv)
    torch.manual_seed(0)
    records = C.read_records(args.records, args.n) if args.records else C.synthetic_records(args.n)
    work = Path(tempfile.mkdtemp(prefix="ff-batching-"))
    try:
        path = model_dir_for(args, records, work)
        print(
            f"# batching benchmark: model={args.model} records={len(records)} micro={args.micro_batch} "
            f"accum={args.grad_accum} steps={args.steps} max_length={args.max_length} "
            f"finetune={args.finetune} threads={torch.get_num_threads()}",
            flush=True,
        )
        srows = scoring_rows(path, records, args)
        print(C.table(srows), flush=True)
        trows = training_rows(path, records, args, work)
        print()
        print(C.table(trows))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for what, rows in (("training", trows), ("scoring", srows)):
        x = rows[0]["speedup"]
        print(
            f"{what}: ours / plain = {x:.2f}x  (target >= 1.5x: {'MET' if x >= 1.5 else 'NOT MET'})"
        )
    out = {"args": vars(args), "training": trows, "scoring": srows}
    C.save_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
