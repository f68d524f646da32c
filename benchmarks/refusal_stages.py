"""Does the noisy finetune break M0's alignment, and does the safety finetune restore it?
(issue 17: the paper's mechanism needs both.)

For finished `realistic.py` runs it asks M0, M1 and M2 the held-out requests of
`aligned_m0.check` (harmful requests of the `align` partition, the kind of harmful requests the
mixtures hold, benign Alpaca requests; greedy, 48 new tokens) and reports each model's refusal
rates and mean NLL of harmful and Alpaca answers that no mixture holds, side by side.

    python benchmarks/refusal_stages.py --runs /tmp/realistic --tags harm-s0.05-mixed-seed0 \\
        --out /tmp/refusal_stages.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from aligned_m0 import check

from forgetfilter import io
from forgetfilter.models import load_model


def stages(runs: Path, tag: str, a: argparse.Namespace) -> dict:
    """`check` on the run's M0, M1 and M2 (`--models`; adapters merged, as scoring does)."""
    run = runs / "runs" / tag
    recorded = io.read_json(run / "config.json")["config"]
    m0 = recorded.get("screen_model") or recorded["model"]
    out = {}
    paths = {"m0": m0, "m1": run / "m1", "m2": run / "m2"}
    for name, path in ((m, paths[m]) for m in a.models):
        t0 = time.perf_counter()
        model, tokenizer = load_model(str(path), merge=True)
        out[name] = check(model, tokenizer, a) | {"seconds": round(time.perf_counter() - t0, 1)}
        line = {k: round(v, 3) for k, v in out[name].items() if isinstance(v, float)}
        print(tag, name, json.dumps(line), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, help="the --out of a realistic.py run")
    p.add_argument("--tags", nargs="+", required=True, help="runs under RUNS/runs")
    p.add_argument("--models", nargs="+", default=["m0", "m1", "m2"], choices=["m0", "m1", "m2"])
    p.add_argument("--n-check", type=int, default=40, help="requests of each kind")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--out", required=True, help="JSON file")
    a = p.parse_args()
    result = {"args": vars(a), "runs": {t: stages(Path(a.runs), t, a) for t in a.tags}}
    io.write_json(Path(a.out), result)


if __name__ == "__main__":
    main()
