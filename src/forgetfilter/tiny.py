"""The built-in tiny aligned model, built offline from the data directory alone.

Recipe (`build_tiny`):

1. a byte-level BPE tokenizer (HF `tokenizers`) trained on a seeded sample of the clean
   pretraining text and the alignment examples (special tokens `<|endoftext|>` = BOS/EOS and
   `<|pad|>`), wrapped as a `PreTrainedTokenizerFast`;
2. a GPT-2 style model (`GPT2Config`, tied embeddings, no dropout) pretrained from scratch on
   packed blocks of the clean text (`datasets.pretraining_texts`), documents separated by EOS;
3. "alignment": full finetuning on the safe alignment examples (`datasets.alignment_examples`)
   in the project's prompt format (`render_prompt(prompt) + response + EOS`, loss on the response).

The result is an ordinary HF model directory (`AutoModelForCausalLM` / `AutoTokenizer`) with
`build_info.json`. The same preset and seed give the same weights on the same machine.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from . import batching, io
from .devices import attention_backends, pick_device
from .errors import ConfigError
from .paths import cache_dir
from .paths import data_dir as default_data_dir
from .records import Example, render_prompt

EOS = "<|endoftext|>"
PAD = "<|pad|>"


@dataclass(frozen=True)
class TinyPreset:
    """Size and training budget of a built-in model.

    Attributes:
        n_layer, n_embd, n_head: transformer shape.
        vocab_size: BPE vocabulary size (incl. special tokens).
        seq_len: context length (= position embeddings = packed block length).
        text_chars: characters of pretraining text sampled (tokenizer training and packing).
        pretrain_tokens: tokens seen in pretraining (steps = tokens / (batch_size × seq_len)).
        batch_size: pretraining blocks per step.
        lr: peak pretraining learning rate (warmup, then cosine decay to 10%).
        align_examples: alignment examples used (0: all).
        align_epochs: passes over them.
        align_batch_size: alignment examples per step.
        align_lr: peak alignment learning rate.
    """

    n_layer: int
    n_embd: int
    n_head: int
    vocab_size: int
    seq_len: int
    text_chars: int
    pretrain_tokens: int
    batch_size: int
    lr: float
    align_examples: int
    align_epochs: int
    align_batch_size: int
    align_lr: float


PRESETS: dict[str, TinyPreset] = {
    # For tests: a few seconds on one CPU core.
    "micro": TinyPreset(2, 64, 2, 1024, 128, 300_000, 60_000, 8, 3e-3, 96, 1, 8, 2e-3),
    # The default: about 2.6M parameters, a few minutes on a 2-core CPU.
    "tiny": TinyPreset(4, 192, 3, 4096, 256, 8_000_000, 1_200_000, 16, 2e-3, 2000, 1, 16, 1e-3),
    # For GPUs: about 42M parameters, the whole pretraining text about twice.
    "small": TinyPreset(12, 512, 8, 8192, 512, 0, 12_000_000, 32, 6e-4, 0, 2, 32, 2e-4),
}


TINY_DEFAULT_PRESET = "tiny"


# ---------------------------------------------------------------- the cached build
def parse_tiny_name(name: str) -> tuple[str, int]:
    parts = name.split(":")
    preset = parts[1] if len(parts) > 1 and parts[1] else TINY_DEFAULT_PRESET
    seed_text = parts[2].lstrip("s") if len(parts) > 2 else "0"
    if len(parts) > 3 or not seed_text.isdigit():
        raise ConfigError(
            f"bad built-in model name {name!r}: use tiny, tiny:PRESET or tiny:PRESET:SEED"
        )
    return preset, int(seed_text)


def tiny_model_dir(preset: str = TINY_DEFAULT_PRESET, seed: int = 0) -> Path:
    """Where `resolve_model` keeps the built-in model for a preset and seed."""
    return cache_dir() / "models" / f"tiny-{preset}-s{seed}"


def ensure_tiny(
    preset: str = TINY_DEFAULT_PRESET,
    seed: int = 0,
    data_dir: str | Path | None = None,
    *,
    force: bool = False,
) -> Path:
    """Build the built-in model into the cache unless a complete build is there (or `force`)."""
    out = tiny_model_dir(preset, seed)
    if (out / "build_info.json").exists() and not force:
        return out
    with io.file_lock(out.with_name(f".{out.name}.lock")):
        if force or not (out / "build_info.json").exists():  # another process may have built it
            build_tiny(out, preset=preset, seed=seed, data_dir=data_dir)
    return out


# ---------------------------------------------------------------- entry point
def build_tiny(
    out_dir: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    data_dir: str | Path | None = None,
    *,
    progress: bool = True,
) -> Path:
    """Build the built-in model into `out_dir` (written atomically); returns `out_dir`."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown tiny preset {preset!r}: use one of {', '.join(PRESETS)}")
    spec, out_dir = PRESETS[preset], Path(out_dir)
    data = default_data_dir(data_dir)
    t0 = time.time()
    texts, align = _load_data(data, spec, seed)
    tmp = io.temp_dir_for(out_dir)
    try:
        info = _build(tmp, spec, seed, texts, align, progress)
        info.update(
            preset=preset, seed=seed, data_dir=str(data), wall_time_s=round(time.time() - t0, 1)
        )
        io.write_json(tmp / "build_info.json", info)
        io.replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _load_data(data: Path, spec: TinyPreset, seed: int) -> tuple[list[str], list[Example]]:
    from . import datasets

    texts = sample_text(datasets.pretraining_texts(data), spec.text_chars, seed)
    align = datasets.alignment_examples(data)
    if spec.align_examples:
        align = align[: spec.align_examples]
    if not texts or not align:
        raise ConfigError(
            f"{data} has no pretraining text or alignment examples to build the tiny model"
        )
    return texts, align


def _build(
    tmp: Path, spec: TinyPreset, seed: int, texts: list[str], align: list[Example], progress: bool
) -> dict[str, Any]:
    """Tokenizer, pretraining and alignment; saves model + tokenizer into `tmp`."""
    device = pick_device()
    t = time.time()
    tokenizer = train_tokenizer(texts + [_render(ex) for ex in align], spec.vocab_size)
    tok_s = time.time() - t
    model = new_model(spec, tokenizer, seed)
    stream = pack_ids(tokenizer, texts)
    pre = pretrain_packed(model, stream, spec, seed, device, progress)
    aligned = align_model(model, tokenizer, align, spec, seed, device, progress)
    model.to("cpu").save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    params = sum(p.numel() for p in model.parameters())
    return {
        "params": params,
        "config": asdict(spec),
        "tokenizer_time_s": round(tok_s, 1),
        "text_tokens_available": int(stream.numel()),
        "device": device,
        **pre,
        **aligned,
    }


# ---------------------------------------------------------------- data and tokenizer
def sample_text(texts: Sequence[str], max_chars: int, seed: int, piece: int = 4000) -> list[str]:
    """A seeded sample of about `max_chars` characters, as pieces cut at line breaks (0: all)."""
    pieces = [p for text in texts for p in _split(text, piece)]
    random.Random(seed).shuffle(pieces)
    if not max_chars:
        return pieces
    out, total = [], 0
    for p in pieces:
        if total >= max_chars:
            break
        out.append(p)
        total += len(p)
    return out


def _split(text: str, size: int) -> Iterable[str]:
    """Pieces of at most about `size` characters, cut after a newline where possible."""
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind("\n", start + size // 2, end)
            end = cut + 1 if cut > 0 else end
        piece = text[start:end].strip()
        if piece:
            yield piece
        start = end


def _render(ex: Example) -> str:
    return render_prompt(ex.prompt) + ex.response


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer with EOS (also BOS) and PAD special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=PAD,
    )


def pack_ids(tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """All texts tokenised and concatenated, each followed by EOS, as one 1-D tensor."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for row in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        ids.extend(row)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def new_model(spec: TinyPreset, tokenizer: Any, seed: int) -> torch.nn.Module:
    """A freshly initialised GPT-2 style model for the preset (seeded)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=spec.seq_len,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    model.loss_type = "ForCausalLM"  # GPT2LMHeadModel's name does not say it (avoids a warning)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


# ---------------------------------------------------------------- training loops
def pretrain_packed(
    model: torch.nn.Module,
    token_stream: torch.Tensor,
    spec: TinyPreset,
    seed: int,
    device: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Causal-LM pretraining on seeded random blocks of `token_stream`; returns loss figures.

    The last 5% of the blocks (at most 64) are held out for `pretrain_heldout_loss`.
    """
    blocks = token_stream[: token_stream.numel() // spec.seq_len * spec.seq_len].view(
        -1, spec.seq_len
    )
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(seed))
    n_held = min(64, max(1, len(blocks) // 20))
    held, train_blocks = blocks[order[:n_held]], blocks[order[n_held:]]
    steps = max(1, spec.pretrain_tokens // (spec.batch_size * spec.seq_len))

    def batch(step: int) -> dict[str, torch.Tensor]:
        start = step * spec.batch_size
        idx = torch.arange(start, start + spec.batch_size) % len(train_blocks)
        ids = train_blocks[idx]
        return {"input_ids": ids, "labels": ids}

    losses = fit(model, batch, steps, spec.lr, device, "pretrain", progress, seed)
    return {
        "pretrain_steps": steps,
        "pretrain_tokens_seen": steps * spec.batch_size * spec.seq_len,
        "pretrain_epochs": round(steps * spec.batch_size / len(train_blocks), 3),
        "pretrain_final_loss": _tail_mean(losses),
        "pretrain_heldout_loss": heldout_loss(model, held, device),
    }


def align_model(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    spec: TinyPreset,
    seed: int,
    device: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Full finetuning on prompt/response examples (loss on the response); returns loss figures."""
    encoded = batching.encode_all(tokenizer, examples, spec.seq_len)
    lengths = [len(e.input_ids) for e in encoded]
    epochs = [
        batching.length_grouped_batches(lengths, spec.align_batch_size, seed=seed * 1_000_003 + e)
        for e in range(spec.align_epochs)
    ]
    plan = [b for epoch in epochs for b in epoch]

    def batch(step: int) -> dict[str, torch.Tensor]:
        return batching.collate([encoded[i] for i in plan[step]], tokenizer.pad_token_id)

    losses = fit(model, batch, len(plan), spec.align_lr, device, "align", progress, seed)
    return {
        "align_examples": len(examples),
        "align_steps": len(plan),
        "align_first_loss": _head_mean(losses),
        "align_final_loss": _tail_mean(losses),
    }


def fit(
    model: torch.nn.Module,
    batch: Callable[[int], dict[str, torch.Tensor]],
    steps: int,
    lr: float,
    device: str,
    desc: str = "train",
    progress: bool = True,
    seed: int = 0,
) -> list[float]:
    """A plain single-process AdamW loop (5% warmup, cosine to 10%); returns the loss per step."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, steps // 20)
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, disable=not progress, dynamic_ncols=True)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr * _schedule(step, steps, warmup)
        inputs = {k: v.to(device) for k, v in batch(step).items()}
        autocast = torch.autocast(
            device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"
        )
        with autocast, attention_backends(device):
            loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{_tail_mean(losses):.3f}", refresh=False)
    model.eval()
    return losses


def _schedule(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def heldout_loss(
    model: torch.nn.Module, blocks: torch.Tensor, device: str, batch_size: int = 16
) -> float:
    """Mean next-token loss over held-out packed blocks."""
    model.eval()
    losses = [
        model(input_ids=b.to(device), labels=b.to(device)).loss.item()
        for b in blocks.split(batch_size)
    ]
    return round(sum(losses) / len(losses), 4)


def _tail_mean(values: list[float], n: int = 20) -> float:
    tail = values[-n:]
    return round(sum(tail) / len(tail), 4)


def _head_mean(values: list[float], n: int = 20) -> float:
    head = values[:n]
    return round(sum(head) / len(head), 4)
