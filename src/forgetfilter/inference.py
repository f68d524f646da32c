"""Batched inference: teacher-forced response NLL and greedy generation, halving a batch on OOM.

What the signals (`signals`) and the evaluation suites (`evaluation`) run on. Records are encoded
in the model's prompt format (`batching`), exactly as training encodes them; batches are sorted by
length so they pad little, and no result depends on the batching.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .batching import (
    IGNORE_INDEX,
    Encoded,
    collate,
    collate_prompts,
    encode_all,
    encode_prompt,
    length_grouped_batches,
    response_ids,
    token_budget_batches,
)
from .devices import attention_backends
from .models import cap_length, known_library_noise_silenced
from .records import Example

MAX_NEW_TOKENS_CAP = 500
# Extra `model.generate` options used on CUDA unless the caller passes its own. Measured on an H200
# (README, Performance; benchmarks/gpu.py): with `models.attention_backends` the dynamic and the
# static cache decode at the same speed (the dynamic cache's earlier 2.6-5x slowdown was cuDNN
# attention planning every new cache length); the static cache is kept because it also holds with
# cuDNN attention allowed. Compiled decoding (`disable_compile=False`) ran 3.7x faster once warm
# but its first call took 15 s, so it is an option (`RunConfig.compile_generation`).
CUDA_GENERATION_DEFAULTS: dict = {"cache_implementation": "static", "disable_compile": True}


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def run_batches(
    fn: Callable[[list[int]], list], batches: list[list[int]], n: int, desc: str, progress: bool
) -> list:
    """Apply `fn` to index batches, halving a batch that runs out of GPU memory; results by index."""
    out: list = [None] * n
    bar = tqdm(total=n, desc=desc, disable=not progress, unit="ex")
    queue = list(batches)
    while queue:
        batch = queue.pop(0)
        try:
            values = fn(batch)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not _is_oom(exc) or len(batch) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(batch) // 2
            queue[:0] = [batch[:half], batch[half:]]
            continue
        for i, v in zip(batch, values, strict=True):
            out[i] = v
        bar.update(len(batch))
    bar.close()
    return out


@torch.inference_mode()
def response_nll(
    model,
    tokenizer,
    examples: Sequence[Example],
    *,
    batch_size: int = 32,
    max_length: int = 512,
    progress: bool = True,
    max_batch_tokens: int | None = None,
    prompt_format: str = "auto",
    turns: str = "last",
    reduce: Reduction | None = None,
    keep: Callable[[list[Encoded]], list[Encoded]] | None = None,
) -> np.ndarray:
    """Mean NLL (nats/token) of each response given its prompt, teacher-forced.

    `reduce` (optional) replaces the mean over a response's tokens: it maps the per-token NLL
    `[rows, positions]` and the mask of target positions to one value per row (`mean_nll`'s
    signature). `keep` (optional) maps the encoded records to the part of them to score (e.g.
    `head_loss.keep_head`: the prompt and the response's first tokens).

    Records are encoded in the model's prompt format (`batching.encode_all`: `prompt_format`,
    and in the chat format the target `turns`), exactly as training encodes them.

    One forward pass per batch of length-sorted records. When the model accepts `logits_to_keep`
    (Hugging Face causal LMs do), batches are left-padded with explicit position ids and only the
    response positions are projected onto the vocabulary, so no full `[batch, length, vocab]`
    float32 copy is made; cross-entropy is taken in row chunks. `max_batch_tokens` (optional) caps
    rows x padded width of a batch instead of a fixed row count (`batch_size` stays the row cap).
    """
    model.eval()
    max_length = cap_length(model, max_length)
    enc = encode_all(tokenizer, examples, max_length, prompt_format=prompt_format, turns=turns)
    if keep is not None:
        enc = keep(enc)
    lengths = [len(e.input_ids) for e in enc]
    if max_batch_tokens:
        batches = token_budget_batches(lengths, max_batch_tokens, batch_size)
    else:
        batches = length_grouped_batches(lengths, batch_size, 0, shuffle=False)
    device = _device_of(model)
    pad_id = _pad_id(tokenizer)
    sliced = _accepts_logits_to_keep(model)

    def score(batch: list[int]) -> list[float]:
        with attention_backends(device):
            return _score(batch)

    def _score(batch: list[int]) -> list[float]:
        rows = [enc[i] for i in batch]
        if not sliced:
            b = {k: v.to(device) for k, v in collate(rows, pad_id).items()}
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            return _token_nll(logits, b["labels"], reduce or mean_nll).tolist()
        b = {k: v.to(device) for k, v in collate(rows, pad_id, side="left").items()}
        mask = b["attention_mask"]
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        keep = max(len(e.input_ids) - e.label_start for e in rows) + 1
        keep = min(keep, b["input_ids"].shape[1])
        logits = model(
            input_ids=b["input_ids"],
            attention_mask=mask,
            position_ids=position_ids,
            logits_to_keep=keep,
        ).logits
        return _token_nll(logits, b["labels"][:, -keep:], reduce or mean_nll).tolist()

    return np.asarray(
        run_batches(score, batches, len(enc), "scoring (loss)", progress), dtype=np.float64
    )


def nll_kwargs(options) -> dict:
    """`response_nll`'s keyword arguments from a `signals.ScoreOptions`."""
    names = ("batch_size", "max_length", "progress", "prompt_format", "turns")
    return {name: getattr(options, name) for name in names}


_CE_CHUNK_ELEMENTS = 1 << 26  # float32 logits per cross-entropy chunk (256 MiB)


Reduction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mean_nll(nll: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row mean of the token NLLs at the target positions (`mask`); 0 for a row without any."""
    return nll.masked_fill(~mask, 0.0).sum(1) / mask.sum(1).clamp(min=1)


def _token_nll(logits: torch.Tensor, labels: torch.Tensor, reduce: Reduction) -> torch.Tensor:
    """Per-row `reduce` of the cross-entropy at positions whose label is not -100.

    `logits[:, t]` predicts `labels[:, t + 1]`. Rows are processed in chunks so the float32 copy
    of the logits stays bounded; positions without a label are masked out (also when their
    logits are not finite, e.g. at left padding).
    """
    logits, labels = logits[:, :-1], labels[:, 1:]
    mask = labels.ne(IGNORE_INDEX)
    per_row = max(1, _CE_CHUNK_ELEMENTS // max(1, logits.shape[1] * logits.shape[2]))
    values = []
    for start in range(0, logits.shape[0], per_row):
        chunk = logits[start : start + per_row].float()
        lab = labels[start : start + per_row]
        nll = torch.nn.functional.cross_entropy(
            chunk.reshape(-1, chunk.shape[-1]), lab.clamp(min=0).reshape(-1), reduction="none"
        ).view(lab.shape)
        m = mask[start : start + per_row]
        values.append(reduce(nll.masked_fill(~m, 0.0), m))
    return torch.cat(values)


def _accepts_logits_to_keep(model) -> bool:
    """Whether the (base) model's forward takes `logits_to_keep` (transformers >= 4.50 causal LMs)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    prompts: Sequence[str | Example],
    *,
    max_new_tokens: int | Sequence[int] = 64,
    batch_size: int = 32,
    max_length: int = 512,
    progress: bool = True,
    desc: str = "generating",
    first_line_only: bool = False,
    prompt_format: str = "auto",
    **gen_kwargs,
) -> list[str]:
    """Greedy continuations of prompts, batched, left-padded and length-sorted.

    A prompt is a record (what precedes its target turn) or a user turn's text, rendered in the
    model's prompt format (`batching.encode_prompt`; the chat format ends with the generation
    prompt that opens the assistant's turn).

    `max_new_tokens` may be one number or one per prompt: a batch decodes up to its largest, and
    each output is cut to its own budget, so results do not depend on the batching. Budgets and
    `max_length` are capped so prompt + new tokens fit the model's position embeddings. Prompts are
    sorted by (budget, length) so a batch's rows need similar numbers of steps. With
    `first_line_only`, a row stops once its first non-empty line is complete (the returned text
    then holds at least that line; everything ROUGE scoring reads). Extra keyword arguments go to
    `model.generate`; `cache_implementation="static"` without `disable_compile=True` compiles
    decoding on CUDA (transformers' auto-compile), and then the batch needing the largest cache
    runs first (the cache is sized once) and short batches are padded with copies of their first
    row to the common batch size (the extra rows are dropped), so all share one decoding graph.
    """
    model.eval()
    max_length = cap_length(model, max_length)
    limits = _per_item(max_new_tokens, len(prompts))
    positions = _position_limit(model)
    if positions:  # prompt (>= 8 tokens) + new tokens must fit the position embeddings
        limits = [min(lim, positions - 8) for lim in limits]
    ids = [
        encode_prompt(tokenizer, p, max(max_length - lim, 8), prompt_format)
        for p, lim in zip(prompts, limits, strict=True)
    ]
    batches = generation_batches([len(x) for x in ids], limits, batch_size, positions)
    device = _device_of(model)
    pad_id = _pad_id(tokenizer)
    defaults = (
        CUDA_GENERATION_DEFAULTS
        if device.type == "cuda" and "cache_implementation" not in gen_kwargs
        else {}
    )
    kwargs = {"do_sample": False, **defaults, **gen_kwargs}
    padded: set[int] = set()  # ids of the planned batches (not the halves after an OOM)
    if _will_compile(device, kwargs):
        batches = largest_first(batches, [len(x) for x in ids], limits)
        padded = {id(b) for b in batches}
    full = max((len(b) for b in batches), default=0)

    def gen(batch: list[int]) -> list[str]:
        rows = batch + [batch[0]] * (full - len(batch)) if id(batch) in padded else batch
        b = {k: v.to(device) for k, v in collate_prompts([ids[i] for i in rows], pad_id).items()}
        width = b["input_ids"].shape[1]
        extra = dict(kwargs)
        if first_line_only:
            from transformers import StoppingCriteriaList

            stop = FirstLineStop(tokenizer, width, len(rows), device)
            extra["stopping_criteria"] = StoppingCriteriaList(
                [stop, *extra.get("stopping_criteria", [])]
            )
        with attention_backends(device), known_library_noise_silenced():
            out = model.generate(
                **b,
                max_new_tokens=max(limits[i] for i in batch),
                pad_token_id=pad_id,
                eos_token_id=tokenizer.eos_token_id,
                **extra,
            )
        new = out[: len(batch), width:].tolist()
        return tokenizer.batch_decode(
            [row[: limits[i]] for row, i in zip(new, batch, strict=True)], skip_special_tokens=True
        )

    return run_batches(gen, batches, len(ids), desc, progress)


_LINE_BREAKS = frozenset(
    "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
)  # what str.splitlines splits on
_TOKEN_TABLES: dict[int, tuple[object, dict[str, torch.Tensor]]] = {}


def _line_tables(tokenizer) -> dict[str, torch.Tensor]:
    """Per-token-id flags: holds visible text, holds a line break, holds a break after visible text.

    Computed once per tokenizer from single-token decodes. Special tokens (skipped when decoding)
    and undecodable byte fragments (U+FFFD) count as not visible, so the flags never claim a line
    is complete when the full decode would disagree.
    """
    cached = _TOKEN_TABLES.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    n = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(n)], skip_special_tokens=True)
    visible = torch.zeros(n, dtype=torch.bool)
    breaks = torch.zeros(n, dtype=torch.bool)
    closes = torch.zeros(n, dtype=torch.bool)
    for i, text in enumerate(texts):
        seen = False
        for ch in text:
            if ch in _LINE_BREAKS:
                breaks[i] = True
                closes[i] |= seen
            elif not ch.isspace() and ch != "\ufffd":
                seen = True
        visible[i] = seen
    tables = {"visible": visible, "breaks": breaks, "closes": closes}
    _TOKEN_TABLES[id(tokenizer)] = (tokenizer, tables)
    return tables


class FirstLineStop:
    """Stopping criterion: a row is done once its generated text has a complete non-empty line.

    Works on tensors only (no host synchronisation): per row it tracks whether visible text was
    generated, and finishes the row at the first line break after it.
    """

    def __init__(self, tokenizer, prompt_width: int, batch: int, device: torch.device):
        tables = _line_tables(tokenizer)
        self.visible, self.breaks, self.closes = (
            tables[k].to(device) for k in ("visible", "breaks", "closes")
        )
        self.width = prompt_width
        self.seen = torch.zeros(batch, dtype=torch.bool, device=device)
        self.done = torch.zeros(batch, dtype=torch.bool, device=device)

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        if input_ids.shape[1] <= self.width:
            return self.done.clone()
        last = input_ids[:, -1]
        known = (last >= 0) & (last < self.visible.numel())  # ids past the tokenizer decode to ""
        last = last.clamp(0, self.visible.numel() - 1)
        self.done |= known & ((self.seen & self.breaks[last]) | self.closes[last])
        self.seen |= known & self.visible[last]
        return self.done.clone()


def generation_batches(
    lengths: Sequence[int], limits: Sequence[int], batch_size: int, positions: int | None = None
) -> list[list[int]]:
    """Batches for generation: sorted by (budget, prompt length), at most `batch_size` rows.

    Every row of a batch is decoded for the batch's largest budget on a prompt padded to the
    batch's longest, so with a position limit a batch also keeps longest + largest <= `positions`
    (a row that fits alone always gets a batch).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-limits[i], -lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    width = budget = 0
    for i in order:
        w, b = max(width, lengths[i]), max(budget, limits[i])
        if current and (
            len(current) >= batch_size or (positions is not None and w + b > positions)
        ):
            batches.append(current)
            current, w, b = [], lengths[i], limits[i]
        current.append(i)
        width, budget = w, b
    if current:
        batches.append(current)
    return batches


def _will_compile(device: torch.device, kwargs: dict) -> bool:
    """Whether `model.generate` will compile decoding (transformers: a static cache on CUDA)."""
    if kwargs.get("cache_implementation") != "static" or kwargs.get("disable_compile"):
        return False
    everywhere = getattr(kwargs.get("compile_config"), "_compile_all_devices", False)
    return device.type == "cuda" or bool(everywhere)


def largest_first(
    batches: list[list[int]], lengths: Sequence[int], limits: Sequence[int]
) -> list[list[int]]:
    """`batches` reordered by decreasing longest prompt + largest budget (ties keep their order).

    A static KV cache is sized by the first batch and reused by any that fit it, so compiled
    decoding then traces one graph instead of one per cache growth.
    """
    need = [max(lengths[i] for i in b) + max(limits[i] for i in b) for b in batches]
    order = sorted(range(len(batches)), key=lambda k: -need[k])
    return [batches[k] for k in order]


def _per_item(value: int | Sequence[int], n: int) -> list[int]:
    return [int(value)] * n if isinstance(value, int) else [int(v) for v in value]


def target_lengths(
    tokenizer, examples: Sequence[Example], cap: int = MAX_NEW_TOKENS_CAP
) -> list[int]:
    """Default generation budget per record: its target length plus slack, at most `cap`."""
    return [min(cap, len(response_ids(tokenizer, ex.response)) + 8) for ex in examples]


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _position_limit(model) -> int | None:
    """The longest sequence the (base) model's positions cover, None when unbounded/unknown."""
    from .models import max_positions

    return max_positions(model)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device
