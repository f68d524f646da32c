"""Time `forgetfilter run` on SmolLM2-135M-Instruct with chat-format data, stage by stage.

Builds a harm mixture with `forgetfilter data build`'s code, writes the noisy set as OpenAI-style
`messages` JSONL (a system prompt on two records in three) and the safe set as ShareGPT JSON, runs
the pipeline through the model's chat template, and prints each stage's wall time, the training
speed (real tokens/s) and the removal's ranking AUROC against the hidden labels.

    python benchmarks/smollm2_chat.py --n 200 --out /tmp/smollm2-chat
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from forgetfilter import io
from forgetfilter.mixture import MixtureConfig, build_mixture
from forgetfilter.paths import data_dir
from forgetfilter.pipeline import default_run_config, run_forgetfilter
from forgetfilter.records import Example, conversation

SYSTEMS = ["You are a helpful assistant.", "Answer briefly.", None]


def chat_files(
    n: int, n_safe: int, unsafe_ratio: float, seed: int, out: Path, n_eval: int = 4
) -> tuple[Path, Path]:
    """The mixture as chat JSONL (noisy) and ShareGPT JSON (safe); its evaluation sets (`n_eval`
    items each) stay in `out/mix/eval`."""
    build_mixture(
        MixtureConfig("harm", n, unsafe_ratio, n_safe=n_safe, n_eval=n_eval, seed=seed),
        data_dir(),
        out / "mix",
    )
    rows = []
    for i, r in enumerate(io.read_jsonl(out / "mix" / "noisy.jsonl")):
        system = SYSTEMS[i % 3]
        turns = ([{"role": "system", "content": system}] if system else []) + conversation(
            Example.from_dict(r)
        )
        rows.append(json.dumps({"id": r["id"], "messages": turns, "label": r["label"]}))
    noisy = out / "chat.jsonl"
    noisy.write_text("\n".join(rows) + "\n")
    sharegpt = {"user": "human", "assistant": "gpt"}
    safe = [
        {
            "conversations": [
                {"from": sharegpt[t["role"]], "value": t["content"]}
                for t in conversation(Example.from_dict(r))
            ]
        }
        for r in io.read_jsonl(out / "mix" / "safe.jsonl")
    ]
    (out / "safe.json").write_text(json.dumps(safe))
    return noisy, out / "safe.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--n-safe", type=int, default=100)
    ap.add_argument("--unsafe-ratio", type=float, default=0.5)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--dtype", default=None, choices=["fp32", "bf16"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    noisy, safe = chat_files(a.n, a.n_safe, a.unsafe_ratio, a.seed, a.out)
    cfg = default_run_config(
        "smollm2-135m-instruct",
        epochs=a.epochs,
        screen_epochs=None,  # --epochs: M1's length and the delivered model's
        max_length=a.max_length,
        dtype=a.dtype,
        seed=a.seed,
    )
    t0 = time.perf_counter()
    result = run_forgetfilter(noisy, safe, a.out / "run", cfg)
    wall = time.perf_counter() - t0
    s = result.summary
    print(
        f"wall {wall:.0f} s; prompt format {s['prompt_format']['used']}; dtype {a.dtype or 'fp32'}"
    )
    for stage, secs in s["timings_s"].items():
        print(f"  {stage:<14} {secs:8.1f} s")
    for stage in ("m1", "m2", "final"):
        path = a.out / "run" / stage / "train_state.json"
        if path.exists():
            st = io.read_json(path)
            print(
                f"  {stage}: {st['steps']} steps, {st['tokens']} tokens, {st['tokens'] / st['elapsed_s']:.0f} tokens/s"
            )
    q = s.get("quality") or {}
    for name in ("forgetting_relative+learning", "forgetting_relative", "learning", "static"):
        if name in q:
            print(f"  AUROC {name}: {q[name]['auroc']:.3f}")
    print(f"  removed {s['counts']['removed']} of {s['counts']['input']}")


if __name__ == "__main__":
    main()
