"""Memory of tokenised records: ours (`batching.encode_all`) vs plain Python token lists.

Training and scoring hold every record's token ids while they run. A plain script keeps
`tokenizer(...)["input_ids"]` lists and a labels list per record; `encode_all` keeps one int32
array per record (labels are derived when a batch is built) and tokenises 1024 records at a time.
Both are measured in one process with `tracemalloc` (which also counts NumPy buffers), in the
order plain, ours, plain, ours: bytes kept per token after encoding, the peak while encoding, and
seconds (tracing slows both alike).

    python benchmarks/encode_memory.py --quick
    python benchmarks/encode_memory.py --model tiny --n 100000
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc

import _common as C  # noqa: N812
import numpy as np

from forgetfilter import batching
from forgetfilter.records import render_prompt


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny", help="model name/path whose tokenizer is used")
    p.add_argument(
        "--records", default=None, help="JSONL records (default: synthetic bias-like mixture)"
    )
    p.add_argument("--n", type=int, default=50000, help="records (synthetic ones are repeated)")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--quick", action="store_true", help="2000 records")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 2000)
    return args


def plain_encode(tokenizer, records, max_length: int) -> list[dict[str, list[int]]]:
    """Token id and label lists per record, as a plain finetuning script keeps them."""
    prompts = tokenizer([render_prompt(r.prompt) for r in records])["input_ids"]
    responses = tokenizer([r.response for r in records], add_special_tokens=False)["input_ids"]
    out = []
    for p, r in zip(prompts, responses, strict=True):
        r = list(r) + [tokenizer.eos_token_id]
        labels = [batching.IGNORE_INDEX] * len(p) + r
        out.append({"input_ids": (list(p) + r)[-max_length:], "labels": labels[-max_length:]})
    return out


def measure(fn) -> tuple[dict, object]:
    """Kept and peak traced bytes and seconds of one call; the result is returned alive."""
    gc.collect()
    tracemalloc.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"kept_bytes": kept, "peak_bytes": peak, "seconds": seconds}, result


def main(argv: list[str] | None = None) -> dict:
    """Print the memory table and the ratios plain / ours."""
    from forgetfilter.models import load_model

    args = parse_args(argv)
    _, tok = load_model(args.model, device="cpu")
    base = C.read_records(args.records) if args.records else C.synthetic_records(2000)
    records = [base[i % len(base)] for i in range(args.n)]
    runs = {
        "plain lists": lambda: plain_encode(tok, records, args.max_length),
        "ours (encode_all)": lambda: batching.encode_all(tok, records, args.max_length),
    }
    stats: dict[str, list[dict]] = {k: [] for k in runs}
    n_tokens = 0
    for name in ("plain lists", "ours (encode_all)") * 2:
        s, result = measure(runs[name])
        stats[name].append(s)
        if name.startswith("ours"):
            n_tokens = sum(len(e.input_ids) for e in result)
        del result
    rows = []
    for name, ss in stats.items():
        kept = float(np.median([s["kept_bytes"] for s in ss]))
        peak = float(np.median([s["peak_bytes"] for s in ss]))
        secs = float(np.median([s["seconds"] for s in ss]))
        rows.append(
            {
                "encoding": name,
                "records": len(records),
                "tokens": n_tokens,
                "kept_MB": kept / 1e6,
                "kept_bytes_per_token": kept / n_tokens,
                "peak_MB": peak / 1e6,
                "seconds": secs,
            }
        )
    print(f"# tokenised-record memory: tokenizer of {args.model}, max_length {args.max_length}")
    print(C.table(rows))
    plain, ours = rows
    ratios = {k: plain[k] / ours[k] for k in ("kept_MB", "peak_MB", "seconds")}
    print(
        f"\nplain / ours: kept {ratios['kept_MB']:.1f}x, peak {ratios['peak_MB']:.1f}x, "
        f"time {ratios['seconds']:.2f}x"
    )
    out = {"args": vars(args), "rows": rows, "plain_over_ours": ratios}
    C.save_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
