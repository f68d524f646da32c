"""User data files: every format and container reads back, and every problem is reported, not raised raw."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forgetfilter.cli import main
from forgetfilter.errors import InputError
from forgetfilter.readers import read_examples, write_examples
from forgetfilter.records import Example

# One record per format, and the Example each must read as.
CHAT = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Name?"},
    {"role": "assistant", "content": "Bot."},
]
FORMATS = {
    "prompt_response": (
        {
            "id": "a",
            "prompt": "Hi?",
            "response": "Hello.",
            "risk": "harm",
            "label": "safe",
            "meta": {"k": 1},
        },
        Example("a", "Hi?", "Hello.", "src", "harm", "safe", {"k": 1}, line=1),
    ),
    "prompt_completion": (
        {"id": "b", "prompt": "2+2=", "completion": "4", "source": "math"},
        Example("b", "2+2=", "4", "math", line=1),
    ),
    "alpaca": (
        {"id": "c", "instruction": "Add.", "input": "2 and 3", "output": "5"},
        Example("c", "Add.\n\n2 and 3", "5", "src", line=1),
    ),
    "chat": (
        {"id": "d", "messages": CHAT},
        Example(
            "d", "User: Hi\nAssistant: Hello\nUser: Name?", "Bot.", "src", messages=CHAT, line=1
        ),
    ),
    "sharegpt": (
        {
            "id": "f",
            "conversations": [
                {"from": "system", "value": "Be kind."},
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Hello"},
            ],
        },
        Example(
            "f",
            "System: Be kind.\nUser: Hi",
            "Hello",
            "src",
            messages=[
                {"role": "system", "content": "Be kind."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
            ],
            line=1,
        ),
    ),
    "conversational": (
        {"id": "g", "prompt": CHAT[:3], "completion": CHAT[3:]},
        Example(
            "g", "User: Hi\nAssistant: Hello\nUser: Name?", "Bot.", "src", messages=CHAT, line=1
        ),
    ),
    "text": (
        {"id": "e", "text": "Just some text."},
        Example("e", "", "Just some text.", "src", plain=True, line=1),
    ),
}


def _write(path: Path, rows: list[dict]) -> Path:
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif suffix == ".csv":
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, keys)
            w.writeheader()
            for r in rows:
                w.writerow(
                    {k: json.dumps(v) if isinstance(v, list | dict) else v for k, v in r.items()}
                )
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_round_trips(tmp_path: Path, suffix: str, fmt: str) -> None:
    row, expected = FORMATS[fmt]
    examples, report = read_examples(_write(tmp_path / f"data{suffix}", [row]), source="src")
    line = 2 if suffix == ".csv" else 1  # a CSV record's line counts the header
    assert examples == [dataclasses.replace(expected, line=line)]
    assert report.formats == {fmt: 1} and not report.problems
    out = tmp_path / "back.jsonl"
    write_examples(out, examples)
    back = read_examples(out)[0]
    assert [(e.id, e.prompt, e.response, e.messages) for e in back] == [
        (e.id, e.prompt, e.response, e.messages) for e in examples
    ]


def test_mixed_formats_in_one_file_are_counted(tmp_path: Path) -> None:
    rows = [row for row, _ in FORMATS.values()]
    examples, report = read_examples(_write(tmp_path / "mix.jsonl", rows))
    assert len(examples) == len(FORMATS) and report.formats == dict.fromkeys(FORMATS, 1)


def test_json_data_wrapper_and_alpaca_no_input(tmp_path: Path) -> None:
    path = tmp_path / "d.json"
    path.write_text(
        json.dumps({"data": [{"instruction": "Say hi", "input": "<No Input>", "output": "hi"}]})
    )
    (ex,), _ = read_examples(path)
    assert ex.prompt == "Say hi" and ex.id == "d-1"


def test_missing_ids_are_stable(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "my.data.jsonl",
        [{"prompt": "p", "response": "r"}, {"prompt": "q", "response": "s"}],
    )
    ids = [ex.id for ex in read_examples(path)[0]]
    assert ids == ["my-1", "my-2"] == [ex.id for ex in read_examples(path)[0]]


def _check(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["data", "check", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_broken_json_line_exits_2_naming_the_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        '{"prompt": "a", "response": "b"}\n{"prompt": "a", "respo\n{"prompt": "c", "response": "d"}\n'
    )
    rc, out, err = _check(capsys, str(path))
    assert rc == 2 and "bad.jsonl:2:" in err and "invalid_json" in err and "Traceback" not in err
    assert "2 records" in out
    rc, out, _ = _check(capsys, str(path), "--skip-invalid")
    assert rc == 0 and "skipped: 1" in out and "invalid_json: 1 (lines 2)" in out


def test_problems_are_collected_with_lines_and_reasons(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    lines = [
        b'{"id": "x", "prompt": "a", "response": "b"}',
        b'{"id": "x", "prompt": "c", "response": "d"}',  # duplicate id
        b'{"prompt": "caf\xe9", "response": "b"}',  # Latin-1 byte
        b'{"prompt": "a", "response": "  "}',  # empty response
        b'{"prompt": "a"}',  # missing response
        b'{"question": "a"}',  # unknown format
        b'{"prompt": "a", "response": "b", "meta": {"score": NaN}}',  # NaN
        b"[1, 2]",  # not an object
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    examples, report = read_examples(path, skip_invalid=True)
    assert [ex.id for ex in examples] == ["x"]
    assert [(p.line, p.reason) for p in report.problems] == [
        (2, "duplicate_id"),
        (3, "not_utf8"),
        (4, "empty_response"),
        (5, "missing_response"),
        (6, "unknown_format"),
        (7, "non_finite_number"),
        (8, "not_an_object"),
    ]
    with pytest.raises(InputError, match=r"p\.jsonl:2: duplicate_id.*7 bad records") as info:
        read_examples(path)
    assert info.value.line == 2


def test_non_utf8_via_cli(tmp_path: Path, capsys) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"prompt,response\nok,fine\ncaf\xe9,bad\n")
    rc, _, err = _check(capsys, str(path))
    assert rc == 2 and "latin.csv:3:" in err and "not_utf8" in err


def test_empty_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(InputError, match="empty"):
        read_examples(path, skip_invalid=True)
    rc, _, err = _check(capsys, str(path))
    assert rc == 2 and "empty" in err


def test_unknown_extension_and_bad_container(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="unknown file type"):
        read_examples(tmp_path / "x.txt")
    (tmp_path / "x.json").write_text('{"prompt": 1')
    with pytest.raises(InputError, match="invalid JSON"):
        read_examples(tmp_path / "x.json")
    (tmp_path / "x.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match="Parquet"):
        read_examples(tmp_path / "x.parquet")


def test_one_megabyte_line(tmp_path: Path) -> None:
    big = "word " * 220_000
    path = _write(
        tmp_path / "big.jsonl", [{"prompt": "p", "response": big}, {"prompt": "q", "response": "r"}]
    )
    examples, report = read_examples(path)
    assert len(examples) == 2 and len(examples[0].response) > 1_000_000 and not report.problems


def test_data_dir_finds_shared_data_above_the_working_directory(tmp_path, monkeypatch):
    from forgetfilter.paths import data_dir

    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "SOURCES.md").write_text("x")
    (tmp_path / "repo" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "repo" / "sub")
    monkeypatch.delenv("FORGETFILTER_DATA", raising=False)
    assert data_dir() == (tmp_path / "shared" / "data").resolve()
    monkeypatch.setenv("FORGETFILTER_DATA", str(tmp_path / "elsewhere"))
    assert data_dir() == tmp_path / "elsewhere"


# ---------------------------------------------------------------- conversations
def _read_one(tmp_path: Path, row: dict, **kw):
    examples, report = read_examples(_write(tmp_path / "one.jsonl", [row]), **kw)
    return examples[0], report


def test_tool_calls_and_tool_results_are_kept(tmp_path: Path) -> None:
    call = {
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    row = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
            {"role": "assistant", "content": "It is sunny."},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}],
    }
    ex, _ = _read_one(tmp_path, row)
    assert ex.messages[1]["tool_calls"] == [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert ex.messages[2] == {"role": "tool", "content": "sunny", "tool_call_id": "c1"}
    assert ex.tools == row["tools"] and ex.response == "It is sunny."
    assert "get_weather" in ex.prompt  # the call is in the text view too
    last_call = dict(row, messages=row["messages"][:2])
    ex, _ = _read_one(tmp_path, last_call)
    assert "get_weather" in ex.response and ex.messages[-1]["tool_calls"]


def test_content_parts_are_joined_and_other_parts_rejected(tmp_path: Path) -> None:
    parts = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    ok = {"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "Hi"}]}
    ex, _ = _read_one(tmp_path, ok)
    assert ex.messages[0]["content"] == "Hello there" and ex.prompt == "Hello there"
    image = [{"type": "image_url", "image_url": {"url": "x.png"}}]
    bad = {"messages": [{"role": "user", "content": image}, {"role": "assistant", "content": "A"}]}
    path = _write(tmp_path / "img.jsonl", [ok, bad])
    with pytest.raises(InputError, match=r"img\.jsonl:2: unsupported_content.*'image_url' part"):
        read_examples(path)


def test_sharegpt_with_system_function_call_and_observation(tmp_path: Path) -> None:
    row = {
        "system": "Use tools.",
        "tools": '[{"name": "search"}]',
        "conversations": [
            {"from": "human", "value": "Find cats."},
            {"from": "function_call", "value": '{"name": "search", "arguments": {"q": "cats"}}'},
            {"from": "observation", "value": "3 cats"},
            {"from": "gpt", "value": "I found 3 cats."},
        ],
    }
    ex, report = _read_one(tmp_path, row)
    assert [m["role"] for m in ex.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert ex.messages[2]["tool_calls"][0]["function"] == {
        "name": "search",
        "arguments": {"q": "cats"},
    }
    assert ex.tools == [{"name": "search"}] and report.formats == {"sharegpt": 1}
    bad = {"conversations": [{"from": "robot", "value": "x"}, {"from": "gpt", "value": "y"}]}
    with pytest.raises(InputError, match="bad_field_value.*'robot'"):
        read_examples(_write(tmp_path / "bad.jsonl", [bad]))


def test_alpaca_with_system_and_history(tmp_path: Path) -> None:
    row = {
        "instruction": "And 3+3?",
        "input": "",
        "output": "6",
        "system": "You do sums.",
        "history": [["2+2?", "4"]],
    }
    ex, _ = _read_one(tmp_path, row)
    assert ex.messages == [
        {"role": "system", "content": "You do sums."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6"},
    ]


def test_colliding_and_unknown_columns_are_kept_as_the_users(tmp_path: Path) -> None:
    rows = [
        {"prompt": "a", "response": "b", "label": True, "risk": "harm", "lang": "en"},
        {"prompt": "c", "response": "d", "label": "positive", "score": 0.5},
    ]
    examples, report = read_examples(_write(tmp_path / "u.jsonl", rows), skip_invalid=False)
    assert [ex.label for ex in examples] == [None, None]  # not read as ground truth
    assert [ex.risk for ex in examples] == ["harm", None]  # every risk value is ours
    assert examples[0].columns == {"label": True, "lang": "en"}
    assert examples[1].columns == {"label": "positive", "score": 0.5}
    assert report.user_columns == {"label", "lang", "score"}
    assert len(report.notes) == 1 and "`label`" in report.notes[0]
    assert "kept as your column" in report.summary()
    ours = [{"prompt": "a", "response": "b", "label": "unsafe"}]
    (ex,), report = read_examples(_write(tmp_path / "ours.jsonl", ours))
    assert ex.label == "unsafe" and not report.notes


@pytest.mark.parametrize(
    "row, reason",
    [
        ({"chosen": "a", "rejected": "b"}, "unsupported_format"),
        (
            {
                "messages": [
                    {"role": "wizard", "content": "x"},
                    {"role": "assistant", "content": "y"},
                ]
            },
            "bad_field_value",
        ),
        ({"messages": [{"role": "user", "content": "x"}]}, "missing_response"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "missing_prompt"),
        (
            {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},
            "empty_response",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [{}]},
                ]
            },
            "bad_field_type",
        ),
        (
            {
                "prompt": [{"role": "user", "content": "x"}],
                "completion": [{"role": "user", "content": "y"}],
            },
            "bad_field_value",
        ),
        ({"instruction": "x", "output": "y", "history": [["only one"]]}, "bad_field_type"),
        (
            {"conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "y"}]},
            "bad_field_type",
        ),
    ],
)
def test_conversations_that_cannot_be_represented_are_rejected(tmp_path: Path, row, reason) -> None:
    good = {"prompt": "p", "response": "r"}
    path = _write(tmp_path / "c.jsonl", [good, row])
    with pytest.raises(InputError, match=rf"c\.jsonl:2: {reason}"):
        read_examples(path)
    examples, report = read_examples(path, skip_invalid=True)
    assert len(examples) == 1 and [(p.line, p.reason) for p in report.problems] == [(2, reason)]


def test_csv_cells_holding_conversations(tmp_path: Path) -> None:
    rows = [
        {"id": "x", "messages": CHAT, "note": "[not json"},
        {"id": "y", "prompt": "[INST] hi", "response": "ok"},
    ]
    examples, _ = read_examples(_write(tmp_path / "c.csv", rows))
    assert examples[0].messages == CHAT and examples[0].columns == {"note": "[not json"}
    assert examples[1].prompt == "[INST] hi"
