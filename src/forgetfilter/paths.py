"""Where data and caches live: $FORGETFILTER_DATA (or --data-dir) and $FORGETFILTER_CACHE."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir(override: str | Path | None = None) -> Path:
    """The data directory laid out like `shared/data` (see SOURCES.md there).

    Falls back to `<cache>/data`, where missing public files are downloaded when online.
    """
    if override:
        return Path(override).expanduser()
    env = os.environ.get("FORGETFILTER_DATA")
    if env:
        return Path(env).expanduser()
    return cache_dir() / "data"


def cache_dir() -> Path:
    """The cache root: `$FORGETFILTER_CACHE` or `~/.cache/forgetfilter`."""
    env = os.environ.get("FORGETFILTER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "forgetfilter"
