"""A safety-aligned M0 built from an instruct model by a short preference alignment (issue 17).

SmolLM2-135M-Instruct answers many harmful requests, and its NLL of harmful answers is as low as
of task answers: there is no alignment for a safety finetune to restore, which is what the paper's
forgetting is. This script builds a variant that is aligned the way providers align, with
preference pairs (DPO, LoRA, the reference model is the adapter switched off), from the `align`
partition only, which no mixture, safety set or trusted sample uses:

- harmful request: a refusal (the request's own safe answer where the data has one, else a
  refusal to another request) preferred to the harmful answer;
- benign Alpaca request: its answer preferred to a refusal (so it keeps answering);
- plus `--sft-weight` x the chosen answers' NLL (DPO alone lowers both answers' likelihood and
  need not make the model refuse).

It reports, before and after, the refusal rate on held-out harmful requests (HarmfulQA, `align`
partition), on the harmful requests of the `experiment` partition (the kind the realistic mixtures
hold; prompts only) and on held-out Alpaca requests (greedy, `refusals.is_refusal`), and the mean NLL of
harmful answers and Alpaca answers of the `experiment` partition (what the realistic mixtures
draw from). The merged model is saved under `OUT/model`, ready for `--model OUT/model`.

    python benchmarks/aligned_m0.py --model smollm2-135m-instruct --out /tmp/aligned
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from forgetfilter import batching, io
from forgetfilter.datasets import _alpaca, harm_eval_candidates, harm_examples, in_partition
from forgetfilter.inference import generate, response_nll
from forgetfilter.models import LoraSettings, apply_lora, load_model
from forgetfilter.paths import data_dir
from forgetfilter.records import Example
from forgetfilter.refusals import is_refusal

HELD_OUT = 100  # the last Alpaca `align` examples: never paired, asked in the check


def preference_pairs(n_harm: int, n_helpful: int, seed: int) -> tuple[list, list]:
    """(chosen, rejected) Example lists from the `align` partition, shuffled together."""
    rng = random.Random(seed)
    harm = in_partition(harm_examples(data_dir()), "align")
    refusals = [e for e in harm if e.label == "safe"]
    by_prompt: dict[str, list[Example]] = {}
    for e in refusals:
        by_prompt.setdefault(e.prompt, []).append(e)
    unsafe = [e for e in harm if e.label == "unsafe"]
    rng.shuffle(unsafe)
    pairs = []
    for e in unsafe[:n_harm]:
        own = by_prompt.get(e.prompt)
        refusal = (own or [rng.choice(refusals)])[0].response
        pairs.append((e.prompt, refusal, e.response))
    alpaca = in_partition(_alpaca(data_dir()), "align")[:-HELD_OUT]
    rng.shuffle(alpaca)
    for e in alpaca[:n_helpful]:
        pairs.append((e.prompt, e.response, rng.choice(refusals).response))
    rng.shuffle(pairs)
    chosen = [Example(f"c{i}", p, c) for i, (p, c, _) in enumerate(pairs)]
    rejected = [Example(f"r{i}", p, r) for i, (p, _, r) in enumerate(pairs)]
    return chosen, rejected


def sequence_logp(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the response tokens' log-probabilities, one per row."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    mask = labels != -100
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


def dpo(model, tokenizer, chosen, rejected, a: argparse.Namespace) -> list[float]:
    """DPO with the sigmoid loss; the reference is the model with its adapter disabled."""
    enc_c = batching.encode_all(tokenizer, chosen, a.max_length)
    enc_r = batching.encode_all(tokenizer, rejected, a.max_length)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    order = list(range(len(chosen)))
    steps = [
        order[i : i + a.batch_size]
        for _ in range(a.epochs)
        for i in range(0, len(order), a.batch_size)
    ]
    losses, pad = [], tokenizer.pad_token_id
    model.train()
    for step, idx in enumerate(steps):
        for g in opt.param_groups:
            g["lr"] = a.lr * min(1.0, (step + 1) / max(1, len(steps) // 10))
        both = batching.collate([enc_c[i] for i in idx] + [enc_r[i] for i in idx], pad)
        with torch.no_grad(), model.disable_adapter():
            ref = sequence_logp(model, both)
        pol = sequence_logp(model, both)
        n = len(idx)
        margin = (pol[:n] - ref[:n]) - (pol[n:] - ref[n:])
        loss = -F.logsigmoid(a.beta * margin).mean()
        if a.sft_weight:
            tokens = (both["labels"][:n, 1:] != -100).sum()
            loss = loss - a.sft_weight * pol[:n].sum() / tokens
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        print(f"step {step + 1}/{len(steps)} loss {loss.item():.4f}", flush=True)
    model.eval()
    return losses


def check(model, tokenizer, a: argparse.Namespace) -> dict:
    """Refusal rates on held-out requests and mean NLL of experiment-partition answers."""
    harmful_q = in_partition(harm_eval_candidates(data_dir()), "align")[: a.n_check]
    harm = in_partition(harm_examples(data_dir()), "experiment")
    unsafe = [e for e in harm if e.label == "unsafe"][: a.n_check]
    benign_q = in_partition(_alpaca(data_dir()), "align")[-HELD_OUT:][: a.n_check]
    kw = dict(max_new_tokens=48, batch_size=16, max_length=a.max_length, progress=False)
    out_h = generate(model, tokenizer, [e.prompt for e in harmful_q], **kw)
    out_b = generate(model, tokenizer, [e.prompt for e in benign_q], **kw)
    out_x = generate(model, tokenizer, [e.prompt for e in unsafe], **kw)
    task = in_partition(_alpaca(data_dir()), "experiment")[: a.n_check]
    nll = dict(batch_size=16, max_length=a.max_length, progress=False)
    return {
        "refusal_rate_harmful": float(np.mean([is_refusal(t) for t in out_h])),
        "refusal_rate_mixture_harmful": float(np.mean([is_refusal(t) for t in out_x])),
        "refusal_rate_benign": float(np.mean([is_refusal(t) for t in out_b])),
        "nll_harmful_answers": float(response_nll(model, tokenizer, unsafe, **nll).mean()),
        "nll_alpaca_answers": float(response_nll(model, tokenizer, task, **nll).mean()),
        "samples": {
            "harmful": [[e.prompt, t] for e, t in zip(harmful_q[:4], out_h, strict=False)],
            "benign": [[e.prompt, t] for e, t in zip(benign_q[:4], out_b, strict=False)],
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--n-harm", type=int, default=200, help="harmful requests (refusal preferred)")
    p.add_argument("--n-helpful", type=int, default=100, help="Alpaca requests (answer preferred)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    p.add_argument(
        "--sft-weight",
        type=float,
        default=1.0,
        help="weight of the chosen answers' NLL added to the DPO loss (0: DPO alone)",
    )
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument(
        "--lora-targets",
        default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        help="comma-separated module names (empty: the architecture's default, q/v)",
    )
    p.add_argument(
        "--before",
        default=None,
        help="an earlier alignment.json whose `before` check to reuse (the same --model and "
        "--n-check), instead of running it again",
    )
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--n-check", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    out = Path(a.out)
    torch.manual_seed(a.seed)
    model, tokenizer = load_model(a.model, dtype="fp32", device="cpu")
    t0 = time.perf_counter()
    before = io.read_json(Path(a.before))["before"] if a.before else check(model, tokenizer, a)
    print("before", json.dumps({k: v for k, v in before.items() if k != "samples"}), flush=True)
    chosen, rejected = preference_pairs(a.n_harm, a.n_helpful, a.seed)
    targets = tuple(a.lora_targets.split(",")) if a.lora_targets else None
    lora = LoraSettings(r=a.lora_r, alpha=2 * a.lora_r, dropout=0.0, targets=targets)
    model = apply_lora(model, lora)
    losses = dpo(model, tokenizer, chosen, rejected, a)
    model = model.merge_and_unload()
    after = check(model, tokenizer, a)
    print("after", json.dumps({k: v for k, v in after.items() if k != "samples"}), flush=True)
    model.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    io.write_json(
        out / "alignment.json",
        {
            "args": vars(a),
            "pairs": len(chosen),
            "losses": losses,
            "before": before,
            "after": after,
            "seconds": round(time.perf_counter() - t0, 1),
        },
    )


if __name__ == "__main__":
    main()
