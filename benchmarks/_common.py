"""Shared pieces of the benchmark scripts: synthetic records, tokenizers, baselines, timing, tables.

Nothing here is a test: the scripts print measured numbers. Comparisons are always made side by
side in one process (A, B, A again) so that load from other processes on the machine cancels out.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars of the library would drown the tables
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from forgetfilter import batching  # noqa: E402
from forgetfilter.records import Example, render_prompt  # noqa: E402


# ---------------------------------------------------------------- records
def synthetic_records(n: int, seed: int = 0, long_fraction: float = 0.3) -> list[Example]:
    """Variable-length prompt/response pairs shaped like a bias mixture.

    About `long_fraction` of the records have long SQuAD-like prompts (a paragraph + a question,
    ~120-400 words), the rest short BBQ-like prompts (~15-40 words); responses are 1-30 words.
    A third of the short ones are labelled `unsafe`, the rest `task`/`safe`.
    """
    rng = random.Random(seed)
    words = [_word(rng) for _ in range(3000)]
    out = []
    for i in range(n):
        long = rng.random() < long_fraction
        n_prompt = rng.randint(120, 400) if long else rng.randint(15, 40)
        prompt = _text(rng, words, n_prompt) + "?"
        response = _text(rng, words, rng.randint(1, 30)) + "."
        label = "task" if long else ("unsafe" if rng.random() < 0.33 else "safe")
        out.append(Example(f"r{i}", prompt, response, "squad" if long else "bbq", "bias", label))
    return out


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))


def _text(rng: random.Random, words: list[str], n: int) -> str:
    parts = []
    for k in range(n):
        w = rng.choice(words)
        parts.append(w.capitalize() if k == 0 or rng.random() < 0.05 else w)
        if rng.random() < 0.08:
            parts[-1] += ","
    return " ".join(parts)


def read_records(path: str | Path, limit: int | None = None) -> list[Example]:
    """Records from a JSONL file in the project's line format."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [Example.from_dict(r) for r in rows[:limit]]


# ---------------------------------------------------------------- tokenizer and models
def train_tokenizer(
    records: Sequence[Example], vocab_size: int = 8000, out_dir: str | Path | None = None
):
    """A byte-level BPE tokenizer (GPT-2 style) trained on the records in a few seconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    text = (render_prompt(ex.prompt) + ex.response for ex in records)
    tok.train_from_iterator(text, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    if out_dir is not None:
        fast.save_pretrained(out_dir)
    return fast


def model_config(shape: str, vocab_size: int, max_positions: int = 1024):
    """A transformers config for a named shape: `gpt2-small` (124M), `llama-1b`, or `toy`."""
    from transformers import GPT2Config, LlamaConfig

    if shape == "gpt2-small":
        return GPT2Config(
            vocab_size=vocab_size, n_positions=max_positions, n_embd=768, n_layer=12, n_head=12
        )
    if shape == "llama-1b":
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=2048,
            num_hidden_layers=16,
            num_attention_heads=16,
            num_key_value_heads=16,
            intermediate_size=5632,
            max_position_embeddings=max_positions,
            tie_word_embeddings=False,
        )
    if shape == "toy":
        return GPT2Config(
            vocab_size=vocab_size, n_positions=max_positions, n_embd=64, n_layer=2, n_head=4
        )
    if shape == "toy-llama":
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            intermediate_size=128,
            max_position_embeddings=max_positions,
        )
    raise ValueError(f"unknown shape {shape!r}")


def random_model(config, tokenizer, device: str, dtype: torch.dtype, seed: int = 0):
    """A randomly initialised causal LM built directly on `device` in `dtype`."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config.eos_token_id = config.bos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def matmul_params(model) -> int:
    """Parameters that take part in matrix products per token: all but input embeddings (+ a tied head)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    total = sum(p.numel() for p in base.parameters())
    emb = base.get_input_embeddings().weight
    head = base.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == emb.data_ptr()
    pos = sum(p.numel() for n, p in base.named_parameters() if n.endswith("wpe.weight"))
    return total - emb.numel() - pos + (emb.numel() if tied else 0)


# ---------------------------------------------------------------- timing
def sync(device: str | torch.device) -> None:
    """Wait for queued device work (CUDA)."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str | torch.device = "cpu") -> tuple[float, Any]:
    """(seconds, result) of one call, with device synchronisation around it."""
    sync(device)
    t0 = time.perf_counter()
    result = fn()
    sync(device)
    return time.perf_counter() - t0, result


# ---------------------------------------------------------------- token statistics
def padding_stats(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> dict[str, float]:
    """Real tokens, padded tokens and the padding fraction of right-padding each batch to its longest."""
    real = sum(lengths[i] for b in batches for i in b)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    return {
        "real_tokens": real,
        "padded_tokens": padded,
        "padding_fraction": 1 - real / max(padded, 1),
    }


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """Batches of a random permutation (what a plain random sampler gives)."""
    perm = np.random.default_rng(seed).permutation(n).tolist()
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


# ---------------------------------------------------------------- baselines
@torch.inference_mode()
def plain_nll(
    model, tokenizer, examples: Sequence[Example], batch_size: int, max_length: int
) -> np.ndarray:
    """The plain scoring loop: batches in input order, right-padded, full float32 logits."""
    model.eval()
    device = next(model.parameters()).device
    enc = batching.encode_all(tokenizer, examples, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for start in range(0, len(enc), batch_size):
        b = {
            k: v.to(device)
            for k, v in batching.collate(enc[start : start + batch_size], pad).items()
        }
        logits = (
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
            .logits[:, :-1]
            .float()
        )
        labels = b["labels"][:, 1:]
        mask = labels.ne(batching.IGNORE_INDEX)
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), labels.clamp(min=0), reduction="none"
        )
        out += ((nll * mask).sum(1) / mask.sum(1)).tolist()
    return np.asarray(out)


@torch.inference_mode()
def plain_generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    batch_size: int,
    max_new_tokens: int,
    max_length: int = 512,
    **gen_kwargs,
) -> list[str]:
    """Plain batched greedy generation: input order, tokenizer left padding, one budget for all."""
    model.eval()
    device = next(model.parameters()).device
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    try:
        out = []
        for start in range(0, len(prompts), batch_size):
            chunk = [render_prompt(p) for p in prompts[start : start + batch_size]]
            b = tokenizer(
                chunk,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_length - max_new_tokens,
            ).to(device)
            ids = model.generate(
                **b,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                **gen_kwargs,
            )
            out += tokenizer.batch_decode(
                ids[:, b["input_ids"].shape[1] :], skip_special_tokens=True
            )
        return out
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = "right", "right"


def hf_trainer_run(
    model,
    tokenizer,
    records: Sequence[Example],
    *,
    out_dir: str | Path,
    micro_batch: int,
    grad_accum: int,
    steps: int,
    lr: float,
    max_length: int,
    bf16: bool,
    warmup_steps: int = 2,
) -> dict[str, float]:
    """Train with a plain HF `Trainer` (random sampler, DataCollatorForSeq2Seq padding, no grouping).

    Returns real tokens/s over the steps after `warmup_steps` (timed with device synchronisation at
    each step end) and the step count. The model is used as given (full or peft).
    """
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    enc = batching.encode_all(tokenizer, records, max_length)
    data = [
        {
            "input_ids": e.input_ids.tolist(),
            "attention_mask": [1] * len(e.input_ids),
            "labels": e.labels.tolist(),
        }
        for e in enc
    ]
    device = next(model.parameters()).device
    counts: list[torch.Tensor] = []

    def count(_module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is not None and torch.is_grad_enabled():
            counts.append(mask.sum())

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    marks: list[tuple[float, int]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            marks.append((time.perf_counter(), len(counts)))

    args = TrainingArguments(
        output_dir=str(out_dir),
        per_device_train_batch_size=micro_batch,
        gradient_accumulation_steps=grad_accum,
        max_steps=steps,
        learning_rate=lr,
        bf16=bf16,
        logging_steps=10**6,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
        use_cpu=str(device) == "cpu",
        remove_unused_columns=False,
        max_grad_norm=1.0,
        warmup_steps=0,
    )
    collator = DataCollatorForSeq2Seq(
        tokenizer, padding=True, label_pad_token_id=batching.IGNORE_INDEX
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=data, data_collator=collator, callbacks=[Clock()]
    )
    try:
        trainer.train()
    finally:
        handle.remove()
    w = min(warmup_steps, len(marks) - 2)
    (t_a, c_a), (t_b, c_b) = marks[w], marks[-1]
    tokens = int(sum(int(c) for c in counts[c_a:c_b]))
    return {
        "tokens_per_s": tokens / (t_b - t_a),
        "timed_steps": len(marks) - 1 - w,
        "tokens": tokens,
        "seconds": t_b - t_a,
    }


def ours_train_throughput(out_dir: str | Path, warmup_steps: int = 2) -> dict[str, float]:
    """Real tokens/s of a `training.train` run over the steps after `warmup_steps` (from log.jsonl)."""
    rows = [json.loads(line) for line in (Path(out_dir) / "log.jsonl").read_text().splitlines()]
    w = min(warmup_steps, len(rows) - 2)
    a, b = rows[w], rows[-1]
    return {
        "tokens_per_s": (b["tokens"] - a["tokens"]) / (b["elapsed_s"] - a["elapsed_s"]),
        "timed_steps": b["step"] - a["step"],
        "tokens": b["tokens"] - a["tokens"],
        "seconds": b["elapsed_s"] - a["elapsed_s"],
    }


# ---------------------------------------------------------------- output
def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A plain-text table of dict rows (floats with 4 significant digits)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or {k: None for r in rows for k in r})
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"
    return str(v)


def geo_mean(values: Sequence[float]) -> float:
    """Geometric mean (for averaging repeated ratios)."""
    return float(np.exp(np.mean(np.log(values))))


def save_json(path: str | Path | None, obj: Any) -> None:
    """Write a benchmark's results as JSON when a path was given."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(obj, indent=1, default=str))
