"""Building the paper's noisy finetuning mixtures, safety-finetuning sets and held-out evaluation sets.

`build_mixture` writes into `out_dir`:

* `noisy.jsonl`: round(N·R) unsafe examples of one risk plus N - round(N·R) others: with the
  `paper` composition thirds of same-risk safe examples, SQuAD train and Alpaca; with
  `instruct` (what users' task data looks like) 80% Alpaca and 20% SQuAD (`mixture_counts`);
  shuffled. With `match_lengths` the task examples are drawn instead so that their answers are
  as long as the unsafe ones (`_match_lengths`): the composition then follows from the lengths.
* `safe.jsonl`: same-risk safe examples for the safety-finetuning stage, plus `n_helpful`
  Alpaca examples (helpful answers no other file holds) when asked.
* `trusted.jsonl` (with `n_trusted`): clean examples in the composition of the noisy set's clean
  part, drawn in one draw with that part and split off at random (so the two are exchangeable:
  same sources, same groups), in no other file: what `run --trusted` calibrates the cut on.
* `eval/<risk>.jsonl`, `eval/squad.jsonl` (SQuAD dev), `eval/alpaca.jsonl`: held-out sets.
* `manifest.json`: config, seed, pool sizes, counts per source and label per file, sha256 per file.

Only the `experiment` partition of `datasets` is used. Sets are disjoint by `meta.group` (the BBQ
template `(category, question_index)`, the normalised harmful request or toxic source text), so no
template or request is shared between the noisy set, the safety set and the evaluation sets.
Evaluation items are chosen by a seed-independent stable hash (the same held-out sets for every
seed); training sets are drawn with the seed. Same config and data give byte-identical files.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import datasets
from .errors import ConfigError, ForgetFilterError
from .io import file_sha256, write_json, write_jsonl
from .metrics import MATCH_RATIO
from .records import RISKS, Example

DEFAULT_MAX_SAFE = 7000
# At most this many examples per group (request) in the noisy set: JailbreakBench has up to ~9
# jailbroken responses to each of its 100 goals, which would otherwise fill the unsafe half with
# near-duplicates of a few dozen requests.
GROUP_CAP = {"bias": None, "toxicity": None, "harm": 3}


@dataclass(frozen=True)
class MixtureConfig:
    """What to build.

    Attributes:
        risk: `bias`, `toxicity` or `harm`.
        n: size N of the noisy finetuning set.
        unsafe_ratio: fraction R of unsafe examples in it (round(N·R) of them, halves round up).
        n_safe: size of the safety-finetuning set; None = min(7000, what the data still has).
        n_eval: size of each evaluation set.
        seed: draws the training sets and shuffles the noisy set.
        allow_fewer: build with fewer examples (recorded in the manifest) instead of failing.
        composition: the rest of the noisy set: `paper` (thirds of same-risk safe, SQuAD,
            Alpaca) or `instruct` (80% Alpaca, 20% SQuAD, no same-risk safe examples).
        n_helpful: Alpaca examples added to the safety set (helpful answers beside the
            refusals), disjoint from the noisy and evaluation sets.
        n_trusted: size of a clean trusted sample (`trusted.jsonl`): drawn with the noisy set's
            clean part and split off at random (same composition, no unsafe examples), in no other
            file.
        unsafe_sources: draw the unsafe examples only from these sources (`Example.source`, e.g.
            `hh-rlhf` or `jailbreakbench` for harm); empty = every source of the risk, in the
            data's priority order.
        match_lengths: draw the task examples (SQuAD and Alpaca together, noisy and trusted)
            as long as the unsafe answers: in turn over the unsafe answers, the unused one
            nearest in length (within 1.25x), so answer length says nothing about which examples
            are unsafe. Only with `instruct` and unsafe examples; the SQuAD/Alpaca split follows
            from the lengths.
    """

    risk: str = field(metadata={"choices": RISKS})
    n: int
    unsafe_ratio: float = 0.5
    n_safe: int | None = None
    n_eval: int = 300
    seed: int = 0
    allow_fewer: bool = False
    composition: str = field(default="paper", metadata={"choices": ("paper", "instruct")})
    n_helpful: int = 0
    n_trusted: int = 0
    unsafe_sources: tuple[str, ...] = ()
    match_lengths: bool = False

    def validate(self) -> None:
        """Raise ConfigError for values that cannot describe a mixture."""
        if self.risk not in RISKS:
            raise ConfigError(f"unknown risk {self.risk!r} (choose from {', '.join(RISKS)})")
        if self.n < 0 or self.n_eval < 0 or (self.n_safe is not None and self.n_safe < 0):
            raise ConfigError("`n`, `n_safe` and `n_eval` must not be negative")
        if not 0.0 <= self.unsafe_ratio <= 1.0:
            raise ConfigError(f"`unsafe_ratio` must be in [0, 1], got {self.unsafe_ratio}")
        if self.composition not in COMPOSITIONS or self.n_helpful < 0 or self.n_trusted < 0:
            raise ConfigError(
                f"`composition` must be one of {', '.join(COMPOSITIONS)}; `n_helpful`, `n_trusted` >= 0"
            )
        if self.match_lengths and (
            self.composition != "instruct"
            or not mixture_counts(self.n, self.unsafe_ratio, self.composition)["unsafe"]
        ):
            raise ConfigError("`match_lengths` needs composition `instruct` and unsafe examples")


COMPOSITIONS = ("paper", "instruct")


def mixture_counts(n: int, unsafe_ratio: float, composition: str = "paper") -> dict[str, int]:
    """Composition of a noisy set of size n.

    unsafe = floor(n·R + 0.5) (halves round up). `paper`: the other n - unsafe are split into
    thirds of same-risk safe, SQuAD and Alpaca, with the remainder going to safe first, then
    SQuAD. Example: n=1000, R=0.5 -> 500 unsafe, 167 safe, 167 SQuAD, 166 Alpaca. `instruct`:
    20% of the rest SQuAD (rounded), the others Alpaca.
    """
    unsafe = int(n * unsafe_ratio + 0.5)
    if composition == "instruct":
        squad = int(0.2 * (n - unsafe) + 0.5)
        return {"unsafe": unsafe, "safe": 0, "squad": squad, "alpaca": n - unsafe - squad}
    base, extra = divmod(n - unsafe, 3)
    return {
        "unsafe": unsafe,
        "safe": base + (extra >= 1),
        "squad": base + (extra >= 2),
        "alpaca": base,
    }


class _Shortfall:
    """Collects the sets the data could not fill."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, int]] = {}

    def check(self, name: str, wanted: int, got: int) -> None:
        if got < wanted:
            self.items[name] = {"wanted": wanted, "got": got}

    def message(self) -> str:
        parts = [
            f"{k}: wanted {v['wanted']}, only {v['got']} available" for k, v in self.items.items()
        ]
        return (
            "not enough data for this mixture ("
            + "; ".join(parts)
            + "); lower the counts or pass --allow-fewer"
        )


class _Groups:
    """A risk pool grouped by `meta.group`; every group goes to at most one set."""

    def __init__(self, pool: Iterable[Example]) -> None:
        self.groups: dict[str, list[Example]] = {}
        for ex in pool:
            self.groups.setdefault(ex.meta["group"], []).append(ex)
        self.used: set[str] = set()

    def available(self, want: Callable[[Example], bool]) -> int:
        return sum(want(ex) for g, exs in self.groups.items() if g not in self.used for ex in exs)

    def take(
        self,
        want: Callable[[Example], bool],
        n: int,
        order: Callable[[str], Any],
        rng_tag: str,
        cap: int | None = None,
    ) -> list[Example]:
        """Use whole groups in `order` until n wanted examples are collected; return n of them.

        With `cap`, at most `cap` examples of a group are used (the rest of the group is retired).
        """
        out: list[Example] = []
        for group in sorted((g for g in self.groups if g not in self.used), key=order):
            if len(out) >= n:
                break
            hits = [ex for ex in self.groups[group] if want(ex)]
            if hits:
                self.used.add(group)
                out += sorted(hits, key=lambda ex: _hash(rng_tag, ex.id))[:cap]
        return out[:n]

    def claim(self, groups: Iterable[str]) -> None:
        self.used.update(groups)


def _hash(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()


def _priority(group: list[Example], label: str) -> int:
    return min((ex.meta.get("priority", 0) for ex in group if ex.label == label), default=0)


def _is(label: str) -> Callable[[Example], bool]:
    return lambda ex: ex.label == label


def _select_eval(cfg: MixtureConfig, groups: _Groups, data_dir: Path) -> tuple[list[Example], int]:
    """Held-out risk items in seed-independent stable-hash order of their groups, and the pool size."""
    cands = _Groups(
        datasets.in_partition(datasets.risk_eval_candidates(cfg.risk, data_dir), "experiment")
    )
    available = cands.available(lambda ex: True)
    chosen = cands.take(lambda ex: True, cfg.n_eval, lambda g: _hash("eval", g), "eval")
    groups.claim(ex.meta["group"] for ex in chosen)
    return chosen, available


def _select_risk_sets(
    cfg: MixtureConfig, data_dir: Path, counts: dict[str, int], short: _Shortfall
):
    """(picked {unsafe, safe, trusted}, safety set, eval set, pool sizes) for the configured risk,
    group-disjoint."""
    groups = _Groups(
        datasets.in_partition(datasets.risk_examples(cfg.risk, data_dir), "experiment")
    )
    unsafe = _unsafe_from(cfg, groups)
    pool = {"unsafe": groups.available(unsafe), "safe": groups.available(_is("safe"))}
    evals, pool["eval"] = _select_eval(cfg, groups, data_dir)
    short.check(f"eval/{cfg.risk}.jsonl", cfg.n_eval, len(evals))
    picked = {}
    n_trusted = trusted_counts(cfg)["safe"]
    for role, label, want, n in (
        ("unsafe", "unsafe", unsafe, counts["unsafe"]),
        ("safe", "safe", _is("safe"), counts["safe"] + n_trusted),
    ):
        order = _training_order(groups, label, f"{cfg.seed}:{role}")
        picked[role] = groups.take(want, n, order, f"{cfg.seed}:{role}", GROUP_CAP[cfg.risk])
    picked["safe"], picked["trusted"] = _split_off(picked["safe"], n_trusted, cfg.seed)
    short.check(f"noisy unsafe ({cfg.risk})", counts["unsafe"], len(picked["unsafe"]))
    short.check(f"noisy safe ({cfg.risk})", counts["safe"], len(picked["safe"]))
    short.check(f"trusted safe ({cfg.risk})", n_trusted, len(picked["trusted"]))
    left = groups.available(_is("safe"))
    n_safe = min(DEFAULT_MAX_SAFE, left) if cfg.n_safe is None else cfg.n_safe
    order = _training_order(groups, "safe", f"{cfg.seed}:safety")
    safety = groups.take(_is("safe"), n_safe, order, f"{cfg.seed}:safety")
    short.check("safe.jsonl", n_safe, len(safety))
    pool["safe_left_for_safety_set"] = left
    return picked, safety, evals, pool


def _unsafe_from(cfg: MixtureConfig, groups: _Groups) -> Callable[[Example], bool]:
    """The unsafe examples the noisy set may draw; ConfigError for a source the risk lacks."""
    if not cfg.unsafe_sources:
        return _is("unsafe")
    have = {ex.source for exs in groups.groups.values() for ex in exs if ex.label == "unsafe"}
    unknown = sorted(set(cfg.unsafe_sources) - have)
    if unknown:
        raise ConfigError(
            f"unsafe_sources: no unsafe {cfg.risk} examples from {', '.join(unknown)} "
            f"(choose from {', '.join(sorted(have))})"
        )
    wanted = set(cfg.unsafe_sources)
    return lambda ex: ex.label == "unsafe" and ex.source in wanted


def _training_order(groups: _Groups, label: str, tag: str) -> Callable[[str], Any]:
    return lambda g: (_priority(groups.groups[g], label), _hash(tag, g))


def _select_task(
    cfg: MixtureConfig,
    data_dir: Path,
    counts: dict[str, int],
    short: _Shortfall,
    unsafe: Sequence[Example] = (),
):
    """(SQuAD train sample, Alpaca sample, SQuAD dev eval, Alpaca eval, helpful, trusted); Alpaca
    eval and helpful are disjoint from the rest."""
    squad = datasets.in_partition(datasets.squad_examples(data_dir, "train"), "experiment")
    dev = datasets.in_partition(datasets.squad_examples(data_dir, "dev"), "experiment")
    alpaca = sorted(
        datasets.in_partition(datasets.alpaca_examples(data_dir), "experiment"),
        key=lambda e: _hash("eval", e.id),
    )
    squad_eval = sorted(dev, key=lambda e: _hash("eval", e.id))[: cfg.n_eval]
    alpaca_eval, alpaca_rest = alpaca[: cfg.n_eval], alpaca[cfg.n_eval :]
    extra = trusted_counts(cfg)
    if cfg.match_lengths:
        squad_train, alpaca_train, helpful, trusted = _select_matched(
            cfg, counts, short, unsafe, squad, alpaca_rest
        )
        short.check("eval/squad.jsonl", cfg.n_eval, len(squad_eval))
        short.check("eval/alpaca.jsonl", cfg.n_eval, len(alpaca_eval))
        return squad_train, alpaca_train, squad_eval, alpaca_eval, helpful, trusted
    squad_drawn = _sample(squad, counts["squad"] + extra["squad"], f"{cfg.seed}:squad")
    squad_train, squad_trusted = _split_off(squad_drawn, extra["squad"], cfg.seed)
    n_alpaca = counts["alpaca"] + extra["alpaca"]
    drawn = _sample(alpaca_rest, n_alpaca + cfg.n_helpful, f"{cfg.seed}:alpaca")
    alpaca_train, alpaca_trusted = _split_off(drawn[:n_alpaca], extra["alpaca"], cfg.seed)
    helpful = drawn[n_alpaca:]
    trusted = squad_trusted + alpaca_trusted
    for name, want, got in (
        ("noisy squad", counts["squad"], squad_train),
        ("noisy alpaca", counts["alpaca"], alpaca_train),
        ("safe.jsonl helpful", cfg.n_helpful, helpful),
        ("trusted squad and alpaca", extra["squad"] + extra["alpaca"], trusted),
        ("eval/squad.jsonl", cfg.n_eval, squad_eval),
        ("eval/alpaca.jsonl", cfg.n_eval, alpaca_eval),
    ):
        short.check(name, want, len(got))
    return squad_train, alpaca_train, squad_eval, alpaca_eval, helpful, trusted


def _select_matched(
    cfg: MixtureConfig,
    counts: dict[str, int],
    short: _Shortfall,
    unsafe: Sequence[Example],
    squad: list[Example],
    alpaca: list[Example],
) -> tuple[list[Example], list[Example], list[Example], list[Example]]:
    """The `match_lengths` draw: (SQuAD, Alpaca, helpful, trusted), the task examples, noisy and
    trusted, matched in length to the unsafe answers; the helpful ones drawn first, unmatched."""
    helpful = _sample(alpaca, cfg.n_helpful, f"{cfg.seed}:alpaca")
    taken = {e.id for e in helpful}
    pool = [e for e in squad + alpaca if e.id not in taken]
    extra = trusted_counts(cfg)
    n_task = counts["squad"] + counts["alpaca"]
    n_trusted = extra["squad"] + extra["alpaca"]
    drawn = _match_lengths(pool, unsafe, n_task + n_trusted, f"{cfg.seed}:match")
    task, trusted = _split_off(drawn, n_trusted, cfg.seed)
    short.check("noisy task (length-matched)", n_task, len(task))
    short.check("trusted task (length-matched)", n_trusted, len(trusted))
    short.check("safe.jsonl helpful", cfg.n_helpful, len(helpful))
    squad_ids = {e.id for e in squad}
    return (
        [e for e in task if e.id in squad_ids],
        [e for e in task if e.id not in squad_ids],
        helpful,
        trusted,
    )


def _match_lengths(
    pool: list[Example], unsafe: Sequence[Example], n: int, tag: str
) -> list[Example]:
    """Up to n examples of `pool`: for i < n, the unused one whose answer is nearest in length
    (ties in seeded order) to the (i mod k)-th of the k unsafe answers (seeded order), none where
    no unused answer is within MATCH_RATIO of it (so the lengths follow the unsafe answers'; the
    nearest, not any within the ratio, since a pool's answers thin out with length)."""
    if not unsafe:
        return []
    targets = [len(e.response) for e in sorted(unsafe, key=lambda e: _hash(tag, e.id))]
    keys = {e.id: _hash(tag, e.id) for e in pool}
    by_length = sorted(pool, key=lambda e: (len(e.response), keys[e.id]))
    lengths = [len(e.response) for e in by_length]
    used: set[int] = set()
    out: list[Example] = []
    for i in range(n):
        length = targets[i % len(targets)]
        lo = bisect.bisect_left(lengths, length / MATCH_RATIO)
        hi = bisect.bisect_right(lengths, length * MATCH_RATIO)
        free = [j for j in range(lo, hi) if j not in used]
        if free:
            j = min(free, key=lambda j: (abs(lengths[j] - length), keys[by_length[j].id]))
            used.add(j)
            out.append(by_length[j])
    return out


def _split_off(drawn: list[Example], k: int, seed: int) -> tuple[list[Example], list[Example]]:
    """(the rest, k of `drawn` chosen at random): the trusted sample is a random part of one draw
    with the noisy set's clean examples, so the two are exchangeable (same groups, same sources)."""
    if not k:
        return drawn, []
    chosen = {e.id for e in sorted(drawn, key=lambda e: _hash(f"{seed}:trusted", e.id))[:k]}
    return [e for e in drawn if e.id not in chosen], [e for e in drawn if e.id in chosen]


def trusted_counts(cfg: MixtureConfig) -> dict[str, int]:
    """Composition of the trusted sample: the noisy set's without unsafe examples."""
    return mixture_counts(cfg.n_trusted, 0.0, cfg.composition)


def _sample(pool: list[Example], n: int, tag: str) -> list[Example]:
    return sorted(pool, key=lambda e: _hash(tag, e.id))[:n]


def build_mixture(cfg: MixtureConfig, data_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write noisy.jsonl, safe.jsonl, eval/*.jsonl and manifest.json into `out_dir`; return the manifest.

    Raises ForgetFilterError naming every set the data cannot fill, unless `cfg.allow_fewer`
    (then the shortfall is recorded under `manifest["shortfall"]`).
    """
    cfg.validate()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    counts, short = mixture_counts(cfg.n, cfg.unsafe_ratio, cfg.composition), _Shortfall()
    picked, safety, evals, pool = _select_risk_sets(cfg, data_dir, counts, short)
    unsafe, safe_in, safe_trusted = picked["unsafe"], picked["safe"], picked["trusted"]
    squad, alpaca, squad_eval, alpaca_eval, helpful, task_trusted = _select_task(
        cfg, data_dir, counts, short, unsafe
    )
    if helpful:
        safety = sorted(safety + helpful, key=lambda e: _hash(f"{cfg.seed}:safety", e.id))
    if short.items and not cfg.allow_fewer:
        raise ForgetFilterError(short.message())
    noisy = sorted(
        unsafe + safe_in + squad + alpaca, key=lambda e: _hash(f"{cfg.seed}:noisy", e.id)
    )
    files = {
        "noisy.jsonl": noisy,
        "safe.jsonl": safety,
        **({"trusted.jsonl": _trusted(cfg, safe_trusted + task_trusted)} if cfg.n_trusted else {}),
        f"eval/{cfg.risk}.jsonl": evals,
        "eval/squad.jsonl": squad_eval,
        "eval/alpaca.jsonl": alpaca_eval,
    }
    manifest = _manifest(cfg, counts, pool, short, data_dir)
    manifest["files"] = {name: _write(out_dir / name, exs) for name, exs in files.items()}
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def _trusted(cfg: MixtureConfig, examples: list[Example]) -> list[Example]:
    return sorted(examples, key=lambda e: _hash(f"{cfg.seed}:trusted", e.id))


def _write(path: Path, examples: list[Example]) -> dict[str, Any]:
    n = write_jsonl(path, (ex.to_dict() for ex in examples))
    by = Counter(f"{ex.source}:{ex.label}" for ex in examples)
    return {"n": n, "by_source_label": dict(sorted(by.items())), "sha256": file_sha256(path)}


def _manifest(
    cfg: MixtureConfig, counts: dict, pool: dict, short: _Shortfall, data_dir: Path
) -> dict:
    risk_stats = datasets.source_stats(data_dir, cfg.risk)[cfg.risk]
    return {
        "format": 1,
        "config": {  # (the later fields only when set: older manifests stay as they were)
            k: list(v) if isinstance(v, tuple) else v
            for k, v in asdict(cfg).items()
            if not (
                k in ("composition", "n_helpful", "n_trusted", "unsafe_sources", "match_lengths")
                and v == MixtureConfig.__dataclass_fields__[k].default
            )
        },
        "seed": cfg.seed,
        "planned": counts,
        "pool_experiment": pool,
        "source_stats": risk_stats,
        "shortfall": short.items,
        "align_percent": datasets.ALIGN_PERCENT,
    }
