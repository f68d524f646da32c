"""User data files: every format and container reads back, and every problem is reported, not raised raw."""

from __future__ import annotations

import csv
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
        Example("a", "Hi?", "Hello.", "src", "harm", "safe", {"k": 1}),
    ),
    "prompt_completion": (
        {"id": "b", "prompt": "2+2=", "completion": "4", "source": "math"},
        Example("b", "2+2=", "4", "math"),
    ),
    "alpaca": (
        {"id": "c", "instruction": "Add.", "input": "2 and 3", "output": "5"},
        Example("c", "Add.\n\n2 and 3", "5", "src"),
    ),
    "chat": (
        {
            "id": "d",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Name?"},
                {"role": "assistant", "content": "Bot."},
            ],
        },
        Example("d", "User: Hi\nAssistant: Hello\nUser: Name?", "Bot.", "src"),
    ),
    "text": ({"id": "e", "text": "Just some text."}, Example("e", "", "Just some text.", "src")),
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
    assert examples == [expected]
    assert report.formats == {fmt: 1} and not report.problems
    out = tmp_path / "back.jsonl"
    write_examples(out, examples)
    assert read_examples(out)[0] == examples


def test_mixed_formats_in_one_file_are_counted(tmp_path: Path) -> None:
    rows = [row for row, _ in FORMATS.values()]
    examples, report = read_examples(_write(tmp_path / "mix.jsonl", rows))
    assert len(examples) == 5 and report.formats == dict.fromkeys(FORMATS, 1)


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
