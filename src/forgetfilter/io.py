"""Atomic file writes (temp file, fsync, rename) and JSON/JSONL helpers used by every stage."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ForgetFilterError


def _disk_error(path: Path, exc: OSError) -> ForgetFilterError:
    return ForgetFilterError(f"cannot write {path}: {exc.strerror or exc} (earlier outputs are left intact)")


@contextmanager
def atomic_open(path: str | Path, mode: str = "w"):
    """Open a temp file next to `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _disk_error(path, exc) from None
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _silent_unlink(tmp)
        raise _disk_error(path, exc) from None
    except BaseException:
        _silent_unlink(tmp)
        raise


def _silent_unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def dumps(obj: Any) -> str:
    """Canonical one-line JSON (sorted keys, no NaN) so equal data gives equal bytes."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, allow_nan=False)


def write_json(path: str | Path, obj: Any) -> None:
    """Write pretty, key-sorted JSON atomically."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
        fh.write("\n")


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write one canonical JSON object per line atomically; returns the number of rows."""
    n = 0
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(dumps(row) + "\n")
            n += 1
    return n


def read_json(path: str | Path) -> Any:
    """Read a JSON file written by this project."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file written by this project (for user files use `forgetfilter.readers`)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def replace_dir(tmp_dir: str | Path, final_dir: str | Path) -> None:
    """Move a fully written temp directory into place, replacing any previous one."""
    final_dir = Path(final_dir)
    old = final_dir.with_name(final_dir.name + ".old")
    try:
        if old.exists():
            shutil.rmtree(old)
        if final_dir.exists():
            os.replace(final_dir, old)
        os.replace(tmp_dir, final_dir)
        if old.exists():
            shutil.rmtree(old)
    except OSError as exc:
        raise _disk_error(final_dir, exc) from None


def temp_dir_for(final_dir: str | Path) -> Path:
    """A fresh temp directory beside `final_dir`, for writing before `replace_dir`."""
    final_dir = Path(final_dir)
    try:
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", suffix=".tmp", dir=final_dir.parent))
    except OSError as exc:
        raise _disk_error(final_dir, exc) from None
