"""Scoring in resumable shards: shards cut in input order vs by text length (`pipeline.shard_order`).

`forgetfilter run` scores the noisy set in shards of `pipeline.SCORE_SHARD` records, each written
to disk, so a killed run loses at most one shard. Scoring sorts by length inside a shard only, so
shards cut in input order pad every batch to the longest of a random group. Both layouts score
the same records with the same call (`pipeline.score_values`, the loss signal), alternating A, B,
A, B; the table gives seconds, the padding fraction of the batches and the largest score
difference between the two layouts.

    python benchmarks/score_shards.py --quick
    python benchmarks/score_shards.py --records data/bias/noisy.jsonl --n 2048
"""

from __future__ import annotations

import argparse

import _common as C  # noqa: N812
import numpy as np

from forgetfilter import pipeline
from forgetfilter.batching import encode_all, length_grouped_batches


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="model name/path or `tiny`")
    p.add_argument(
        "--records", default=None, help="JSONL records (default: synthetic bias-like mixture)"
    )
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="512 records")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 512)
    return args


def shards(order: list[int]) -> list[list[int]]:
    """Positions of each shard of `pipeline.SCORE_SHARD` records cut from `order` (the baseline)."""
    size = pipeline.SCORE_SHARD
    return [order[s : s + size] for s in range(0, len(order), size)]


def padding(lengths: list[int], layout: list[list[int]], batch_size: int) -> float:
    """Fraction of padded positions when each shard is batched as scoring batches it."""
    real = total = 0
    for shard in layout:
        part = [lengths[i] for i in shard]
        for b in length_grouped_batches(part, batch_size, 0, shuffle=False):
            total += max(part[i] for i in b) * len(b)
            real += sum(part[i] for i in b)
    return 1 - real / total


def score(model, tok, records, layout, cfg) -> np.ndarray:
    """Scores by position, shard by shard as the pipeline's scoring stages run."""
    out = np.zeros(len(records))
    for shard in layout:
        out[shard] = pipeline.score_values(model, tok, [records[i] for i in shard], cfg, False)
    return out


def main(argv: list[str] | None = None) -> dict:
    """Print the two layouts side by side and the ratio."""
    from forgetfilter.models import load_model

    args = parse_args(argv)
    records = C.read_records(args.records, args.n) if args.records else C.synthetic_records(args.n)
    model, tok = load_model(args.model, device=args.device)
    cfg = pipeline.default_run_config(args.model, max_length=args.max_length)
    cfg.score_batch_size = args.batch_size
    lengths = [len(e.input_ids) for e in encode_all(tok, records, args.max_length)]
    layouts = {
        "input order": shards(list(range(len(records)))),
        "by length (ours)": pipeline.shard_positions(records),
    }
    score(model, tok, records[: args.batch_size], [list(range(args.batch_size))], cfg)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in layouts}
    values = {}
    for name in list(layouts) * 2:
        s, values[name] = C.timed(lambda n=name: score(model, tok, records, layouts[n], cfg))
        times[name].append(s)
    rows = [
        {
            "shards": name,
            "records": len(records),
            "shard_size": pipeline.SCORE_SHARD,
            "padding": padding(lengths, layout, args.batch_size),
            "seconds": float(np.median(times[name])),
            "max_abs_diff": float(np.abs(values[name] - values["input order"]).max()),
        }
        for name, layout in layouts.items()
    ]
    print(f"# scoring shards: model={args.model} batch={args.batch_size} device={args.device}")
    print(C.table(rows))
    ratio = rows[0]["seconds"] / rows[1]["seconds"]
    print(f"\ninput-order shards / length-sorted shards = {ratio:.2f}x")
    out = {"args": vars(args), "rows": rows, "speedup": ratio}
    C.save_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
