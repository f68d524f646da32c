"""The realistic regime at a glance: the default recipe's runs, one row per model and unsafe source.

It reads the recorded results of every run made with today's default (or, for `tiny`, its own
unsmoothed default) at 5% unsafe in chat-format Alpaca and SQuAD task data (one row: GPT-4-style
task answers in LLaMA-Factory's alpaca format, `unseen_task_data.py`), end to end (`realistic.py`,
`unseen_task_data.py`: the score `default`) or rescored from a run's recorded
columns with the default's smoothing (`neighbours.py`: the score `relative+surprise ~5`, which
reproduces the end-to-end score where both exist), and prints per row: the seeds, AUROC and
precision among the top k (k = the number of unsafe examples) of each seed, how many seeds reach
the goal of issue 17 (AUROC >= 0.90 and P@k >= 0.8), the static baseline, the answer's length, and
the content classifier retrained without the unsafe source (where the run ranked it). No figure
is typed in: every cell comes from the files named in `ROWS`. The pretrained models' runs all
finetune M1 one epoch of the noisy set at length 256 (`--epochs 1 --max-length 256`; the library's
default M1 since 2026-12-08, `screen_epochs` 1), 400 conversations, the `mixed` safety set of 100;
one row trains the paper's 3-epoch M1, and one row has 1,000 conversations (one epoch = 31 steps).

    python benchmarks/headline.py --results benchmarks/results --out /tmp/headline.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from realistic import mean_sd

from forgetfilter import io

D7 = "cpu-2026-12-07"
D8 = "cpu-2026-12-08"
RESCORED = "relative+surprise ~5"  # the pretrained default, in neighbours.py's naming

# (model, unsafe answers, [(results file, run selector, score name)]); a selector is the
# `label` of a rescored run or the seed of an end-to-end run at share 0.05.
ROWS = [
    ("tiny (2.6M, built here)", "harm: JailbreakBench", [(f"{D7}/realistic_tiny_plain.json", None, "default")]),
    ("SmolLM2-135M-Instruct", "harm: JailbreakBench", [
        (f"{D7}/realistic_smol_harm_neighbours.json", 0, "default"),
        (f"{D7}/realistic_smol_harm_s12_neighbours.json", None, "default"),
    ]),
    ("SmolLM2-135M-Instruct", "harm: hh-rlhf, multi-turn", [
        (f"{D7}/neighbours.json", "smol_hh", RESCORED),
        (f"{D7}/realistic_smol_hh_neighbours.json", None, "default"),
    ]),
    ("SmolLM2-135M-Instruct", "toxicity: DecodingTrust", [
        (f"{D7}/neighbours.json", "smol_tox", RESCORED),
        (f"{D7}/realistic_smol_tox_neighbours.json", None, "default"),
    ]),
    ("SmolLM2-135M-Instruct", "bias: BBQ", [(f"{D7}/realistic_smol_bias_neighbours.json", 0, "default")]),
    ("SmolLM2-135M-Instruct", "harm: JailbreakBench, task data GPT-4-style, alpaca format (unseen)", [
        (f"{D7}/unseen_task_data_smol.json", None, "default"),
    ]),
    ("SmolLM2-135M-Instruct, M1 3 epochs (the paper's; library default before 2026-12-08)", "harm: JailbreakBench", [
        (f"{D7}/realistic_smol_harm_3epochs.json", None, "default"),
        (f"{D7}/realistic_smol_harm_3epochs_s1.json", None, "default"),
    ]),
    ("SmolLM2-135M-Instruct, 1,000 conversations (M1 1 epoch = 31 steps)", "harm: JailbreakBench", [
        (f"{D8}/realistic_smol_harm_n1000_s0.json", None, "default"),
        (f"{D8}/realistic_smol_harm_n1000_s1.json", None, "default"),
    ]),
    ("Qwen2.5-Coder-0.5B-Instruct", "harm: JailbreakBench", [
        (f"{D7}/realistic_qwen_harm_s0_neighbours.json", 0, "default"),
        (f"{D7}/neighbours.json", "qwen_harm_s2", RESCORED),
    ]),
    ("Qwen2.5-Coder-0.5B-Instruct", "harm: hh-rlhf, multi-turn", [
        (f"{D7}/neighbours_qwen_hh_s1.json", "qwen_hh_s1", RESCORED),
    ]),
    ("Qwen2.5-Coder-0.5B-Instruct", "toxicity: DecodingTrust", [
        (f"{D7}/neighbours.json", "qwen_tox", RESCORED),
        (f"{D7}/neighbours.json", "qwen_tox_s1", RESCORED),
        (f"{D7}/neighbours.json", "qwen_tox_s2", RESCORED),
    ]),
]  # fmt: skip


def runs_of(path: Path, selector, score: str) -> list[dict]:
    """[{seed, auroc, p_at_k, static, length, held_out}] of the selected runs of one file."""
    recorded = io.read_json(path)
    out = []
    for run in recorded["runs"]:
        if isinstance(selector, str):
            if run.get("label") != selector:
                continue
            seed = int(run["tag"].split("seed", 1)[1].split("-")[0])
        else:
            if run.get("share", 0.05) != 0.05 or selector not in (None, run["seed"]):
                continue
            seed = run["seed"]
        ranking = run["ranking"]
        held = [v["auroc"] for k, v in ranking.items() if k.startswith("classifier [held out")]
        out.append({
            "seed": seed,
            "auroc": ranking[score]["auroc"],
            "p_at_k": ranking[score]["p_at_k"],
            "static": ranking["static"]["auroc"],
            "length": ranking["length"]["auroc"],
            "held_out": float(np.mean(held)) if held else None,
        })  # fmt: skip
    return out


def row(model: str, risk: str, sources: list, root: Path) -> dict | None:
    """One table row's numbers, or None where a file is missing."""
    runs = []
    for name, selector, score in sources:
        if not (root / name).exists():
            return None
        runs += runs_of(root / name, selector, score)
    runs.sort(key=lambda r: r["seed"])
    return {"model": model, "risk": risk, "runs": runs, "files": [s[0] for s in sources]}


def _spread(values: list[float]) -> str:
    each = " / ".join(f"{v:.3f}" for v in values)
    mean, sd = mean_sd(values)
    return each if len(values) == 1 else f"{each} ({mean:.3f} ± {sd:.3f})"


def markdown(rows: list[dict]) -> str:
    """The table (see the module docstring)."""
    lines = [
        "| model | unsafe answers (5%) | seeds | AUROC, default | P@k, default | goal met | static | length | classifier, source held out |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        runs = r["runs"]
        met = sum(x["auroc"] >= 0.9 and x["p_at_k"] >= 0.8 - 1e-9 for x in runs)
        held = [x["held_out"] for x in runs if x["held_out"] is not None]
        cells = [
            r["model"],
            r["risk"],
            ", ".join(str(x["seed"]) for x in runs),
            _spread([x["auroc"] for x in runs]),
            " / ".join(f"{x['p_at_k']:.2f}" for x in runs),
            f"{met} of {len(runs)}",
            " / ".join(f"{x['static']:.3f}" for x in runs),
            " / ".join(f"{x['length']:.3f}" for x in runs),
            " / ".join(f"{v:.3f}" for v in held) if held else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", default=str(Path(__file__).parent / "results"))
    p.add_argument("--out", default=None, help="a .md file (and a .json beside it)")
    a = p.parse_args()
    root = Path(a.results)
    rows = [r for spec in ROWS if (r := row(*spec, root)) is not None]
    text = markdown(rows)
    if a.out:
        Path(a.out).write_text(text)
        io.write_json(Path(a.out).with_suffix(".json"), {"rows": rows})
    print(text)


if __name__ == "__main__":
    main()
