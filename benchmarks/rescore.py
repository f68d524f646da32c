"""Another signal on the models of finished `realistic.py` runs: M0, M1 and M2 scored again, no
training (issue 17: per-token statistics on the same models).

For every run recorded in `RUNS/results.json` it scores the noisy examples with `--signal` on
the run's M0 (the model), `m1/model` and `m2/model`, writes the three score files and a
`scores.jsonl` in the run's format under `OUT/runs/TAG`, and ranks them with every recipe the
signal allows, as `realistic.py` does. Tables give mean ± sd over the runs' seeds.

    python benchmarks/rescore.py --runs /tmp/realistic --signal tail_loss --out /tmp/rescored
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from realistic import evaluate, run_config, run_tag, write_results

from forgetfilter import io
from forgetfilter.pipeline import load_inputs, score_stage
from forgetfilter.recipes import ScoreTable, apply


def rescore(runs: Path, tag: str, args: argparse.Namespace, seed: int, signal: str, out: Path):
    """Score one run's noisy examples on its M0, M1 and M2 with `signal`; write scores.jsonl."""
    cfg = run_config(args, seed)
    cfg.signal = signal
    data, run = runs / "data" / tag, runs / "runs" / tag
    noisy, _, _ = load_inputs(out, data / "noisy.jsonl", data / "safe.jsonl", cfg, write=False)
    models = {
        "m0": cfg.screener,
        "before": str(run / "m1" / "model"),
        "after": str(run / "m2" / "model"),
    }
    values = {
        k: score_stage(path, noisy, out / f"scores_{k}.jsonl", cfg, progress=False)
        for k, path in models.items()
    }
    table = ScoreTable(signal, values["before"], values["after"], values["m0"])
    default = apply(cfg.normalise, table)
    rows = [
        {
            "id": ex.id,
            "m0": float(values["m0"][i]),
            "before": float(values["before"][i]),
            "after": float(values["after"][i]),
            "forgetting": float(default[i]),
            "removed": False,
        }
        for i, ex in enumerate(noisy)
    ]
    io.write_jsonl(out / "scores.jsonl", rows)
    for name in ("config.json", "summary.json"):  # the run's settings and its recipe
        io.write_json(out / name, io.read_json(run / name))
    return evaluate(out, io.read_json(data / "labels.json"), signal, False, data / "noisy.jsonl")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", required=True, help="the --out of a realistic.py run")
    p.add_argument("--signal", default="tail_loss")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    runs, out = Path(a.runs), Path(a.out)
    recorded = io.read_json(runs / "results.json")
    args = argparse.Namespace(**recorded["args"])
    results = []
    for r in recorded["runs"]:
        tag = run_tag(args, r["risk"], r["share"], r["safe_set"], r["seed"])
        res = rescore(runs, tag, args, r["seed"], a.signal, out / "runs" / tag)
        res |= {k: r[k] for k in ("risk", "share", "safe_set", "seed")}
        results.append(res)
        print(tag, json.dumps({k: round(v["auroc"] or 0, 3) for k, v in res["ranking"].items()}))
    write_results(out, vars(a), results)


if __name__ == "__main__":
    main()
