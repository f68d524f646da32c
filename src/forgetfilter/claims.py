"""Claiming an output directory for one configuration: the rule every command follows.

`forgetfilter run`, `experiment` and `demo` each record what a directory was made with in a
marker file (`config.json`, `experiment.json`, `demo_fingerprint.json`). On a rerun:

- the same configuration continues (resume);
- another configuration that the caller can carry the work over to (`carry_over`: `run` redoes
  only the stages that read what changed) continues too;
- another configuration, or work with no marker (an older version's), is refused with the
  changed fields named, unless `force`, which discards the old work first;
- a directory whose marker differs but that holds no work yet (a run that failed before
  writing anything) is taken over without `force`; what it held is discarded either way.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from pathlib import Path

from . import io
from .errors import ConfigError


def changed_keys(have: dict, want: dict) -> list[str]:
    """The top-level keys whose values differ (sorted)."""
    return sorted(k for k in {*have, *want} if have.get(k) != want.get(k))


def claim(
    out: Path,
    marker: str,
    want: dict,
    *,
    force: bool,
    what: str,
    has_work: Callable[[], bool] | None = None,
    discard: Callable[[], None] | None = None,
    same: Callable[[dict, dict], bool] = operator.eq,
    changed: Callable[[dict, dict], list[str]] = changed_keys,
    carry_over: Callable[[dict, dict], bool] | None = None,
) -> None:
    """Take `out` for the configuration `want` (recorded in `out/marker`), or raise ConfigError.

    `what` names the directory's contents in messages ("a run"); `has_work()` says whether
    anything worth keeping is there (default: anything besides the marker); `discard()` removes
    it (default: everything in `out`); `same(have, want)` decides whether
    a recorded configuration is this one (when it is but differs in form, e.g. a file named by
    another path, the marker is rewritten); `changed(have, want)` names what differs;
    `carry_over(have, want)` (without `force`, when there is work) adapts the work to `want` and
    returns True, or returns False to leave the refusal to the rule.
    """
    out = Path(out)
    path = out / marker
    has_work = has_work or (lambda: out.exists() and any(p.name != marker for p in out.iterdir()))
    discard = discard or (lambda: io.clear_dir(out))
    if path.exists():
        have = io.read_json(path)
        if same(have, want):
            if have != want:
                io.write_json(path, want)
            return
        if has_work() and not force:
            if carry_over is not None and carry_over(have, want):
                io.write_json(path, want)
                return
            names = ", ".join(changed(have, want)) or "input files"
            raise ConfigError(
                f"{out} holds {what} made with another configuration (changed: {names}); "
                "use another --out, or --force to discard it and start again"
            )
        discard()
    elif has_work():
        if not force:
            raise ConfigError(
                f"{out} holds {what} that recorded no configuration (an older version's?); use "
                "another --out, or --force to discard it and start again"
            )
        discard()
    io.write_json(path, want)
