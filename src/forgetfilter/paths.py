"""Where data and caches live: $FORGETFILTER_DATA (or --data-dir) and $FORGETFILTER_CACHE."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir(override: str | Path | None = None) -> Path:
    """The data directory laid out like `shared/data` (see SOURCES.md there).

    Without an override or `$FORGETFILTER_DATA`: a `shared/data` in the current directory or a parent
    (as beside a checkout of this project), else `<cache>/data`, where missing public files are
    downloaded when online.
    """
    if override:
        return Path(override).expanduser()
    env = os.environ.get("FORGETFILTER_DATA")
    if env:
        return Path(env).expanduser()
    return find_shared_data() or cache_dir() / "data"


def find_shared_data(start: Path | None = None) -> Path | None:
    """A `shared/data` (holding SOURCES.md) in the current directory or one of its parents."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "shared" / "data"
        if (candidate / "SOURCES.md").is_file():
            return candidate
    return None


def cache_dir() -> Path:
    """The cache root: `$FORGETFILTER_CACHE` or `~/.cache/forgetfilter`."""
    env = os.environ.get("FORGETFILTER_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "forgetfilter"
