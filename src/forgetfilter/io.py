"""Atomic file writes (temp file, fsync, rename) and JSON/JSONL helpers used by every stage.

Also the small pieces that make a run directory safe to interrupt: `run_lock` (one process per
run directory), `remove_stale_temps` (temp files of a killed process) and the fault-injection hook
`fault_point` used by the reliability tests.

Fault injection: `FORGETFILTER_FAULT_AT=<point>` kills the process with SIGKILL (no cleanup, like
`kill -9`) when it reaches `<point>`. Points: `write:<file name>` (a file's content is in its temp
file, not yet renamed into place), and the pipeline's `stage:<stage>` (after a stage's outputs are
written) and `<scores_before|scores_after>:<k>` (after score shard k). Unset, it costs one
environment lookup.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ForgetFilterError

FAULT_ENV = "FORGETFILTER_FAULT_AT"
TEMP_SUFFIX = ".tmp"
# errno values that mean "the disk cannot take this write" (full, quota, read-only, too large).
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


def fault_point(name: str) -> None:
    """Fault injection for the reliability tests: SIGKILL this process when $FORGETFILTER_FAULT_AT == name."""
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


@functools.cache
def _umask() -> int:
    """The process umask, read once (from /proc on Linux, else by setting and restoring it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _default_mode(fd_or_path: int | str, base: int) -> None:
    """Give a temp file (0o666) or dir (0o777) the permissions a plain open/mkdir would have.

    `tempfile` creates them private (0o600 / 0o700), which would make every output unreadable to
    the user's group and to tools run as another user.
    """
    mode = base & ~_umask()
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, mode)
    else:
        os.chmod(fd_or_path, mode)


def _disk_error(path: Path, exc: OSError) -> ForgetFilterError:
    return ForgetFilterError(
        f"cannot write {path}: {exc.strerror or exc} (earlier outputs are left intact)"
    )


@contextmanager
def atomic_open(path: str | Path, mode: str = "w"):
    """Open a temp file next to `path`; on success it replaces `path` in one rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        _default_mode(fd, 0o666)
    except OSError as exc:
        raise _disk_error(path, exc) from None
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        fault_point(f"write:{path.name}")
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


def clear_dir(path: str | Path) -> None:
    """Remove everything inside `path` (the directory itself stays)."""
    for item in Path(path).iterdir():
        shutil.rmtree(item) if item.is_dir() else item.unlink()


def temp_dir_for(final_dir: str | Path) -> Path:
    """A fresh temp directory beside `final_dir`, for writing before `replace_dir`."""
    final_dir = Path(final_dir)
    try:
        final_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{final_dir.name}.", suffix=".tmp", dir=final_dir.parent)
        _default_mode(tmp, 0o777)
        return Path(tmp)
    except OSError as exc:
        raise _disk_error(final_dir, exc) from None


def remove_stale_temps(root: str | Path) -> list[Path]:
    """Delete temp files and dirs (`.<name>.<random>.tmp`, `.<name>.tmp`) left under `root` by a killed process.

    Only call this while holding `run_lock(root)`: a live writer's temp files look the same.
    Returns what was removed.
    """
    root = Path(root)
    found = list(root.rglob(f".*{TEMP_SUFFIX}")) if root.exists() else []
    removed = []
    for p in sorted(found, key=lambda q: len(q.parts)):
        if not p.exists() and not p.is_symlink():
            continue  # inside a temp dir removed just before
        shutil.rmtree(
            p, ignore_errors=True
        ) if p.is_dir() and not p.is_symlink() else _silent_unlink(str(p))
        removed.append(p)
    return removed


@contextmanager
def run_lock(directory: str | Path, what: str = "run") -> Iterator[None]:
    """Hold an exclusive lock on `directory` (created if needed); a second holder gets a clear error.

    The lock is an flock on `directory/.lock`, released by the OS when the process ends, so a
    killed process never leaves a stale lock behind.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _disk_error(directory, exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ForgetFilterError(
                f"{directory} is in use by another {what} (wait for it to finish, or use another --out)"
            ) from None
        yield
    finally:
        os.close(fd)


@contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock held for the duration of the block (POSIX `flock`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (a missing or unreadable file is a clear error)."""
    import hashlib

    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError as exc:
        raise ForgetFilterError(f"cannot read {path}: {exc.strerror or exc}") from None
