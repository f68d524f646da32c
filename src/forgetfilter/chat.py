"""A model's own prompt format: its tokenizer's chat template, or the Alpaca template without one.

`resolve_format(tokenizer, "auto")` is `chat` when the tokenizer has a chat template, else
`alpaca` (the built-in `tiny`, base models). In the chat format a record's conversation
(`records.conversation`) is rendered by `tokenizer.apply_chat_template`, and the target of the
loss and of the score is a set of character spans of that text: the last assistant turn by
default, every assistant turn with `turns="all"`, each from the end of the generation prompt
that opens it through its end-of-turn token (trailing white space after the turn is not a
target). A span is found by rendering the conversation up to that turn, so it needs a template
that renders a conversation's beginning as a prefix of the whole (ChatML, Llama 3, Qwen 2.5,
Gemma and Mistral templates do); one that does not is a clear error.

Nothing is dropped silently: every message's text, tool call and tool definition must appear in
the rendered text, else the record is an error that says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import ConfigError
from .records import Example, conversation

FORMATS = ("auto", "chat", "alpaca")
TURNS = ("last", "all")


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def resolve_format(tokenizer: Any, prompt_format: str = "auto") -> str:
    """`chat` or `alpaca` for a tokenizer and a requested format (`auto|chat|alpaca`)."""
    if prompt_format not in FORMATS:
        raise ConfigError(
            f"prompt_format must be one of {', '.join(FORMATS)}, not {prompt_format!r}"
        )
    if prompt_format == "alpaca":
        return "alpaca"
    if has_chat_template(tokenizer):
        return "chat"
    if prompt_format == "chat":
        raise ConfigError(
            "prompt_format is chat but the model's tokenizer has no chat template "
            "(use auto or alpaca)"
        )
    return "alpaca"


def render(
    tokenizer: Any,
    messages: Sequence[dict],
    tools: list | None = None,
    *,
    generation_prompt: bool = False,
    record: str = "",
) -> str:
    """The template's text for `messages` (with the assistant's opening when `generation_prompt`)."""
    kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": generation_prompt}
    if tools:
        kwargs["tools"] = tools
    try:
        text = tokenizer.apply_chat_template(list(messages), **kwargs)
    except Exception as exc:  # jinja2 errors raised by the template itself
        raise ConfigError(f"{record}the model's chat template cannot render it: {exc}") from None
    return text if isinstance(text, str) else text[0]


def target_spans(
    tokenizer: Any, messages: Sequence[dict], tools: list | None, turns: str, record: str = ""
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its target assistant turns."""
    text = render(tokenizer, messages, tools, record=record)
    check_rendered(text, messages, tools, record)
    last = len(messages) - 1
    targets = (
        [i for i, m in enumerate(messages) if m["role"] == "assistant"] if turns == "all" else []
    )
    spans = []
    for i in sorted(set(targets) | {last}):
        if i == 0:
            continue
        opening = render(tokenizer, messages[:i], tools, generation_prompt=True, record=record)
        through = text if i == last else render(tokenizer, messages[: i + 1], tools, record=record)
        if not (text.startswith(through) and through.startswith(opening)):
            raise ConfigError(
                f"{record}the model's chat template does not render the conversation's beginning "
                "as a prefix of the whole, so its assistant turns cannot be located: use "
                "--assistant-turns last or --prompt-format alpaca"
            )
        end = len(through.rstrip())
        if end > len(opening):
            spans.append((len(opening), end))
    if not spans:
        raise ConfigError(f"{record}the chat template renders the last assistant turn as nothing")
    return text, spans


def generation_text(tokenizer: Any, ex: Example, record: str = "") -> str:
    """The text before the record's target turn, ending with the assistant's opening."""
    messages = conversation(ex)[:-1]
    text = render(tokenizer, messages, ex.tools, generation_prompt=True, record=record)
    check_rendered(text, messages, ex.tools, record)
    return text


def check_rendered(
    text: str, messages: Sequence[dict], tools: list | None, record: str = ""
) -> None:
    """Raise when the template dropped a message's text, a tool call or a tool definition."""
    missing = []
    for i, m in enumerate(messages):
        content = (m.get("content") or "").strip()
        if content and content not in text:
            missing.append(f"the text of message {i} ({m['role']})")
        for call in m.get("tool_calls") or []:
            if call["function"]["name"] not in text:
                missing.append(f"the tool call {call['function']['name']!r} of message {i}")
    for tool in tools or []:
        name = (tool.get("function") or tool).get("name")
        if name and name not in text:
            missing.append(f"the tool definition {name!r}")
    if missing:
        raise ConfigError(
            f"{record}the model's chat template drops {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + ": use --prompt-format alpaca, or a model whose template renders it"
        )


def history_cut(messages: Sequence[dict]) -> list[dict] | None:
    """The conversation without its oldest exchange of history, or None when none is left.

    The leading system messages, the final user turn and what follows it are never dropped; an
    exchange runs from the first turn after the system messages to the next user turn.
    """
    head = 0
    while head < len(messages) and messages[head]["role"] == "system":
        head += 1
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    final_user = users[-1] if users else len(messages) - 1
    if head >= final_user:
        return None
    nxt = next(
        i
        for i in range(head + 1, final_user + 1)
        if i == final_user or messages[i]["role"] == "user"
    )
    return list(messages[:head]) + list(messages[nxt:])


def record_name(ex: Example) -> str:
    """How an error names a record: `record ID (line N): `."""
    where = f" (line {ex.line})" if ex.line is not None else ""
    return f"record {ex.id}{where}: "
