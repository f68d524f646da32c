"""The cleaned data comes back in the user's own container and schema, kept records only."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from forgetfilter.cleaned import write_cleaned
from forgetfilter.readers import read_examples

# Lines a user's tools might write: odd spacing, escapes, key order, CRLF, extra columns.
JSONL_LINES = [
    b'{"prompt": "a", "response": "b", "my_score": 0.25}\n',
    b'{ "response" : "caf\\u00e9",   "prompt":"\xc3\xa9t\xc3\xa9" }\r\n',
    b"\n",  # blank: not a record
    b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "tag": [1, 2]}\n',
    b'{"prompt": "bad"}\n',  # rejected (no response)
    b'{"instruction": "x", "output": "y"}',  # no final newline
]


def _lines_of(examples, *ids):
    return {ex.line for ex in examples if ex.id in ids}


def test_jsonl_kept_lines_are_byte_identical(tmp_path: Path) -> None:
    src = tmp_path / "data.jsonl"
    src.write_bytes(b"".join(JSONL_LINES))
    examples, report = read_examples(src, skip_invalid=True)
    assert [ex.line for ex in examples] == [1, 2, 4, 6] and len(report.problems) == 1
    out = tmp_path / "clean" / "data.jsonl"
    assert write_cleaned(src, [1, 2, 4, 6], out) == 4
    assert out.read_bytes() == b"".join(JSONL_LINES[i] for i in (0, 1, 3)) + JSONL_LINES[5] + b"\n"
    write_cleaned(src, [2, 6], out)
    assert out.read_bytes() == JSONL_LINES[1] + JSONL_LINES[5] + b"\n"
    back, _ = read_examples(out)
    assert [(e.prompt, e.response) for e in back] == [("été", "café"), ("x", "y")]


def test_gzip_jsonl_is_compressed_again(tmp_path: Path) -> None:
    src = tmp_path / "data.jsonl.gz"
    src.write_bytes(gzip.compress(b"".join(JSONL_LINES[:2])))
    write_cleaned(src, [2], tmp_path / "out.jsonl.gz")
    assert gzip.decompress((tmp_path / "out.jsonl.gz").read_bytes()) == JSONL_LINES[1]


@pytest.mark.parametrize("wrapped", [False, True])
def test_json_keeps_its_container(tmp_path: Path, wrapped: bool) -> None:
    rows = [{"prompt": f"p{i}", "response": f"r{i}", "extra": {"k": i}} for i in range(4)]
    obj = {"version": 2, "data": rows} if wrapped else rows
    src = tmp_path / "d.json"
    src.write_text(json.dumps(obj, indent=2))
    write_cleaned(src, [1, 3], tmp_path / "o.json")
    got = json.loads((tmp_path / "o.json").read_text())
    want = [rows[0], rows[2]]
    assert got == ({"version": 2, "data": want} if wrapped else want)


def test_csv_keeps_header_and_cells(tmp_path: Path) -> None:
    src = tmp_path / "d.csv"
    with open(src, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["prompt", "response", "note"])
        w.writerow(["a", "b", "first"])
        w.writerow(["multi\nline", "r, with comma", 'say "hi"'])
        w.writerow(["c", "d", ""])
    examples, _ = read_examples(src)
    keep = [ex.line for ex in examples[1:]]
    write_cleaned(src, keep, tmp_path / "o.csv")
    with open(tmp_path / "o.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [
        ["prompt", "response", "note"],
        ["multi\nline", "r, with comma", 'say "hi"'],
        ["c", "d", ""],
    ]


def test_parquet_keeps_schema(tmp_path: Path) -> None:
    table = pa.table({"prompt": ["a", "b", "c"], "response": ["x", "y", "z"], "w": [1.0, 2.0, 3.0]})
    src = tmp_path / "d.parquet"
    pq.write_table(table, src)
    write_cleaned(src, [1, 3], tmp_path / "o.parquet")
    got = pq.read_table(tmp_path / "o.parquet")
    assert got.schema == table.schema and got.to_pylist() == [
        table.to_pylist()[0],
        table.to_pylist()[2],
    ]
