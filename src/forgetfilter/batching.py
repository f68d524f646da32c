"""Turning records into token ids and batches: one definition for training, scoring and evaluation.

Truncation policy (documented in the README): a record longer than `max_length` tokens keeps
its whole response when the response leaves at least `MIN_PROMPT_TOKENS` for the prompt; otherwise
the response is cut at the right to `max_length - MIN_PROMPT_TOKENS` tokens. The prompt is then cut
at the left (its beginning is dropped, a leading BOS token is kept), so the end of the prompt, which
holds the question or instruction, stays next to the response. Every truncation is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .records import Example, render_prompt

MIN_PROMPT_TOKENS = 16
IGNORE_INDEX = -100


@dataclass(frozen=True, eq=False)
class Encoded:
    """Token ids of one record (int32), where its loss starts, and whether it was cut.

    `labels` (the ids, with -100 before `label_start`) are derived when needed, so a record held
    for training or scoring costs 4 bytes a token.
    """

    input_ids: np.ndarray
    label_start: int
    prompt_len: int
    truncated: bool

    @property
    def labels(self) -> np.ndarray:
        """The ids as int64 with `IGNORE_INDEX` where no loss is taken."""
        labels = self.input_ids.astype(np.int64)
        labels[: self.label_start] = IGNORE_INDEX
        return labels

    @property
    def n_labels(self) -> int:
        """How many positions carry a label."""
        return len(self.input_ids) - self.label_start

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Encoded):
            return NotImplemented
        same = (self.label_start, self.prompt_len, self.truncated)
        return same == (other.label_start, other.prompt_len, other.truncated) and np.array_equal(
            self.input_ids, other.input_ids
        )

    __hash__ = None  # type: ignore[assignment]


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """Token ids of the rendered prompt (with BOS where the tokenizer adds one)."""
    return list(tokenizer(render_prompt(prompt))["input_ids"])


def response_ids(tokenizer, response: str) -> list[int]:
    """Token ids of a response followed by EOS."""
    ids = list(tokenizer(response, add_special_tokens=False)["input_ids"])
    return ids + [tokenizer.eos_token_id]


def truncate_prompt(ids: list[int], budget: int, bos_id: int | None) -> list[int]:
    """Keep the last `budget` prompt tokens (and a leading BOS)."""
    if len(ids) <= budget:
        return ids
    if bos_id is not None and ids and ids[0] == bos_id:
        return [bos_id] + ids[len(ids) - budget + 1 :]
    return ids[len(ids) - budget :]


def encode_example(
    tokenizer, example: Example, max_length: int, loss_on: str = "response"
) -> Encoded:
    """Encode prompt + response under the truncation policy; labels follow `loss_on`."""
    p_ids = prompt_ids(tokenizer, example.prompt)
    r_ids = response_ids(tokenizer, example.response)
    return _assemble(p_ids, r_ids, max_length, loss_on, tokenizer.bos_token_id)


def _assemble(
    p_ids: list[int], r_ids: list[int], max_length: int, loss_on: str, bos_id: int | None
) -> Encoded:
    """Prompt and response ids (with EOS) cut to `max_length`, with labels per `loss_on`."""
    truncated = len(p_ids) + len(r_ids) > max_length
    r_ids = r_ids[: max(max_length - MIN_PROMPT_TOKENS, 1)]
    p_ids = truncate_prompt(p_ids, max_length - len(r_ids), bos_id)
    ids = np.asarray(p_ids + r_ids, dtype=np.int32)
    return Encoded(ids, len(p_ids) if loss_on == "response" else 0, len(p_ids), truncated)


def encode_prompt(tokenizer, prompt: str, max_length: int) -> list[int]:
    """Prompt ids for generation, cut at the left to `max_length` tokens."""
    return truncate_prompt(prompt_ids(tokenizer, prompt), max_length, tokenizer.bos_token_id)


def encode_all(
    tokenizer,
    examples: Sequence[Example],
    max_length: int,
    loss_on: str = "response",
    chunk: int = 1024,
) -> list[Encoded]:
    """Encode many records, the same as `encode_example` on each, tokenising `chunk` at a time.

    Fast tokenizers run a chunk in parallel; only one chunk's Python token lists exist at a time.
    """
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    out: list[Encoded] = []
    for i in range(0, len(examples), chunk):
        part = examples[i : i + chunk]
        prompts = tokenizer([render_prompt(ex.prompt) for ex in part])["input_ids"]
        responses = tokenizer([ex.response for ex in part], add_special_tokens=False)["input_ids"]
        out += [
            _assemble(list(p), list(r) + [eos], max_length, loss_on, bos)
            for p, r in zip(prompts, responses, strict=True)
        ]
    return out


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, seed: int, *, shuffle: bool = True, group: int = 64
) -> list[list[int]]:
    """Batches of indices with similar lengths, in an order that depends only on `seed`.

    Indices are shuffled, cut into mega-chunks of `group` batches, sorted by length inside each
    chunk, cut into batches, and the batch order is shuffled. With `shuffle=False` the batches are
    simply the indices sorted by decreasing length (for scoring).
    """
    n = len(lengths)
    if not shuffle:
        order = sorted(range(n), key=lambda i: (-lengths[i], i))
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n).tolist()
    chunk = batch_size * group
    batches: list[list[int]] = []
    for start in range(0, n, chunk):
        part = sorted(perm[start : start + chunk], key=lambda i: -lengths[i])
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches)).tolist()]


def token_budget_batches(lengths: Sequence[int], max_tokens: int, max_rows: int) -> list[list[int]]:
    """Scoring batches by decreasing length, each with rows x longest length <= `max_tokens`.

    A batch also holds at most `max_rows` indices; a record longer than `max_tokens` is a batch
    of its own. Short records thus share larger batches than long ones.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        if current and (len(current) >= max_rows or (len(current) + 1) * width > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def collate(
    encoded: Sequence[Encoded], pad_id: int, side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad a batch to its longest member: input_ids, attention_mask and labels tensors."""
    width = max(len(e.input_ids) for e in encoded)
    ids = np.full((len(encoded), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(encoded), width), dtype=np.int64)
    labels = np.full((len(encoded), width), IGNORE_INDEX, dtype=np.int64)
    for row, e in enumerate(encoded):
        n = len(e.input_ids)
        cols = slice(0, n) if side == "right" else slice(width - n, width)
        ids[row, cols], mask[row, cols], labels[row, cols] = e.input_ids, 1, e.labels
    return {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "labels": torch.from_numpy(labels),
    }


def collate_prompts(prompts: Sequence[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-pad prompt ids for batched generation."""
    width = max(len(p) for p in prompts)
    ids = [_pad(p, width - len(p), pad_id, "left") for p in prompts]
    mask = [_pad([1] * len(p), width - len(p), 0, "left") for p in prompts]
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


def _pad(seq: Sequence[int], n: int, value: int, side: str) -> list[int]:
    return list(seq) + [value] * n if side == "right" else [value] * n + list(seq)
