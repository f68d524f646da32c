"""The user's records back in their own form: the kept part of an input file, ready to train on.

`write_cleaned(path, keep, out)` writes the records of `path` whose position (`Example.line`:
the line of a JSONL/CSV file, the 1-based position in a JSON list or Parquet file) is in `keep`,
in the input's own container and schema, in input order:

- JSONL: each kept line byte for byte as it was (a missing final newline is added; a UTF-8 byte
  order mark at the start of the file is not a record's and is dropped);
- JSON: the same list (or `{"data": [...]}` object with its other keys) holding the kept records;
- CSV: the same header and the kept rows' cells as they were;
- Parquet: the kept rows with the file's schema;
- `.gz`: the same, compressed again.

Blank lines and rejected records are not part of it (`inputs.json` lists what was rejected).
"""

from __future__ import annotations

import csv
import gzip
import io as _io
import json
from collections.abc import Collection
from pathlib import Path

from . import io
from .readers import file_bytes


def write_cleaned(path: str | Path, keep: Collection[int], out: str | Path) -> int:
    """Write the records of `path` at positions `keep` to `out`; returns how many were written."""
    path, out = Path(path), Path(out)
    data, suffix = file_bytes(path)
    wanted = set(keep)
    if suffix in (".jsonl", ".ndjson"):
        body, n = _jsonl(data, wanted)
    elif suffix == ".json":
        body, n = _json(data, wanted)
    elif suffix == ".csv":
        body, n = _csv(data, wanted)
    else:
        body, n = _parquet(data, wanted)
    if path.suffix.lower() == ".gz":
        body = gzip.compress(body, mtime=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_open(out, "wb") as fh:
        fh.write(body)
    return n


def _jsonl(data: bytes, wanted: set[int]) -> tuple[bytes, int]:
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    kept = [lines[n - 1] for n in sorted(wanted) if 0 < n <= len(lines)]
    return b"".join(line + b"\n" for line in kept), len(kept)


def _json(data: bytes, wanted: set[int]) -> tuple[bytes, int]:
    obj = json.loads(data.decode("utf-8").removeprefix("\ufeff"))
    records = obj["data"] if isinstance(obj, dict) else obj
    kept = [r for n, r in enumerate(records, 1) if n in wanted]
    result = {**obj, "data": kept} if isinstance(obj, dict) else kept
    indent = 2 if b"\n" in data.strip() else None
    return (json.dumps(result, ensure_ascii=False, indent=indent) + "\n").encode(), len(kept)


def _csv(data: bytes, wanted: set[int]) -> tuple[bytes, int]:
    reader = csv.reader(_io.StringIO(data.decode("utf-8").removeprefix("\ufeff"), newline=""))
    buffer = _io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(next(reader))
    n = 0
    for row in reader:
        if reader.line_num in wanted:
            writer.writerow(row)
            n += 1
    return buffer.getvalue().encode(), n


def _parquet(data: bytes, wanted: set[int]) -> tuple[bytes, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(data))
    rows = [n - 1 for n in sorted(wanted) if 0 < n <= table.num_rows]
    sink = pa.BufferOutputStream()
    pq.write_table(table.take(rows), sink)
    return sink.getvalue().to_pybytes(), len(rows)
