"""Reading user data files into `Example` records, with a report of every problem found.

Accepted containers (by file name; `.gz` is decompressed first): `.jsonl`/`.ndjson` (one object a
line), `.json` (a list of objects or `{"data": [...]}`), `.csv` (header row; cells holding
conversations, tools or `meta` may hold JSON) and `.parquet`. Each record may use any of these
formats (mixing is fine):

| format | fields | conversation |
|---|---|---|
| `chat` | messages: [{role, content}, ...], optional tools | OpenAI / TRL `messages`; content may be a list of text parts; assistant `tool_calls` and `tool` results are kept |
| `sharegpt` | conversations: [{from, value}, ...], optional system, tools | ShareGPT (LLaMA-Factory, axolotl): human/gpt/system/function_call/observation |
| `conversational` | prompt: [messages], completion: [messages] | TRL's conversational prompt/completion |
| `alpaca` | instruction, input, output, optional system, history | history [[query, answer], ...] becomes earlier turns |
| `prompt_response` | prompt, response, optional system | one user turn, one answer |
| `prompt_completion` | prompt, completion (strings), optional system | one user turn, one answer |
| `text` | text | plain text, no template (the prompt is empty) |

The last turn of a conversation is the target and must come from the assistant. Preference pairs
(`chosen`/`rejected`) and non-text content (images, audio) cannot be represented and are rejected
with the reason. Optional fields `id`, `source`, `risk`, `label` and `meta` are read as ours; a
file whose `label`, `risk` or `meta` column holds values that are not ours (say `label: "positive"`)
keeps that column as the user's (the report says so once). Every other field is the user's own:
kept with the record (`Example.columns`) and in the cleaned output. A record without an id gets
`<file stem>-<n>` (n = its line, or its 1-based position in a JSON list or Parquet file), which is
stable across runs.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .io import write_jsonl
from .records import LABELS, RISKS, Example

NO_INPUT = "<No Input>"
OUR_FIELDS = {"id", "source", "risk", "label", "meta"}
FORMAT_FIELDS = {
    "chat": {"messages", "tools"},
    "sharegpt": {"conversations", "system", "tools"},
    "conversational": {"prompt", "completion", "tools"},
    "alpaca": {"instruction", "input", "output", "system", "history"},
    "prompt_response": {"prompt", "response", "system"},
    "prompt_completion": {"prompt", "completion", "system"},
    "text": {"text"},
}
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "model": "assistant",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}
# Our optional fields that a user's file may also use with values of its own.
COLLIDING = {"label": LABELS, "risk": RISKS, "meta": None}


def alpaca_prompt(instruction: str, input_text: str | None) -> str:
    """Alpaca prompt: the instruction, plus a blank line and the input when there is one."""
    instruction = instruction.strip()
    input_text = (input_text or "").strip()
    if input_text and input_text != NO_INPUT:
        return f"{instruction}\n\n{input_text}"
    return instruction


def render_dialogue(turns: list[tuple[str, str]]) -> str:
    """Render (role, text) turns as the prompt: a lone user turn as is, else `User: ...` lines."""
    if len(turns) == 1 and turns[0][0] == "user":
        return turns[0][1].strip()
    names = {"user": "User", "assistant": "Assistant", "system": "System", "tool": "Tool"}
    return "\n".join(f"{names.get(role, role.title())}: {text.strip()}" for role, text in turns)


def message_text(message: dict) -> str:
    """A message's text with its tool calls written out (what a template-free view shows)."""
    text = message.get("content") or ""
    calls = message.get("tool_calls")
    if calls:
        call_text = json.dumps(calls, ensure_ascii=False, sort_keys=True)
        text = f"{text}\n{call_text}" if text else call_text
    return text


@dataclass(frozen=True)
class Problem:
    """One bad record: where (line or record number), why (a reason kind) and details."""

    line: int
    reason: str
    detail: str = ""


@dataclass
class ReadReport:
    """What reading a file found.

    Attributes:
        path: the file read.
        unit: `line` (JSONL, CSV) or `record` (position in a JSON list or Parquet file).
        n_records: records accepted.
        formats: accepted records per format.
        problems: every bad record, in file order.
        skipped: True when the bad records were skipped (skip_invalid) rather than raised.
        user_columns: the user's own fields seen, kept with the records (`Example.columns`).
        notes: things said once about the file (a colliding column read as the user's).
    """

    path: str
    unit: str = "line"
    n_records: int = 0
    formats: Counter = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    skipped: bool = False
    user_columns: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def by_reason(self) -> dict[str, list[int]]:
        """Problem lines grouped by reason kind."""
        out: dict[str, list[int]] = {}
        for p in self.problems:
            out.setdefault(p.reason, []).append(p.line)
        return out

    def summary(self, max_lines: int = 5) -> str:
        """A human-readable multi-line summary."""
        fmts = ", ".join(f"{k}: {v}" for k, v in sorted(self.formats.items())) or "none"
        lines = [f"{self.path}: {self.n_records} records ({fmts})"]
        if self.user_columns:
            lines.append(f"your columns, kept: {', '.join(sorted(self.user_columns))}")
        lines += [f"note: {n}" for n in self.notes]
        verb = "skipped" if self.skipped else "problems"
        lines.append(f"{verb}: {len(self.problems)}")
        for reason, where in sorted(self.by_reason().items()):
            shown = ", ".join(map(str, where[:max_lines])) + (
                ", ..." if len(where) > max_lines else ""
            )
            lines.append(f"  {reason}: {len(where)} ({self.unit}s {shown})")
        return "\n".join(lines)

    def error(self) -> InputError:
        """The InputError naming the first bad record and the counts per reason."""
        first = self.problems[0]
        counts = ", ".join(f"{r}: {len(w)}" for r, w in sorted(self.by_reason().items()))
        detail = f" ({first.detail})" if first.detail else ""
        msg = (
            f"{first.reason}{detail} at {self.unit} {first.line}; {len(self.problems)} bad records "
            f"({counts}). Fix them, or pass --skip-invalid to skip them"
        )
        return InputError(msg, self.path, first.line)


class _Bad(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


# ---------------------------------------------------------------- containers
def file_bytes(path: Path) -> tuple[bytes, str]:
    """File bytes (gunzipped for .gz) and the effective suffix."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", str(path)) from None
    suffix = path.suffix.lower()
    if suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputError(f"not a readable gzip file: {exc}", str(path)) from None
        suffix = Path(path.stem).suffix.lower()
    return data, suffix


def _text(data: bytes) -> str:
    """Decode UTF-8; undecodable bytes become surrogates so the bad record can be found later."""
    return data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")


def _jsonl_records(data: bytes) -> list[tuple[int, Any]]:
    out: list[tuple[int, Any]] = []
    for n, line in enumerate(_text(data).split("\n"), 1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            out.append((n, _Bad("invalid_json", exc.msg)))
        except RecursionError:
            out.append((n, _Bad("invalid_json", "nested too deeply")))
    return out


def _json_records(data: bytes, path: Path) -> list[tuple[int, Any]]:
    try:
        obj = json.loads(_text(data))
    except json.JSONDecodeError as exc:
        raise InputError(
            f"invalid JSON: {exc.msg} (column {exc.colno})", str(path), exc.lineno
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        obj = obj["data"]
    if not isinstance(obj, list):
        raise InputError('a .json file must hold a list of records or {"data": [...]}', str(path))
    return list(enumerate(obj, 1))


def _csv_records(data: bytes) -> list[tuple[int, Any]]:
    reader = csv.DictReader(io.StringIO(_text(data), newline=""))
    out: list[tuple[int, Any]] = []
    for row in reader:
        if None in row:
            out.append((reader.line_num, _Bad("bad_csv_row", "more cells than header columns")))
            continue
        out.append((reader.line_num, {k: _csv_cell(k, v) for k, v in row.items() if v is not None}))
    return out


_JSON_CELLS = ("messages", "conversations", "history", "tools", "meta")


def _csv_cell(key: str, value: str) -> Any:
    """A CSV cell: JSON for conversation-shaped columns, None for an empty optional field."""
    if key in _JSON_CELLS + ("prompt", "completion") and value.strip()[:1] in ("[", "{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        if key in _JSON_CELLS or _is_message_list(parsed):
            return parsed
        return value
    if key in ("meta", "id", "source", "risk", "label") and value == "":
        return None
    return value


def _is_message_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and "role" in m for m in value)
    )


def _parquet_records(path: Path, data: bytes) -> list[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(pa.BufferReader(data)).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"not a readable Parquet file: {exc}", str(path)) from None
    return list(enumerate(rows, 1))


def _records(path: Path) -> tuple[list[tuple[int, Any]], str]:
    data, suffix = file_bytes(path)
    if not data.strip():
        raise InputError("the file is empty (expected at least one record)", str(path))
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_records(data), "line"
    if suffix == ".json":
        return _json_records(data, path), "record"
    if suffix == ".csv":
        return _csv_records(data), "line"
    if suffix in (".parquet", ".pq"):
        return _parquet_records(path, data), "record"
    raise InputError(
        f"unknown file type {suffix or '(none)'!r}: use .jsonl, .json, .csv or .parquet", str(path)
    )


# ---------------------------------------------------------------- one record
def detect_format(rec: dict) -> str:
    """The format name of a record (see the module docstring); raises _Bad when none fits.

    A field counts as present when it is not null and not "" (so CSV and Parquet files that mix
    formats, with empty cells for the other formats' columns, are read per row).
    """

    def has(key: str) -> bool:
        return rec.get(key) not in (None, "")

    if has("messages"):
        return "chat"
    if has("conversations"):
        return "sharegpt"
    if has("chosen") or has("rejected"):
        raise _Bad(
            "unsupported_format",
            "preference pairs (chosen/rejected) cannot be filtered: give one response per record",
        )
    if isinstance(rec.get("prompt"), list) or isinstance(rec.get("completion"), list):
        return "conversational"
    if has("instruction"):
        return "alpaca"
    if "response" in rec and not (has("completion") and not has("response")):
        return "prompt_response"
    if "completion" in rec:
        return "prompt_completion"
    if has("prompt"):
        raise _Bad("missing_response", "has `prompt` but no `response` or `completion`")
    if has("text"):
        return "text"
    raise _Bad("unknown_format", "fields: " + ", ".join(sorted(map(str, rec))[:8]))


def _str(rec: dict, key: str, *, required: bool = True) -> str:
    value = rec.get(key)
    if value is None:
        if required:
            raise _Bad(
                "missing_response"
                if key in ("response", "completion", "output")
                else "missing_field",
                key,
            )
        return ""
    if not isinstance(value, str):
        raise _Bad("bad_field_type", f"`{key}` must be a string, got {type(value).__name__}")
    return value


def _system(rec: dict) -> list[dict]:
    system = _str(rec, "system", required=False)
    return [{"role": "system", "content": system}] if system.strip() else []


def _turns(rec: dict, fmt: str) -> list[dict] | None:
    """The conversation of a record (None for a flat user -> assistant pair without a system)."""
    if fmt == "chat":
        return [_message(m, i) for i, m in enumerate(_list(rec, "messages"))]
    if fmt == "sharegpt":
        return _system(rec) + [_sharegpt(m, i) for i, m in enumerate(_list(rec, "conversations"))]
    if fmt == "conversational":
        prompt, completion = _list(rec, "prompt"), _list(rec, "completion")
        turns = [_message(m, i) for i, m in enumerate(prompt + completion)]
        if any(t["role"] != "assistant" for t in turns[len(prompt) :]):
            raise _Bad("bad_field_value", "`completion` may hold only assistant (and tool) turns")
        return turns
    if fmt == "text":
        return None
    context = _system(rec) + (_history(rec) if fmt == "alpaca" else [])
    if not context:  # a flat user -> assistant pair: no conversation to keep
        return None
    prompt, answer = flat_pair(rec, fmt)
    return context + [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def _history(rec: dict) -> list[dict]:
    """Alpaca `history` ([[query, answer], ...]) as earlier turns."""
    turns = []
    for pair in rec.get("history") or []:
        if (
            not isinstance(pair, list | tuple)
            or len(pair) != 2
            or not all(isinstance(x, str) for x in pair)
        ):
            raise _Bad("bad_field_type", "`history` must be a list of [query, answer] strings")
        turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return turns


def flat_pair(rec: dict, fmt: str) -> tuple[str, str]:
    """(prompt, response) of a record in a flat format (Alpaca, prompt/response, completion)."""
    if fmt == "alpaca":
        prompt = alpaca_prompt(_str(rec, "instruction"), _str(rec, "input", required=False))
        return prompt, _str(rec, "output")
    key = "response" if fmt == "prompt_response" else "completion"
    return _str(rec, "prompt"), _str(rec, key)


def _list(rec: dict, key: str) -> list:
    value = rec.get(key)
    if not isinstance(value, list) or not value:
        raise _Bad("bad_field_type", f"`{key}` must be a non-empty list of messages")
    return value


def _content(value: Any, where: str) -> str:
    """Message content as text: a string, null, or a list of text parts."""
    if value is None or isinstance(value, str):
        return value or ""
    if not isinstance(value, list):
        raise _Bad("bad_field_type", f"{where}: `content` must be a string or a list of parts")
    texts = []
    for part in value:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type", "text") == "text":
            if not isinstance(part.get("text"), str):
                raise _Bad("bad_field_type", f"{where}: a text part needs a string `text`")
            texts.append(part["text"])
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise _Bad(
                "unsupported_content", f"{where} has a {kind!r} part: only text can be trained on"
            )
    return "".join(texts)


def _message(m: Any, i: int) -> dict:
    """One OpenAI/TRL message, checked, with text content (other keys kept as given)."""
    where = f"message {i}"
    if not isinstance(m, dict) or not isinstance(m.get("role"), str):
        raise _Bad("bad_field_type", f"{where} needs a string `role`")
    role = m["role"].lower()
    if role not in ROLES:
        raise _Bad(
            "bad_field_value", f"{where}: role {m['role']!r} is not one of {', '.join(ROLES)}"
        )
    if "content" not in m and not m.get("tool_calls"):
        raise _Bad("bad_field_type", f"{where} needs `content`")
    out = {**m, "role": role, "content": _content(m.get("content"), where)}
    if m.get("tool_calls") is not None:
        if role != "assistant":
            raise _Bad("bad_field_value", f"{where}: only assistant messages make tool calls")
        out["tool_calls"] = [_tool_call(c, where) for c in _as_list(m["tool_calls"], where)]
        if not out["tool_calls"]:
            del out["tool_calls"]
    return out


def _as_list(value: Any, where: str) -> list:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _Bad("bad_field_type", f"{where}: tool calls are not valid JSON") from None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise _Bad("bad_field_type", f"{where}: tool calls must be a list")
    return value


def _tool_call(call: Any, where: str) -> dict:
    """A tool call as `{type: function, function: {name, arguments}}` (arguments parsed when JSON)."""
    if not isinstance(call, dict):
        raise _Bad("bad_field_type", f"{where}: a tool call must be an object")
    fn = call.get("function", call)
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise _Bad("bad_field_type", f"{where}: a tool call needs a function `name`")
    args = fn.get("arguments", fn.get("parameters", {}))
    if isinstance(args, str):
        with contextlib.suppress(json.JSONDecodeError):
            parsed = json.loads(args)
            args = parsed if isinstance(parsed, dict) else args
    out = {**call, "type": "function", "function": {"name": fn["name"], "arguments": args}}
    for key in ("name", "arguments", "parameters"):
        if "function" not in call:
            out.pop(key, None)
    return out


def _sharegpt(m: Any, i: int) -> dict:
    """One ShareGPT `{from, value}` turn as a message (function_call: an assistant tool call)."""
    where = f"turn {i}"
    if not isinstance(m, dict) or not isinstance(m.get("from"), str):
        raise _Bad("bad_field_type", f"{where} needs a string `from`")
    role = SHAREGPT_ROLES.get(m["from"].lower())
    if role is None:
        names = ", ".join(SHAREGPT_ROLES)
        raise _Bad("bad_field_value", f"{where}: `from` {m['from']!r} is not one of {names}")
    value = m.get("value")
    if not isinstance(value, str):
        raise _Bad("bad_field_type", f"{where} needs a string `value`")
    rest = {k: v for k, v in m.items() if k not in ("from", "value")}
    if m["from"].lower() == "function_call":
        return {
            **rest,
            "role": "assistant",
            "content": "",
            "tool_calls": [_tool_call(c, where) for c in _as_list(value, where)],
        }
    return {**rest, "role": role, "content": value}


def _tools(rec: dict) -> list | None:
    tools = rec.get("tools")
    if tools in (None, "", []):
        return None
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError:
            raise _Bad("bad_field_type", "`tools` is not valid JSON") from None
    if isinstance(tools, dict):
        tools = [tools]
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise _Bad("bad_field_type", "`tools` must be a list of tool definitions")
    return tools


def _check_conversation(turns: list[dict]) -> None:
    last = turns[-1]
    if last["role"] != "assistant":
        raise _Bad("missing_response", "the last message is not from the assistant")
    if not any(t["role"] != "assistant" for t in turns[:-1]):
        raise _Bad("missing_prompt", "only assistant messages")
    if not message_text(last).strip():
        raise _Bad("empty_response")


def _check_values(value: Any, where: str = "") -> None:
    """Reject NaN/inf numbers and undecodable (non-UTF-8) text anywhere in a record."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _Bad("non_finite_number", f"{where or 'a field'} is {value}")
    if isinstance(value, str) and any("\udc80" <= ch <= "\udcff" for ch in value):
        raise _Bad("not_utf8", f"{where or 'a field'} has bytes that are not UTF-8")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_values(k, where)
            _check_values(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_values(v, f"{where}[{i}]")


def _optional(rec: dict, key: str, allowed: tuple[str, ...] | None = None) -> str | None:
    value = rec.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or (allowed and value not in allowed):
        raise _Bad(
            "bad_field_value",
            f"`{key}` must be one of {allowed}" if allowed else f"`{key}` must be a string",
        )
    return value


def users_columns(raw: list[tuple[int, Any]]) -> dict[str, str]:
    """Our optional fields that this file uses with values of its own, with one example value.

    A file's `label` (or `risk`, `meta`) is read as ours only when every value in it is ours.
    """
    found: dict[str, str] = {}
    for _, rec in raw:
        if not isinstance(rec, dict):
            continue
        for key, allowed in COLLIDING.items():
            value = rec.get(key)
            if key in found or value in (None, ""):
                continue
            ours = isinstance(value, dict) if allowed is None else value in allowed
            if not ours:
                found[key] = repr(value)[:40]
    return found


def _example(
    rec: Any, n: int, stem: str, source: str | None, theirs: dict[str, str]
) -> tuple[Example, str]:
    """Turn one raw record into an Example (and its format); raises _Bad."""
    if isinstance(rec, _Bad):
        raise rec
    if not isinstance(rec, dict):
        raise _Bad("not_an_object", f"got {type(rec).__name__}")
    _check_values(rec)
    fmt = detect_format(rec)
    turns = _turns(rec, fmt)
    if turns is not None:
        _check_conversation(turns)
        prompt = render_dialogue([(t["role"], message_text(t)) for t in turns[:-1]])
        response = message_text(turns[-1])
    elif fmt == "text":
        prompt, response = "", _str(rec, "text")
    else:
        prompt, response = flat_pair(rec, fmt)
    if not response.strip():
        raise _Bad("empty_response")
    rid = rec.get("id")
    if isinstance(rid, bool) or not isinstance(rid, str | int | type(None)):
        raise _Bad("bad_field_type", "`id` must be a string or integer")
    columns = {
        k: v
        for k, v in rec.items()
        if (k not in OUR_FIELDS | FORMAT_FIELDS[fmt] or k in theirs) and v not in (None, "")
    }
    ex = Example(
        id=str(rid) if rid not in (None, "") else f"{stem}-{n}",
        prompt=prompt,
        response=response,
        source=_optional(rec, "source") or source or stem,
        risk=None if "risk" in theirs else _optional(rec, "risk", RISKS),
        label=None if "label" in theirs else _optional(rec, "label", LABELS),
        meta={} if "meta" in theirs else (rec.get("meta") or {}),
        messages=turns,
        tools=_tools(rec) if "tools" in FORMAT_FIELDS[fmt] else None,
        plain=fmt == "text",
        line=n,
        columns=columns,
    )
    return ex, fmt


# ---------------------------------------------------------------- public API
def read_examples(
    path: str | Path, *, skip_invalid: bool = False, source: str | None = None
) -> tuple[list[Example], ReadReport]:
    """Read a user data file into Examples plus a ReadReport.

    Bad records (undecodable bytes, invalid JSON, unknown format, missing or empty response,
    duplicate id, NaN/inf numbers, ill-typed fields) are collected in the report. Unless
    `skip_invalid`, any bad record raises InputError naming the file, the first bad line and the
    counts per reason; with it they are skipped and listed in `report.problems`. An empty file (or
    one with no valid record) always raises. `source` is the default for records without one
    (else the file stem).
    """
    path = Path(path)
    raw, unit = _records(path)
    report = ReadReport(path=str(path), unit=unit, skipped=skip_invalid)
    stem = path.name.split(".")[0]
    theirs = users_columns(raw)
    for key, example in theirs.items():
        report.notes.append(
            f"`{key}` holds values that are not forgetfilter's (e.g. {example}): kept as your "
            "column, not read as ground truth"
        )
    examples: list[Example] = []
    first_seen: dict[str, int] = {}
    for n, rec in raw:
        try:
            ex, fmt = _example(rec, n, stem, source, theirs)
            if ex.id in first_seen:
                raise _Bad("duplicate_id", f"id {ex.id!r} first used at {unit} {first_seen[ex.id]}")
        except _Bad as bad:
            report.problems.append(Problem(n, bad.reason, bad.detail))
            continue
        first_seen[ex.id] = n
        report.formats[fmt] += 1
        report.user_columns.update(ex.columns)
        examples.append(ex)
    report.n_records = len(examples)
    if report.problems and not skip_invalid:
        raise report.error()
    if not examples:
        if not report.problems:
            raise InputError("no valid records", str(path))
        first = report.problems[0]
        counts = ", ".join(f"{r}: {len(w)}" for r, w in sorted(report.by_reason().items()))
        raise InputError(
            f"no valid records ({len(report.problems)} skipped: {counts}); the first bad one: "
            f"{first.reason} at {unit} {first.line}",
            str(path),
            first.line,
        )
    return examples, report


def write_examples(path: str | Path, examples: list[Example]) -> int:
    """Write Examples as JSONL (`Example.to_dict()` per line) atomically; returns the count."""
    return write_jsonl(path, (ex.to_dict() for ex in examples))
