"""Finished `realistic.py` runs evaluated again with the answer's length controlled (issue 17).

The unsafe answers of a source can be much longer (JailbreakBench's) or shorter (BBQ's) than the
task answers they hide among, so a score can rank them by length alone. For every `--runs DIR`
(the `--out` of a `realistic.py` run; `LABEL=DIR` pools the seeds of several), or results file
of one that stores per-example columns (its `results.json`, as the copies in `benchmarks/results`
from 2026-12-07 on), this re-evaluates each run's recorded scores with today's recipes, no model
is loaded: every label-free score's AUROC and precision among the top k, the AUROC of `length` itself, and the AUROC over the
(unsafe, clean) pairs whose answer lengths differ by at most 1.25x (`metrics.matched_auroc`).
It writes `OUT.json` and prints one table per setting, mean ± sd over the seeds.

    python benchmarks/length_control.py --runs /tmp/realistic_tiny /tmp/realistic_smol \\
        --out /tmp/length_control
"""

from __future__ import annotations

import argparse
from pathlib import Path

from realistic import evaluate, from_examples, mean_sd, recorded_run

from forgetfilter import io

SCORES = (
    "length",
    "default",
    "forgetting_relative",
    "forgetting_none",
    "forgetting_reversion",
    "forgetting_relative+surprise",
    "forgetting_relative+surprise-fisher",
    "forgetting_relative+surprise-max",
    "learning",
    "surprise",
    "static",
    "classifier",
)


def reevaluate(runs: Path, label: str) -> dict[str, list[dict]]:
    """Each setting of a finished run directory -> its seeds' rankings, recomputed."""
    recorded = io.read_json(runs / "results.json")
    classifier = bool(recorded["args"].get("classifier"))
    settings: dict[str, list[dict]] = {}
    for tag in sorted(p.name for p in (runs / "runs").iterdir() if (p / "scores.jsonl").exists()):
        cfg, data, run = recorded_run(runs, tag)
        labels = io.read_json(data / "labels.json")
        r = evaluate(run, labels, cfg.signal, classifier, data / "noisy.jsonl")
        key = f"{label}: {tag.split('-seed')[0]}"
        settings.setdefault(key, []).append({"tag": tag, "ranking": r["ranking"]})
    return settings


def from_results(path: Path, label: str) -> dict[str, list[dict]]:
    """Each setting of a `realistic.py` results file -> its seeds' rankings, recomputed from the
    per-example columns it stores (runs recorded before those columns are skipped)."""
    recorded = io.read_json(path)
    settings: dict[str, list[dict]] = {}
    for run in recorded["runs"]:
        if "examples" in run:
            key = f"{label}: {run['risk']}-s{run['share']:g}-{run['safe_set']}"
            ranking = from_examples(run, recorded["args"]["signal"])
            settings.setdefault(key, []).append({"tag": f"seed{run['seed']}", "ranking": ranking})
    return settings


def table(key: str, seeds: list[dict]) -> str:
    """AUROC, P@k and the length-matched AUROC of the main scores, mean ± sd over the seeds."""
    fmt = lambda v: "n/a" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}"  # noqa: E731
    lines = [f"\n{key} ({len(seeds)} seeds)\n", "| score | AUROC | P@k | AUROC, lengths matched |"]
    lines.append("|---|---|---|---|")
    for score in SCORES:
        rows = [s["ranking"][score] for s in seeds if score in s["ranking"]]
        if rows:
            auroc = mean_sd([r["auroc"] for r in rows])
            p_at_k = mean_sd([r.get("p_at_k") for r in rows])
            matched = mean_sd([r.get("auroc_matched") for r in rows])
            lines.append(f"| {score} | {fmt(auroc)} | {fmt(p_at_k)} | {fmt(matched)} |")
    pairs = mean_sd([s["ranking"]["length"].get("pairs_matched") for s in seeds])
    lines.append(f"| (share of unsafe-clean pairs matched) | | | {fmt(pairs)} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--runs",
        nargs="+",
        required=True,
        help="realistic.py --out directories or results files (with per-example columns), "
        "each PATH or LABEL=PATH (one label pools its paths)",
    )
    p.add_argument("--out", required=True, help="OUT.json is written")
    a = p.parse_args()
    everything: dict[str, list[dict]] = {}
    for entry in a.runs:
        label, _, path = entry.rpartition("=")
        path = Path(path)
        redo = from_results if path.is_file() else reevaluate
        for key, seeds in redo(path, label or path.stem).items():
            everything.setdefault(key, []).extend(seeds)
    io.write_json(Path(a.out).with_suffix(".json"), everything)
    for key, seeds in everything.items():
        print(table(key, seeds))


if __name__ == "__main__":
    main()
