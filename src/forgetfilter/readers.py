"""Reading user data files into `Example` records, with a report of every problem found.

Accepted containers (by file name; `.gz` is decompressed first): `.jsonl`/`.ndjson` (one object a
line), `.json` (a list of objects or `{"data": [...]}`), `.csv` (header row; `messages` and `meta`
cells may hold JSON) and `.parquet`. Each record may use any of these formats (mixing is fine):

| format | fields | prompt / response |
|---|---|---|
| `prompt_response` | prompt, response | as given |
| `prompt_completion` | prompt, completion | as given |
| `alpaca` | instruction, input, output | instruction + "\\n\\n" + input (input omitted when empty or "<No Input>") / output |
| `chat` | messages: [{role, content}, ...] | the last turn (must be `assistant`) is the response; the earlier turns are the prompt: a lone user turn as is, else `User: ...` / `Assistant: ...` / `System: ...` lines |
| `text` | text | the prompt is empty and the whole text is the response |

Optional fields `id`, `source`, `risk`, `label` and `meta` are kept; other fields are ignored and
listed in the report. A record without an id gets `<file stem>-<n>` (n = its line, or its 1-based
position in a JSON list or Parquet file), which is stable across runs.
"""

from __future__ import annotations

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
KEPT_FIELDS = {"id", "source", "risk", "label", "meta"}
FORMAT_FIELDS = {
    "chat": {"messages"},
    "alpaca": {"instruction", "input", "output"},
    "prompt_response": {"prompt", "response"},
    "prompt_completion": {"prompt", "completion"},
    "text": {"text"},
}


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
    names = {"user": "User", "assistant": "Assistant", "system": "System"}
    return "\n".join(f"{names.get(role, role.title())}: {text.strip()}" for role, text in turns)


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
        ignored_fields: unknown fields seen (not kept).
    """

    path: str
    unit: str = "line"
    n_records: int = 0
    formats: Counter = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    skipped: bool = False
    ignored_fields: set[str] = field(default_factory=set)

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
        if self.ignored_fields:
            lines.append(f"ignored fields: {', '.join(sorted(self.ignored_fields))}")
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
def _raw_bytes(path: Path) -> tuple[bytes, str]:
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


def _csv_cell(key: str, value: str) -> Any:
    if key in ("messages", "meta") and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if key in ("meta", "id", "source", "risk", "label") and value == "":
        return None
    return value


def _parquet_records(path: Path, data: bytes) -> list[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(pa.BufferReader(data)).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"not a readable Parquet file: {exc}", str(path)) from None
    return list(enumerate(rows, 1))


def _records(path: Path) -> tuple[list[tuple[int, Any]], str]:
    data, suffix = _raw_bytes(path)
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


def _prompt_response(rec: dict, fmt: str) -> tuple[str, str]:
    if fmt == "prompt_response":
        return _str(rec, "prompt"), _str(rec, "response")
    if fmt == "prompt_completion":
        return _str(rec, "prompt"), _str(rec, "completion")
    if fmt == "alpaca":
        return alpaca_prompt(_str(rec, "instruction"), _str(rec, "input", required=False)), _str(
            rec, "output"
        )
    if fmt == "text":
        return "", _str(rec, "text")
    return _chat(rec.get("messages"))


def _chat(messages: Any) -> tuple[str, str]:
    if not isinstance(messages, list) or not messages:
        raise _Bad("bad_field_type", "`messages` must be a non-empty list of {role, content}")
    turns = []
    for m in messages:
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise _Bad("bad_field_type", "each message needs string `role` and `content`")
        turns.append((m["role"].lower(), m["content"]))
    if turns[-1][0] != "assistant":
        raise _Bad("missing_response", "the last message is not from the assistant")
    if len(turns) == 1:
        raise _Bad("missing_prompt", "only an assistant message")
    return render_dialogue(turns[:-1]), turns[-1][1]


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


def _example(rec: Any, n: int, stem: str, source: str | None) -> tuple[Example, str]:
    """Turn one raw record into an Example (and its format); raises _Bad."""
    if isinstance(rec, _Bad):
        raise rec
    if not isinstance(rec, dict):
        raise _Bad("not_an_object", f"got {type(rec).__name__}")
    _check_values(rec)
    fmt = detect_format(rec)
    prompt, response = _prompt_response(rec, fmt)
    if not response.strip():
        raise _Bad("empty_response")
    meta = rec.get("meta") or {}
    if not isinstance(meta, dict):
        raise _Bad("bad_field_type", "`meta` must be an object")
    rid = rec.get("id")
    if isinstance(rid, bool) or not isinstance(rid, str | int | type(None)):
        raise _Bad("bad_field_type", "`id` must be a string or integer")
    ex = Example(
        id=str(rid) if rid not in (None, "") else f"{stem}-{n}",
        prompt=prompt,
        response=response,
        source=_optional(rec, "source") or source or stem,
        risk=_optional(rec, "risk", RISKS),
        label=_optional(rec, "label", LABELS),
        meta=meta,
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
    examples: list[Example] = []
    first_seen: dict[str, int] = {}
    for n, rec in raw:
        try:
            ex, fmt = _example(rec, n, stem, source)
            if ex.id in first_seen:
                raise _Bad("duplicate_id", f"id {ex.id!r} first used at {unit} {first_seen[ex.id]}")
        except _Bad as bad:
            report.problems.append(Problem(n, bad.reason, bad.detail))
            continue
        first_seen[ex.id] = n
        report.formats[fmt] += 1
        report.ignored_fields.update(
            k
            for k, v in rec.items()
            if k not in KEPT_FIELDS | FORMAT_FIELDS[fmt] and v not in (None, "")
        )
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
