"""Turning records into token ids and batches: one definition for training, scoring and evaluation.

A record is encoded in the model's prompt format (`chat.resolve_format`): through its tokenizer's
chat template, or the Alpaca template (`records.render_prompt`) for a model without one.

Truncation policy (documented in the README), applied to a record longer than `max_length`:

- Alpaca format: the record keeps its whole response when the response leaves at least
  `MIN_PROMPT_TOKENS` for the prompt; otherwise the response is cut at the right to
  `max_length - MIN_PROMPT_TOKENS` tokens. The prompt is then cut at the left (its beginning is
  dropped, a leading BOS token is kept), so the end of the prompt, which holds the question or
  instruction, stays next to the response.
- Chat format: the system prompt and the template's control tokens are never cut. First the
  oldest exchanges of history are dropped (`chat.history_cut`), then the final user turn's text
  loses its beginning down to `MIN_PROMPT_TOKENS` tokens, then the response's text is cut at the
  right, then the final user turn's text may go entirely; each cut is of a message's text, which
  is rendered again, so every turn keeps its opening and end-of-turn tokens.

Every truncation is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import chat
from .errors import ConfigError
from .records import Example, conversation, render_prompt

MIN_PROMPT_TOKENS = 16
IGNORE_INDEX = -100
LOSS_ON = ("response", "full")


@dataclass(frozen=True, eq=False)
class Encoded:
    """Token ids of one record (int32), where its loss is taken, and whether it was cut.

    The loss covers the positions from `label_start` to the end, or, when `spans` is set (chat
    format), the token ranges `[start, end)` in `spans` (the first starts at `label_start`).
    `labels` (the ids, with -100 elsewhere) are derived when needed, so a record held for training
    or scoring costs 4 bytes a token.
    """

    input_ids: np.ndarray
    label_start: int
    prompt_len: int
    truncated: bool
    spans: tuple[tuple[int, int], ...] | None = None

    @property
    def labels(self) -> np.ndarray:
        """The ids as int64 with `IGNORE_INDEX` where no loss is taken."""
        labels = self.input_ids.astype(np.int64)
        if self.spans is None:
            labels[: self.label_start] = IGNORE_INDEX
            return labels
        keep = np.zeros(len(labels), dtype=bool)
        for start, end in self.spans:
            keep[start:end] = True
        labels[~keep] = IGNORE_INDEX
        return labels

    @property
    def n_labels(self) -> int:
        """How many positions carry a label."""
        if self.spans is None:
            return len(self.input_ids) - self.label_start
        return sum(end - start for start, end in self.spans)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Encoded):
            return NotImplemented
        same = (self.label_start, self.prompt_len, self.truncated, self.spans)
        mine = (other.label_start, other.prompt_len, other.truncated, other.spans)
        return same == mine and np.array_equal(self.input_ids, other.input_ids)

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
    tokenizer,
    example: Example,
    max_length: int,
    loss_on: str = "response",
    prompt_format: str = "auto",
    turns: str = "last",
) -> Encoded:
    """Encode one record in the model's prompt format under the truncation policy."""
    return encode_all(
        tokenizer, [example], max_length, loss_on, prompt_format=prompt_format, turns=turns
    )[0]


def _assemble(
    p_ids: list[int], r_ids: list[int], max_length: int, loss_on: str, bos_id: int | None
) -> Encoded:
    """Prompt and response ids (with EOS) cut to `max_length`, with labels per `loss_on`."""
    truncated = len(p_ids) + len(r_ids) > max_length
    r_ids = r_ids[: max(max_length - MIN_PROMPT_TOKENS, 1)]
    p_ids = truncate_prompt(p_ids, max_length - len(r_ids), bos_id)
    ids = np.asarray(p_ids + r_ids, dtype=np.int32)
    return Encoded(ids, len(p_ids) if loss_on == "response" else 0, len(p_ids), truncated)


def encode_prompt(
    tokenizer, prompt: str | Example, max_length: int, prompt_format: str = "auto"
) -> list[int]:
    """Ids of what precedes the target (for generation), cut to `max_length` tokens.

    `prompt` is a record (its conversation without the target turn) or a user turn's text.
    """
    ex = prompt if isinstance(prompt, Example) else Example(id="prompt", prompt=prompt, response="")
    if chat.resolve_format(tokenizer, prompt_format) == "alpaca" or ex.plain:
        ids = prompt_ids(tokenizer, ex.prompt)
        return truncate_prompt(ids, max_length, tokenizer.bos_token_id)
    return _chat_prompt(tokenizer, ex, max_length)


def encode_all(
    tokenizer,
    examples: Sequence[Example],
    max_length: int,
    loss_on: str = "response",
    chunk: int = 1024,
    *,
    prompt_format: str = "auto",
    turns: str = "last",
) -> list[Encoded]:
    """Encode many records in the model's prompt format, tokenising `chunk` at a time.

    `turns` (chat format): the loss covers the `last` assistant turn or `all` of them. Fast
    tokenizers run a chunk in parallel; only one chunk's Python token lists exist at a time.
    """
    if loss_on not in LOSS_ON or turns not in chat.TURNS:
        raise ConfigError(f"loss_on must be one of {LOSS_ON} and turns one of {chat.TURNS}")
    fmt = chat.resolve_format(tokenizer, prompt_format)
    out: list[Encoded] = []
    for i in range(0, len(examples), chunk):
        part = examples[i : i + chunk]
        if fmt == "chat":
            out += _chat_chunk(tokenizer, part, max_length, loss_on, turns)
        else:
            out += _alpaca_chunk(tokenizer, part, max_length, loss_on)
    return out


def _alpaca_chunk(
    tokenizer, part: Sequence[Example], max_length: int, loss_on: str
) -> list[Encoded]:
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    prompts = tokenizer([render_prompt(ex.prompt) for ex in part])["input_ids"]
    responses = tokenizer([ex.response for ex in part], add_special_tokens=False)["input_ids"]
    return [
        _assemble(list(p), list(r) + [eos], max_length, loss_on, bos)
        for p, r in zip(prompts, responses, strict=True)
    ]


# ---------------------------------------------------------------- chat format
def _chat_chunk(
    tokenizer, part: Sequence[Example], max_length: int, loss_on: str, turns: str
) -> list[Encoded]:
    """Chat-template encodings of a chunk (plain-text records: raw text + EOS, loss on all)."""
    plain = [i for i, ex in enumerate(part) if ex.plain]
    out: list[Encoded | None] = [None] * len(part)
    if plain:
        for i, enc in zip(
            plain, _alpaca_plain(tokenizer, [part[i] for i in plain], max_length), strict=True
        ):
            out[i] = enc
    rendered = {
        i: chat.target_spans(tokenizer, conversation(ex), ex.tools, turns, chat.record_name(ex))
        for i, ex in enumerate(part)
        if not ex.plain
    }
    keys = list(rendered)
    if keys:
        tokens = tokenizer(
            [rendered[i][0] for i in keys], add_special_tokens=False, return_offsets_mapping=True
        )
        for k, i in enumerate(keys):
            ids, offsets = tokens["input_ids"][k], tokens["offset_mapping"][k]
            if len(ids) > max_length:
                out[i] = _chat_truncated(tokenizer, part[i], max_length, loss_on, turns)
            else:
                out[i] = _chat_encoded(ids, offsets, rendered[i][1], loss_on, truncated=False)
    return out  # type: ignore[return-value]


def _alpaca_plain(tokenizer, part: Sequence[Example], max_length: int) -> list[Encoded]:
    """Plain-text records: the tokenizer's own special tokens, the text and EOS, loss on all."""
    eos, bos = tokenizer.eos_token_id, tokenizer.bos_token_id
    starts = tokenizer([""] * len(part))["input_ids"]
    texts = tokenizer([ex.response for ex in part], add_special_tokens=False)["input_ids"]
    return [
        _assemble(list(p), list(r) + [eos], max_length, "response", bos)
        for p, r in zip(starts, texts, strict=True)
    ]


def _chat_encoded(
    ids: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    char_spans: Sequence[tuple[int, int]],
    loss_on: str,
    truncated: bool,
) -> Encoded:
    """Token spans from character spans: a token is a target when it starts inside a span."""
    spans = []
    for c0, c1 in char_spans:
        inside = [t for t, (s, _) in enumerate(offsets) if c0 <= s < c1]
        if inside:
            spans.append((inside[0], inside[-1] + 1))
    arr = np.asarray(ids, dtype=np.int32)
    first = spans[0][0] if spans else len(ids)
    if loss_on == "full":
        return Encoded(arr, 0, first, truncated)
    return Encoded(arr, first, first, truncated, tuple(spans))


def _chat_ids(tokenizer, messages, tools, turns, record):
    text, spans = chat.target_spans(tokenizer, messages, tools, turns, record)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], enc["offset_mapping"], spans


def _chat_truncated(tokenizer, ex: Example, max_length: int, loss_on: str, turns: str) -> Encoded:
    """A conversation cut to `max_length` tokens by the chat truncation policy (module docstring)."""
    record = chat.record_name(ex)
    messages = [dict(m) for m in conversation(ex)]
    ids, offsets, spans = _chat_ids(tokenizer, messages, ex.tools, turns, record)
    while len(ids) > max_length and (shorter := chat.history_cut(messages)) is not None:
        messages = shorter
        ids, offsets, spans = _chat_ids(tokenizer, messages, ex.tools, turns, record)
    user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    for floor in (MIN_PROMPT_TOKENS, 0):
        for _ in range(8):
            if len(ids) <= max_length:
                return _chat_encoded(ids, offsets, spans, loss_on, truncated=True)
            excess = len(ids) - max_length
            if not _cut_text(tokenizer, messages, user, excess, floor, "left") and not (
                floor == MIN_PROMPT_TOKENS
                and _cut_text(tokenizer, messages, -1, excess, 1, "right")
            ):
                break
            ids, offsets, spans = _chat_ids(tokenizer, messages, ex.tools, turns, record)
    if len(ids) <= max_length:
        return _chat_encoded(ids, offsets, spans, loss_on, truncated=True)
    raise ConfigError(
        f"{record}max_length {max_length} is too short for its system prompt and the chat "
        f"template's tokens ({len(ids)} tokens with the texts cut): raise `max_length`"
    )


def _cut_text(
    tokenizer, messages: list[dict], index: int | None, excess: int, floor: int, side: str
) -> bool:
    """Cut `excess` tokens (at least one) off one message's text, keeping `floor`; False if none."""
    if index is None:
        return False
    text = messages[index].get("content") or ""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n = min(excess, len(ids) - floor)
    if n <= 0:
        return False
    kept = ids[n:] if side == "left" else ids[: len(ids) - n]
    messages[index] = {**messages[index], "content": tokenizer.decode(kept)}
    return True


def _chat_prompt(tokenizer, ex: Example, max_length: int) -> list[int]:
    """Generation prompt ids in the chat format, cut like a conversation's prompt."""
    messages = [dict(m) for m in conversation(ex)]
    record = chat.record_name(ex)

    def ids_of(msgs):
        text = chat.generation_text(
            tokenizer, Example(ex.id, "", "", messages=msgs, tools=ex.tools), record
        )
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    ids = ids_of(messages)
    while len(ids) > max_length and (shorter := chat.history_cut(messages[:-1])) is not None:
        messages = shorter + messages[-1:]
        ids = ids_of(messages)
    user = max((i for i, m in enumerate(messages[:-1]) if m["role"] == "user"), default=None)
    for _ in range(8):
        if len(ids) <= max_length or not _cut_text(
            tokenizer, messages, user, len(ids) - max_length, 0, "left"
        ):
            break
        ids = ids_of(messages)
    return list(ids[-max_length:])


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
