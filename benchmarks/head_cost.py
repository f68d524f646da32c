"""Cost of the `head_loss` signal against `loss` on the same records and model (issue 17).

Both score the same chat records (`--records`, e.g. a `realistic.py` run's `noisy.jsonl`) on one
model, side by side in one process in the order loss, head_loss, loss, head_loss, ... so machine
load affects both alike. `head_loss` cuts each record after its response's first tokens before
the forward pass; the table gives the seconds of each pass, the tokens each signal feeds the
model and the ratio of the mean seconds.

    python benchmarks/head_cost.py --model /tmp/aligned/model \\
        --records /tmp/realistic/data/harm-s0.05-mixed-seed0/noisy.jsonl --max-length 256
"""

from __future__ import annotations

import argparse

import _common as C  # noqa: N812
import numpy as np

from forgetfilter import signals
from forgetfilter.batching import encode_all
from forgetfilter.head_loss import keep_head
from forgetfilter.models import load_model
from forgetfilter.readers import read_examples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--records", required=True, help="a JSONL file of chat records")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dtype", default=None)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args()
    records, _ = read_examples(a.records)
    model, tokenizer = load_model(a.model, dtype=a.dtype, device="cpu")
    enc = encode_all(tokenizer, records, a.max_length)
    tokens = {
        "loss": sum(len(e.input_ids) for e in enc),
        "head_loss": sum(len(e.input_ids) for e in keep_head(enc)),
    }
    kw = {"batch_size": a.batch_size, "max_length": a.max_length, "progress": False}
    seconds: dict[str, list[float]] = {"loss": [], "head_loss": []}
    for _ in range(a.repeats):
        for name in seconds:
            t, _ = C.timed(lambda n=name: signals.score(model, tokenizer, records, n, **kw))
            seconds[name].append(t)
    rows = [
        {
            "signal": name,
            "records": len(records),
            "tokens": tokens[name],
            "seconds": " / ".join(f"{t:.1f}" for t in ts),
            "mean s": float(np.mean(ts)),
        }
        for name, ts in seconds.items()
    ]
    ratio = np.mean(seconds["loss"]) / np.mean(seconds["head_loss"])
    print(C.table(rows))
    print(
        f"loss / head_loss: {ratio:.2f}x time, {tokens['loss'] / tokens['head_loss']:.2f}x tokens"
    )
    C.save_json(a.json, {"args": vars(a), "rows": rows, "ratio": ratio})


if __name__ == "__main__":
    main()
