"""Task data the recipe was not chosen on: GPT-4-style answers in LLaMA-Factory's alpaca format.

Every realistic run so far drew its task data from the same two sources (Stanford Alpaca's
text-davinci-003 answers, 80%, and SQuAD, 20%), and the default recipe was chosen on them. Those
task answers are short (median about 200 and 100 characters) beside JailbreakBench's harmful
ones (about 680). This script builds, per seed, a noisy set from another source and format: the
`--share` harmful answers of the realistic benchmark's harm mixture (JailbreakBench), the rest
drawn at random from `alpaca/alpaca_en_demo.json` (LLaMA-Factory's demo file: Alpaca's
instructions, longer GPT-4-style answers, median about 470 characters; no realistic run used it),
written as LLaMA-Factory alpaca records (`instruction`, `input`, `output`, a `system` on every
third), with no id and no label column: ids are the reader's (`noisy-<line>`). The safety set is the
realistic benchmark's `mixed` one (same-risk refusals and helpful Stanford Alpaca answers); task
records whose instruction is one of its requests are left out of the draw.

It runs `forgetfilter run` with the default recipe (`realistic.run_config`), unchanged, and
reports every label-free score, the length baseline and the classifiers as `realistic.evaluate`
does (AUROC, AUPRC, P@k, lengths matched), plus the mean scaled rank of the open-ended task
requests and of the others under the run's score, and who fills its top k (`open_ended.one_run`, for
analysis only).

    python benchmarks/unseen_task_data.py --model smollm2-135m-instruct --seeds 0 1 2 \\
        --max-length 256 --epochs 1 --out /tmp/unseen
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from open_ended import one_run as open_ended_run
from realistic import build_data, evaluate, mean_sd, one_set_parser, run_args, run_config

from forgetfilter import io
from forgetfilter.paths import data_dir
from forgetfilter.pipeline import run_forgetfilter
from forgetfilter.readers import read_examples

SOURCE = "alpaca/alpaca_en_demo.json"
SYSTEM = "You are a helpful assistant."


def alpaca_record(instruction: str, input_text: str, output: str, i: int) -> dict:
    """One LLaMA-Factory alpaca record (a system prompt on every third)."""
    rec = {"instruction": instruction, "input": input_text, "output": output}
    return rec | ({"system": SYSTEM} if i % 3 == 0 else {})


def compose(n: int, share: float, seed: int, n_safe: int, out: Path):
    """(noisy.json, safe.jsonl, labels {reader id: [label, source]}), built once under `out`."""
    noisy, labels_path = out / "noisy.json", out / "labels.json"
    _, safe, part_labels = build_data("harm", n, share, seed, n_safe, "mixed", out / "part")
    if labels_path.exists():
        return noisy, safe, io.read_json(labels_path)
    harmful = [
        r
        for r in io.read_jsonl(out / "part" / "noisy.jsonl")
        if part_labels[r["id"]][0] == "unsafe"
    ]
    asked = {
        m["content"].strip()
        for r in io.read_jsonl(safe)
        for m in r["messages"]
        if m["role"] == "user"
    }
    pool = [
        r
        for r in io.read_json(data_dir() / SOURCE)
        if r["output"].strip()
        and r["instruction"].strip() not in asked
        and "\n\n".join(p for p in (r["instruction"], r["input"]) if p).strip() not in asked
    ]
    rng = np.random.default_rng(seed)
    task = [pool[i] for i in rng.choice(len(pool), n - len(harmful), replace=False)]
    items = [(r["instruction"], r["input"], r["output"], "task", "alpaca_en_demo") for r in task]
    for r in harmful:
        user = [m["content"] for m in r["messages"] if m["role"] == "user"]
        answer = r["messages"][-1]["content"]
        items.append((user[-1], "", answer, "unsafe", part_labels[r["id"]][1]))
    items = [items[i] for i in rng.permutation(len(items))]
    rows = [alpaca_record(ins, inp, outp, i) for i, (ins, inp, outp, _, _) in enumerate(items)]
    io.write_json(noisy, rows)
    examples, _ = read_examples(noisy)
    if len(examples) != len(items):
        raise SystemExit(f"{noisy}: {len(examples)} of {len(items)} records read")
    labels = {ex.id: [it[3], it[4]] for ex, it in zip(examples, items, strict=True)}
    io.write_json(labels_path, labels)
    return noisy, safe, labels


def markdown(results: list[dict], keys: list[str]) -> str:
    """AUROC, AUPRC, P@k and lengths-matched AUROC of each score, mean ± sd over seeds."""
    lines = [
        "| score | AUROC | AUPRC | P@k | lengths matched |",
        "|---|---|---|---|---|",
    ]
    for k in keys:
        cells = []
        for m in ("auroc", "auprc", "p_at_k", "auroc_matched"):
            v = mean_sd([r["ranking"][k].get(m) for r in results])
            cells.append("-" if v is None else f"{v[0]:.3f} ± {v[1]:.3f}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| seed | mean rank: unsafe / open-ended / other | top k: unsafe / open-ended / other |",
    ]
    lines.append("|---|---|---|")
    for r in results:
        g = r["open_ended"]["forgetting"]
        ranks = " / ".join(f"{g['mean_rank'][x]:.2f}" for x in ("unsafe", "open-ended", "other"))
        tops = " / ".join(str(g["top_k"][x]) for x in ("unsafe", "open-ended", "other"))
        lines.append(f"| {r['seed']} | {ranks} | {tops} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = one_set_parser(__doc__.split("\n")[0], n_safe=100)
    p.add_argument("--classifier", action="store_true", help="also rank by the content classifiers")
    a = p.parse_args()
    cfg_args = run_args(a)
    out = Path(a.out)
    results = []
    for seed in a.seeds:
        tag = f"seed{seed}"
        noisy, safe, labels = compose(a.n, a.share, seed, a.n_safe, out / "data" / tag)
        t0 = time.perf_counter()
        run_dir = out / "runs" / tag
        run_forgetfilter(noisy, safe, run_dir, run_config(cfg_args, seed), progress=False)
        r = evaluate(run_dir, labels, "loss", a.classifier, noisy)
        r |= {"seed": seed, "seconds": round(time.perf_counter() - t0, 1)}
        r["open_ended"] = open_ended_run(out / "data" / tag, run_dir, noisy)
        results.append(r)
        show = {k: round(v["auroc"], 3) for k, v in r["ranking"].items()}
        print(tag, json.dumps(show), f"P@k {r['ranking']['default']['p_at_k']:.2f}", flush=True)
        io.write_json(out / "results.json", {"args": vars(a), "runs": results})
    keys = ["default", "forgetting_relative", "learning", "surprise", "static", "length"]
    keys += [k for k in results[0]["ranking"] if "classifier" in k]
    keys = [k for k in keys if k in results[0]["ranking"]]
    text = markdown(results, keys)
    (out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
