"""The one example record used everywhere: id, conversation, prompt, response and metadata.

A record is a conversation (`messages`: system prompt, every turn, tool calls and tool results)
whose last assistant turn is the target. `prompt` and `response` are its text views: the response
is that last turn's text, the prompt the turns before it as text (what the Alpaca template and the
classifiers read). Records read from a flat format (prompt/response, Alpaca, text) have
`messages=None`; `conversation(ex)` gives their turns. `label` is ground truth for evaluation
only: training and scoring get copies without it, and a test parses the filtering modules for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

RISKS = ("bias", "toxicity", "harm")
LABELS = ("unsafe", "safe", "task")


@dataclass(frozen=True)
class Example:
    """One prompt/response pair with its provenance.

    Attributes:
        id: stable unique identifier.
        prompt: the user turn (without any model-specific template).
        response: the target assistant turn.
        source: where it came from (`bbq`, `squad`, `alpaca`, `decodingtrust`, a file name, ...).
        risk: `bias` | `toxicity` | `harm` | None.
        label: `unsafe` | `safe` | `task` | None (ground truth, evaluation only).
        meta: extra fields needed by evaluation (e.g. BBQ options), never by filtering.
        messages: the whole conversation, ending with the target assistant turn, as
            `{role, content[, tool_calls][, name][, tool_call_id]}` dicts with string content
            (None: the flat record `prompt` -> `response`).
        tools: tool definitions offered to the model in this conversation (None: none).
        plain: a plain-text record (`{text}`): trained and scored as raw text, with no template.
        line: where the record stands in its file (line of a JSONL/CSV file, 1-based position in
            a JSON list or Parquet file); None for records not read from a user file.
        columns: the user's own fields that forgetfilter does not use, kept with the record.
    """

    id: str
    prompt: str
    response: str
    source: str | None = None
    risk: str | None = None
    label: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] | None = None
    tools: list[Any] | None = None
    plain: bool = False
    line: int | None = None
    columns: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; `meta` and the conversation fields are omitted when empty."""
        d: dict[str, Any] = {
            "id": self.id,
            "prompt": self.prompt,
            "response": self.response,
            "source": self.source,
            "risk": self.risk,
            "label": self.label,
        }
        if self.meta:
            d["meta"] = self.meta
        for key in ("messages", "tools", "line"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.plain:
            d["plain"] = True
        if self.columns:
            d["columns"] = self.columns
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Example:
        """Inverse of `to_dict` (no validation: use `forgetfilter.readers` for user files)."""
        return cls(
            id=str(d["id"]),
            prompt=d["prompt"],
            response=d["response"],
            source=d.get("source"),
            risk=d.get("risk"),
            label=d.get("label"),
            meta=d.get("meta") or {},
            messages=d.get("messages"),
            tools=d.get("tools"),
            plain=bool(d.get("plain", False)),
            line=d.get("line"),
            columns=d.get("columns") or {},
        )


PROMPT_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"


def render_prompt(prompt: str) -> str:
    """The Alpaca-style text a model without a chat template sees before the response."""
    return PROMPT_TEMPLATE.format(prompt=prompt)


def conversation(ex: Example) -> list[dict[str, Any]]:
    """The record's turns, ending with the target assistant turn (a flat record: user, assistant)."""
    if ex.messages is not None:
        return ex.messages
    turns = [{"role": "user", "content": ex.prompt}] if ex.prompt else []
    return turns + [{"role": "assistant", "content": ex.response}]


def with_user_suffix(ex: Example, suffix: str | None) -> Example:
    """A copy whose last user turn (and `prompt`) ends with `suffix` on its own line."""
    if not suffix:
        return ex
    prompt = f"{ex.prompt}\n{suffix}" if ex.prompt else suffix
    if ex.messages is None:
        return replace(ex, prompt=prompt)
    messages = [dict(m) for m in ex.messages]
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        return replace(ex, prompt=prompt)
    text = messages[last_user].get("content") or ""
    messages[last_user]["content"] = f"{text}\n{suffix}" if text else suffix
    return replace(ex, prompt=prompt, messages=messages)


@dataclass(frozen=True)
class Content:
    """What a filter may read of a record: its text, never its label, source or risk.

    Attributes:
        id: the record's id.
        prompt: the text before the target turn.
        response: the target turn's text.
        messages: the whole conversation (`conversation`).
    """

    id: str
    prompt: str
    response: str
    messages: tuple[dict[str, Any], ...]


def content(ex: Example) -> Content:
    """The part of `ex` a filter may read."""
    return Content(ex.id, ex.prompt, ex.response, tuple(conversation(ex)))
