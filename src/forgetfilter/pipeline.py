"""ForgetFilter (Algorithm 1 of Zhao et al., 2024) as a staged, resumable, auditable run.

Stages, each writing its result under the run directory:

1. ``inputs``        read and validate the noisy and safe files (counts of rejected lines)
   ``scores_m0``     (loss signal) response NLL of every noisy example on M0: the reference of
                     `learning` and M0's `surprise` (parts of the default scores,
                     `relative+learning` for tiny, `relative+surprise` for pretrained models)
2. ``m1``            finetune M0 on the noisy data -> M1
3. ``scores_before`` score every noisy example on M1
4. ``m2``            finetune M1 for a few steps on the safe data -> M2 (optionally scoring a curve)
5. ``scores_after``  score every noisy example on M2
6. ``filter``        forgetting = change of score; remove the examples above phi
7. ``final``         finetune M0 on the kept examples (skipped with ``final=False``)

A stage whose output is complete is skipped on rerun; training and scoring continue where they
stopped (training from its last checkpoint: `save_every`). A rerun whose settings differ only in
what later stages read (the cut, the recipe, the safety set or finetune, the final finetune: each
stage's `reads`) keeps the stages before the first one affected and redoes the rest. Training
and scoring see records without labels; labels are read only by `summary.summarise` (its own
module) to evaluate the removal.

Reliability (tested in tests/test_reliability.py): every file is written atomically (`io`), so a
process killed at any point (even `kill -9`) leaves only whole files, and rerunning the same command
ends with the same kept/removed sets and scores as an uninterrupted run. One process at a time may
use a run directory (`io.run_lock`); temp files of a killed process are removed on the next start.
A full or read-only disk stops the run with a clear error and leaves completed stages intact.
Fault-injection points for those tests: `stage:<name>` after each stage and `<scores file
stem>:<k>` after score shard k (see `io.fault_point`).

Several processes (`torchrun --nproc_per_node N -m forgetfilter.cli run ...` or `accelerate launch`):
every process trains each stage together (see `training`), scoring shards are shared out among the
processes, and the main process alone takes the lock, filters and writes the run's files; the
outputs are the same as with one process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import claims, filters, io, recipes, signals
from .errors import ConfigError, ForgetFilterError
from .recipes import forgetting
from .records import Example, content
from .share import unsafe_share
from .signals import check_finite
from .summary import summarise
from .thresholds import METHODS, ThresholdChoice, ThresholdConfig
from .training import TrainConfig

SCORE_SHARD = 256
SCORE_DTYPES = ("fp32", "bf16", "fp16", "train")  # `train`: the noisy finetune's dtype


@dataclass
class RunConfig:
    """Configuration of one ForgetFilter run.

    Attributes:
        model: the aligned model M0 (Hugging Face id, local path, or `tiny`).
        signal: `loss` (teacher-forced response NLL) or `rouge` (the paper's ROUGE-1 of greedy generations).
        normalise: the filter's score, a recipe of `recipes.RECIPES`: `none` (plain difference),
            `relative` (relative to the score before: the paper's forgetting), `relative+static`,
            `relative+learning` (mean rank of relative forgetting and of learning over M0; loss
            signal only), `relative+surprise` (mean rank of relative forgetting and of M0's NLL
            of the response; loss signal only) or `reversion` (the share of what was learned
            that was undone). None =
            the preset's `loss_recipe` for the loss signal (`relative+surprise` for pretrained models,
            `relative+learning` for the built-in `tiny`; with `screen_model`, the screen model's),
            `relative` for rouge.
        neighbours: average the filter's score (as ranks) over each noisy example and its this
            many most similar ones (TF-IDF cosine of the conversation's text: `neighbours`); 0 =
            each example's own score (the paper's). None = the preset's (5 for pretrained models,
            0 for the built-in `tiny`), with the loss signal and the `forgetfilter` filter; 0
            otherwise (the other filters take none).
        safety_steps: optimizer steps of safety finetuning (M1 -> M2); None = one epoch of the safe set.
        noisy_train: training settings for M0 -> M1 (its length is `screen_epochs` or
            `screen_steps` when set) and for the final model.
        safety_train: training settings for M1 -> M2 (its max_steps is set from `safety_steps`).
        threshold: how phi is chosen.
        final: train the delivered model on the kept examples.
        score_batch_size: batch size of scoring passes.
        score_dtype: precision of the scoring passes: `fp32` (default: a pretrained model's
            per-example forgetting is a few thousandths of a nat, finer than bf16 activations
            resolve), `bf16` or `fp16`, or `train` (the noisy finetune's `dtype`: bf16 on a GPU
            that supports it, faster, and what runs recorded before this setting used).
        max_new_tokens: generation budget of the rouge signal (None: each target's length + 8, at most 500).
        compile_generation: rouge signal on CUDA: compile decoding (static KV cache + torch.compile
            through transformers). Once compiled, decoding ran 3.7x faster on an H200 (GPT-2 small
            shape, batch 64), but the first call took 15 s; no effect on the CPU or on results.
        curve_points: also score at this many evenly spaced checkpoints of safety finetuning
            and report the area under each example's forgetting curve (0 = off).
        skip_invalid: skip invalid input lines (listed and counted) instead of stopping.
        seed: seed of every training stage and of the threshold fit.
        filter: which filter decides the removals (`filters.FILTERS`): `forgetfilter` (the
            method), or the `static` or `random` baseline on the same scores.
        screen_model: a model (smaller, cheaper) that runs the filtering stages in place of
            `model`: it is M0 of the noisy and safety finetunes and of every scoring pass, with
            `noisy_train` and `safety_train` as its settings; `model` is finetuned once, on the
            kept data (`final_train`). None: `model` runs every stage.
        screen_steps: optimizer steps of the noisy finetune that produces the scores (M0 -> M1),
            shorter than the delivered finetune, which keeps its own length. None: `noisy_train`'s
            (or `screen_epochs`).
        screen_epochs: epochs of the noisy finetune that produces the scores (M0 -> M1); the
            delivered finetune keeps `noisy_train`'s (or `final_train`'s). None: `noisy_train`'s.
            `screen_steps` wins when both are set. The preset's: 1 for pretrained models (longer,
            a pretrained M1 memorises the task data, whose drift then swamps the unsafe examples'
            forgetting: README, "How long the noisy finetune runs"), None for the built-in `tiny`.
        final_train: training settings of the delivered model (the final finetune). None: those
            of `noisy_train`; with `screen_model`, the target model's preset.
    """

    #: An unset (None) nested config that a setting of one of its fields starts from this one.
    INHERITS = {"final_train": "noisy_train"}

    model: str = "tiny"
    signal: str = field(default="loss", metadata={"choices": signals.names})
    normalise: str | None = field(
        default=None, metadata={"choices": lambda: tuple(recipes.RECIPES)}
    )
    neighbours: int | None = None
    safety_steps: int | None = None
    noisy_train: TrainConfig = field(default_factory=TrainConfig)
    safety_train: TrainConfig = field(default_factory=TrainConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    final: bool = True
    score_batch_size: int = 32
    score_dtype: str = field(default="fp32", metadata={"choices": SCORE_DTYPES})
    max_new_tokens: int | None = None
    compile_generation: bool = False
    curve_points: int = 0
    skip_invalid: bool = False
    seed: int = 0
    filter: str = field(
        default="forgetfilter", metadata={"choices": lambda: tuple(filters.FILTERS)}
    )
    screen_model: str | None = None
    screen_steps: int | None = None
    screen_epochs: float | None = None
    final_train: TrainConfig | None = None

    def __post_init__(self) -> None:
        kind = signals.get(self.signal).kind
        if self.normalise is None:
            self.normalise = preset_for(self.screener).loss_recipe if kind == "nll" else "relative"
        if self.neighbours is None:
            smooths = kind == "nll" and self.filter == "forgetfilter"
            self.neighbours = preset_for(self.screener).neighbours if smooths else 0
        if self.neighbours < 0:
            raise ConfigError(f"`neighbours` must be 0 (off) or more, got {self.neighbours}")
        if self.neighbours and self.filter != "forgetfilter":
            raise ConfigError(
                f"`neighbours` smooths the forgetfilter filter's score; `filter` {self.filter} "
                "takes none (leave it unset or 0)"
            )
        if self.normalise not in recipes.RECIPES:
            raise ConfigError(
                f"unknown `normalise` {self.normalise!r}; choose from {', '.join(recipes.RECIPES)}"
            )
        recipe = recipes.get(self.normalise)
        if kind not in recipe.kinds:
            raise ConfigError(
                f"`normalise` {self.normalise} needs a `signal` of kind {' or '.join(recipe.kinds)}"
                + (" (M0 is scored by an NLL-like signal)" if "m0" in recipe.needs else "")
            )
        t = self.threshold
        if not filters.get(self.filter).automatic and t.method == "auto":
            raise ConfigError(
                f"`filter` {self.filter} needs `threshold.fraction` or `threshold.threshold`"
            )
        if t.method not in METHODS:
            raise ConfigError(
                f"unknown threshold method {t.method!r}; choose from {', '.join(METHODS)}"
            )
        if t.method == "threshold" and (t.threshold is None or not math.isfinite(t.threshold)):
            raise ConfigError(f"`threshold.threshold` must be a finite number, got {t.threshold}")
        if t.method == "fraction" and (t.fraction is None or not 0.0 <= t.fraction <= 1.0):
            raise ConfigError(f"`threshold.fraction` must be in [0, 1], got {t.fraction}")
        cap = t.max_remove
        if cap is not None and not (0 <= cap < 1 or (cap >= 1 and float(cap).is_integer())):
            raise ConfigError(
                f"`threshold.max_remove` must be a number of examples (1, 2, ...) or a share in "
                "[0, 1), "
                f"got {cap}"
            )
        if not 0.0 < t.max_false_removal < 1.0:
            raise ConfigError(
                f"`threshold.max_false_removal` must be in (0, 1), got {t.max_false_removal}"
            )
        self.noisy_train.validate()
        self.safety_train.validate()
        if self.final_train == self.noisy_train:  # a copy of the noisy finetune's sets nothing
            self.final_train = None
        if self.final_train is not None:
            self.final_train.validate()
        if self.score_dtype not in SCORE_DTYPES:
            raise ConfigError(
                f"`score_dtype` must be one of {', '.join(SCORE_DTYPES)}, not {self.score_dtype!r}"
            )
        if (
            self.score_batch_size < 1
            or self.curve_points < 0
            or (self.safety_steps is not None and self.safety_steps < 1)
            or (self.screen_steps is not None and self.screen_steps < 1)
            or (self.screen_epochs is not None and not self.screen_epochs > 0)
        ):
            raise ConfigError(
                "`score_batch_size`, `safety_steps`, `screen_steps` and `screen_epochs` must be "
                "positive, `curve_points` >= 0"
            )
        if self.screen_model is not None and not str(self.screen_model).strip():
            raise ConfigError("`screen_model` must name a model (or be unset)")

    @property
    def screener(self) -> str:
        """The model that runs the filtering stages: `screen_model`, or `model` itself."""
        return self.screen_model or self.model

    def fingerprint(self) -> dict:
        """What must match for a rerun to continue (everything but `final` and speed options)."""
        from .models import canonical_name

        d = asdict(self)
        d.pop("final")
        d.pop("compile_generation")
        for stage in ("noisy_train", "safety_train", "final_train"):  # metrics' sink: no result
            if d[stage] is not None:
                d[stage].pop("report_to")
        d["model"] = canonical_name(self.model)
        if screen_cfg(self) == noisy_cfg(self):  # an M1 as long as the noisy finetune sets nothing
            d["screen_epochs"] = None
        if self.screen_model is not None:
            d["screen_model"] = canonical_name(self.screen_model)
        return d


@dataclass
class RunResult:
    """Where a finished run put its outputs, and its summary."""

    out_dir: Path
    summary: dict
    kept_ids: list[str]
    removed_ids: list[str]


class Ranks:
    """The processes of a multi-process launch (`WORLD_SIZE` > 1), or just this one."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.state = None
        self.rank = 0
        if self.world > 1:
            import torch
            from accelerate import PartialState

            self.state = PartialState(cpu=not torch.cuda.is_available())
            self.rank = self.state.process_index

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> str | None:
        """This process's device when several share the machine (None: the default)."""
        return str(self.state.device) if self.state is not None else None

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def main_first(self, fn):
        """`fn()` on the main process, then on the others once it is done (they read its files)."""
        result = fn() if self.main else None
        self.barrier()
        return result if self.main else fn()


class Run:
    """One run directory: stage bookkeeping, timings and paths."""

    def __init__(self, out_dir: Path, cfg: RunConfig, ranks: Ranks | None = None):
        self.dir, self.cfg = Path(out_dir), cfg
        self.ranks = ranks or Ranks()
        self.timings: dict[str, float] = (
            io.read_json(self.timings_path) if self.timings_path.exists() else {}
        )
        self.done: list[str] = (
            io.read_json(self.done_path)["done"] if self.done_path.exists() else []
        )

    @property
    def timings_path(self) -> Path:
        return self.dir / "timings.json"

    @property
    def done_path(self) -> Path:
        return self.dir / "stages.json"

    def completed(self, stage: Stage) -> bool:
        """Whether `stage` finished in an earlier entry and its outputs are all still there."""
        return stage.name in self.done and all(any(self.dir.glob(g)) for g in stage.produces)

    def stage(self, stage: Stage, fn):
        """Run `fn` and record its wall time in the entry that completed it (a resumed stage's
        earlier, interrupted entries are not counted); a stage completed before this entry
        (whose rerun only reads its outputs back) keeps its time (main process)."""
        complete = self.completed(stage)
        t0 = time.perf_counter()
        result = fn()
        if not complete:
            self.timings[stage.name] = round(time.perf_counter() - t0, 3)
            self.done = [*dict.fromkeys([*self.done, stage.name])]
            if self.ranks.main:
                io.write_json(self.timings_path, self.timings)
                io.write_json(self.done_path, {"done": self.done})
        io.fault_point(f"stage:{stage.name}")
        return result


def run_forgetfilter(
    noisy_path: str | Path,
    safe_path: str | Path,
    out_dir: str | Path,
    cfg: RunConfig,
    *,
    trusted: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> RunResult:
    """Run every stage of ForgetFilter, skipping the ones already complete in `out_dir`.

    `progress=False` hides the progress bars (training, scoring). `trusted`: a file of the
    user's own examples known to be clean; they are finetuned and scored with the noisy data,
    calibrate the cut (`thresholds.conformal`) and the unsafe-share estimate (`share`), and never
    reach the kept, removed or cleaned files.

    Holds `out_dir`'s lock for the whole run. A disk that is full or read-only becomes a
    ForgetFilterError; the stages completed before stay in place and a rerun continues from them.
    """
    out_dir = Path(out_dir)
    ranks = Ranks()
    lock = io.run_lock(out_dir, "forgetfilter run") if ranks.main else contextlib.nullcontext()
    with lock:
        if ranks.main:
            io.remove_stale_temps(out_dir)
        try:
            return _run_stages(noisy_path, safe_path, out_dir, cfg, force, ranks, progress, trusted)
        except OSError as exc:
            if exc.errno not in io.DISK_ERRNOS:
                raise
            where = f" ({exc.filename})" if exc.filename else ""
            raise ForgetFilterError(
                f"cannot write under {out_dir}: {exc.strerror or exc}{where}; completed stages are "
                "kept: free space (or make it writable) and rerun the same command to continue"
            ) from None


class State:
    """What the stages of one run share: the settings, and each finished stage's result."""

    def __init__(
        self, run: Run, noisy_path, safe_path, ranks: Ranks, progress: bool = True, trusted=None
    ):
        self.run, self.cfg, self.ranks, self.progress = run, run.cfg, ranks, progress
        self.noisy_path, self.safe_path, self.trusted_path = noisy_path, safe_path, trusted
        self.results: dict[str, object] = {}

    def __getitem__(self, stage: str):
        return self.results.get(stage)

    @property
    def noisy(self) -> list[Example]:
        return self.results["inputs"][0]

    @property
    def trusted(self) -> list[Example]:
        return self.results["inputs"][2]

    @property
    def scored(self) -> list[Example]:
        """What is finetuned into M1 and scored: the noisy examples, then the trusted ones."""
        return self.noisy + self.trusted

    @property
    def kept(self) -> list[Example]:
        removed = self.results["filter"][1]
        return [ex for ex in self.noisy if ex.id not in removed]


@dataclass(frozen=True)
class Stage:
    """One stage of a run, declared: what it writes (globs under the run directory), when it
    runs, and how. `--force` and resuming act on what the stages declare."""

    name: str
    produces: tuple[str, ...]
    run: Callable[[State], object]
    when: Callable[[State], bool] = lambda s: True
    main_only: bool = False
    #: What it writes only with some settings (a curve, a trusted sample's scores): discarded
    #: with the stage, not required for it to count as complete.
    optional: tuple[str, ...] = ()
    #: Settings (`RunConfig` fields, or `<role> file` for an input file) that this stage is the
    #: first to read; every later stage depends on them through it. What no stage names is read
    #: by every stage.
    reads: tuple[str, ...] = ()

    @property
    def writes(self) -> tuple[str, ...]:
        """Every glob of its outputs, required or optional."""
        return self.produces + self.optional


def needed(cfg: RunConfig) -> frozenset[str]:
    """The models a run trains and scores: what its filter reads (`filters.Filter.needs`), plus
    M0 beside M1 for an NLL-like signal (the scores file records learning, M1 against M0)."""
    need = filters.get(cfg.filter).needs(cfg.normalise)
    if "m1" in need and signals.kind_of(cfg.signal) == "nll":
        need |= {"m0"}
    return need | ({"m1"} if "m2" in need else set())


def _needs(model: str) -> Callable[[State], bool]:
    return lambda s: model in needed(s.cfg)


def _score(model: Callable[[State], str], name: str) -> Callable[[State], object]:
    return lambda s: score_stage(
        model(s), s.scored, s.run.dir / f"{name}.jsonl", s.cfg, s.ranks, s.progress
    )


PIPELINE: tuple[Stage, ...] = (
    Stage(
        "inputs",
        ("inputs.json",),
        lambda s: load_inputs(
            s.run.dir, s.noisy_path, s.safe_path, s.cfg, write=s.ranks.main, trusted=s.trusted_path
        ),
    ),
    Stage(
        "scores_m0",
        ("scores_m0.*",),
        _score(lambda s: s.cfg.screener, "scores_m0"),
        when=_needs("m0"),
    ),
    Stage(
        "m1",
        ("m1",),
        lambda s: train_stage(
            s.cfg.screener, s.scored, s.run.dir / "m1", screen_cfg(s.cfg), s.progress
        ),
        when=_needs("m1"),
        reads=("screen_steps", "screen_epochs"),
    ),
    Stage(
        "scores_before",
        ("scores_before.*",),
        _score(lambda s: s["m1"], "scores_before"),
        when=_needs("m1"),
    ),
    Stage(
        "m2",
        ("m2",),
        lambda s: safety_stage(
            s["m1"], s.results["inputs"][1], s.scored, s.run.dir, s.cfg, s.ranks.main, s.progress
        ),
        when=_needs("m2"),
        optional=("curve",),
        reads=("safety_steps", "safety_train", "curve_points", "safe file"),
    ),
    Stage(
        "scores_after",
        ("scores_after.*",),
        _score(lambda s: s["m2"], "scores_after"),
        when=_needs("m2"),
    ),
    Stage(
        "filter",
        ("filter.json", "scores.jsonl", "kept.jsonl", "removed.jsonl"),
        lambda s: s.ranks.main_first(
            lambda: filter_stage(
                s.run.dir,
                s.noisy,
                s["scores_before"],
                s["scores_after"],
                s.cfg,
                s["scores_m0"],
                trusted=s.trusted,
            )
        ),
        optional=("trusted_scores.jsonl",),
        reads=("threshold", "filter", "normalise", "neighbours"),
    ),
    Stage(
        "clean", ("clean",), lambda s: clean_stage(s.run.dir, s.noisy_path, s.kept), main_only=True
    ),
    Stage(
        "final",
        ("final",),
        lambda s: train_stage(
            s.cfg.model, s.kept, s.run.dir / "final", final_cfg(s.cfg), s.progress
        ),
        when=lambda s: s.cfg.final and bool(s.kept),
        reads=("final_train",),
    ),
)
STAGES = tuple(stage.name for stage in PIPELINE)
# Progress bar names of the training stages.
STAGE_LABELS = {"m1": "m1: noisy finetune", "m2": "m2: safety finetune", "final": "final finetune"}
# What a run writes besides its stages' outputs.
RUN_FILES = ("summary.json", "timings.json", "stages.json", "report.html", "report")


def _run_stages(
    noisy_path,
    safe_path,
    out_dir: Path,
    cfg: RunConfig,
    force: bool,
    ranks: Ranks,
    progress: bool = True,
    trusted=None,
) -> RunResult:
    """The stages of `run_forgetfilter`, in order (the main process holds the directory's lock)."""
    inputs = [noisy_path, safe_path] + ([trusted] if trusted is not None else [])
    if ranks.main:  # it holds the lock and has cleaned up
        check_config(out_dir, cfg, inputs, force)
    ranks.barrier()
    run = Run(out_dir, cfg, ranks)
    state = State(run, noisy_path, safe_path, ranks, progress, trusted)
    for stage in PIPELINE:
        if stage.when(state) and (ranks.main or not stage.main_only):
            state.results[stage.name] = run.stage(stage, lambda st=stage: st.run(state))
    choice, removed = state["filter"]
    kept, final_skipped = state.kept, None
    if cfg.final and not kept:
        final_skipped = (
            f"the final model was not trained: the threshold removes all {len(state.noisy)} "
            "examples (choose a higher `threshold.threshold` or a smaller `threshold.fraction`)"
        )
    summary = summarise(run, choice, final_skipped) if ranks.main else None
    if ranks.main:
        write_report(run.dir)
    ranks.barrier()
    summary = summary or io.read_json(run.dir / "summary.json")
    return RunResult(run.dir, summary, [ex.id for ex in kept], sorted(removed))


def write_report(run_dir: Path) -> Path | None:
    """`report.html` and report/*.png of a finished run; a failure is a warning, not a lost run
    (`forgetfilter report RUN_DIR` writes it again)."""
    from .run_report import write_run_report

    try:
        return write_run_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - the run's results are written; the report is extra
        print(
            f"warning: report.html not written ({type(exc).__name__}: {exc}); "
            f"`forgetfilter report {run_dir}` retries",
            file=sys.stderr,
        )
        return None


# ------------------------------------------------------------------ configuration and inputs
def check_config(out_dir: Path, cfg: RunConfig, inputs: Sequence[str | Path], force: bool) -> None:
    """Refuse to continue a run directory made with another configuration, unless `force`.

    A run that stopped before any model or score was written (e.g. a mistyped --model) is
    replaced without `force`.

    Input files are compared by content (sha256), so the same files named by another path (an
    absolute path, another working directory) continue the run; config.json records the latest paths.
    """
    files = {role: Path(p) for role, p in zip(("noisy", "safe", "trusted"), inputs, strict=False)}
    want = {
        "config": cfg.fingerprint(),
        "inputs": {
            r: {"path": str(p.resolve()), "sha256": io.file_sha256(p)} for r, p in files.items()
        },
    }
    claims.claim(
        out_dir,
        "config.json",
        want,
        force=force,
        what="a run",
        has_work=lambda: _has_work(out_dir),
        discard=lambda: _discard_outputs(out_dir),
        same=_same_run,
        changed=_changed_fields,
        carry_over=lambda have, want: _carry_over(out_dir, have, want),
    )


def _carry_over(out_dir: Path, have: dict, want: dict) -> bool:
    """Redo the stages that read what changed, when no earlier stage does (`first_affected`)."""
    stage = first_affected(have, want)
    if stage is not None:
        redo_from(out_dir, stage, _changed_fields(have, want))
    return stage is not None


def first_affected(have: dict, want: dict) -> str | None:
    """The first stage that a recorded run (`have`, config.json) must redo to become `want`:
    None when it is the same run, or when the change reaches every stage (the noisy or trusted
    data, or a setting no stage `reads`), which only `force` may discard."""
    if _same_run(have, want):
        return None
    changed = _changed_fields(have, want)
    reader = {key: stage.name for stage in PIPELINE for key in stage.reads}
    if not all(key in reader for key in changed):
        return None
    return min((reader[key] for key in changed), key=STAGES.index)


def _from(name: str) -> tuple[Stage, ...]:
    """The stage called `name` and every stage after it."""
    return PIPELINE[STAGES.index(name) :]


def redo_from(out_dir: Path, name: str, changed: Sequence[str]) -> None:
    """Discard the outputs of stage `name` and of every later stage (and the summary and report
    made from them), keep the earlier ones, and say so on stderr."""
    later = _from(name)
    for pattern in [g for stage in later for g in stage.writes] + ["summary.json", "report*"]:
        for p in out_dir.glob(pattern):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    gone = {stage.name for stage in later}
    timings, done = out_dir / "timings.json", out_dir / "stages.json"
    if timings.exists():
        io.write_json(timings, {k: v for k, v in io.read_json(timings).items() if k not in gone})
    if done.exists():
        io.write_json(done, {"done": [k for k in io.read_json(done)["done"] if k not in gone]})
    kept = [s for s in STAGES[: STAGES.index(name)] if s != "inputs"]
    print(
        f"{out_dir}: changed {', '.join(changed)}; keeping {', '.join(kept) or 'nothing'}, "
        f"redoing from {name}",
        file=sys.stderr,
    )


def _same_run(have: dict, want: dict) -> bool:
    """Whether a recorded config.json is this run: same settings and the same input contents."""
    return _canonical(have.get("config", {})) == want["config"] and _hashes(have) == _hashes(want)


def _changed_fields(have: dict, want: dict) -> list[str]:
    """The settings that differ, then the input files whose contents differ (`safe file`)."""
    roles = ("noisy", "safe", "trusted")
    files = itertools.zip_longest(roles, _hashes(have), _hashes(want))
    return claims.changed_keys(_canonical(have.get("config", {})), want["config"]) + [
        f"{role} file" for role, a, b in files if a != b
    ]


def _has_work(out_dir: Path) -> bool:
    """Whether anything past reading the inputs exists (a model, scores, checkpoints)."""
    return any(any(out_dir.glob(g)) for stage in PIPELINE[1:] for g in stage.writes)


def _discard_outputs(out_dir: Path) -> None:
    globs = [g for stage in PIPELINE for g in stage.writes] + list(RUN_FILES)
    for pattern in globs:
        for p in out_dir.glob(pattern):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _canonical(recorded: dict) -> dict:
    """A recorded fingerprint with its model as `canonical_name` (older versions: as given)."""
    from .models import canonical_name
    from .thresholds import ADDED_FIELDS as THRESHOLD_ADDED
    from .training import ADDED_FIELDS

    added = {
        "filter": "forgetfilter",
        "screen_model": None,
        "screen_steps": None,
        "screen_epochs": None,  # runs recorded before it: M1 as long as the noisy finetune
        "score_dtype": "train",  # runs recorded before it scored in the training dtype
        "neighbours": 0,  # runs recorded before it ranked each example's own score
    }
    out = {**added, "final_train": None, **recorded}
    out["model"] = canonical_name(recorded.get("model", ""))
    for key in ("noisy_train", "safety_train", "final_train"):
        if isinstance(out.get(key), dict):
            out[key] = {**ADDED_FIELDS, **out[key]}
    if isinstance(out.get("threshold"), dict):
        out["threshold"] = {**THRESHOLD_ADDED, **out["threshold"]}
    return out


def _hashes(saved: dict) -> list[str]:
    """The input files' sha256 in order (also from runs that keyed them by the path given)."""
    values = saved.get("inputs", {}).values()
    return [v["sha256"] if isinstance(v, dict) else v for v in values]


def load_inputs(
    out_dir: Path, noisy_path, safe_path, cfg: RunConfig, *, write: bool = True, trusted=None
) -> tuple[list[Example], list[Example], list[Example]]:
    """Read the noisy, safe and (if given) trusted files, record what was rejected, and report
    overlap of the safe and noisy sets (into `inputs.json` when `write`).

    Trusted ids are prefixed `trusted:` so that they never meet a noisy id."""
    from .readers import read_examples

    noisy, noisy_rep = read_examples(noisy_path, skip_invalid=cfg.skip_invalid)
    safe, safe_rep = read_examples(safe_path, skip_invalid=cfg.skip_invalid)
    if not noisy:
        raise ForgetFilterError(f"{noisy_path}: no valid examples to filter")
    if not safe:
        raise ForgetFilterError(f"{safe_path}: no valid examples for safety finetuning")
    report = {
        "noisy": _report_dict(noisy_rep),
        "safe": _report_dict(safe_rep),
        "safe_noisy_overlap": overlap(noisy, safe),
    }
    vetted: list[Example] = []
    if trusted is not None:
        vetted, trusted_rep = read_examples(trusted, skip_invalid=cfg.skip_invalid)
        if not vetted:
            raise ForgetFilterError(f"{trusted}: no valid trusted examples")
        vetted = [dataclasses.replace(ex, id=f"trusted:{ex.id}") for ex in vetted]
        report["trusted"] = _report_dict(trusted_rep)
    if write:
        io.write_json(out_dir / "inputs.json", report)
    return noisy, safe, vetted


def _report_dict(report) -> dict:
    """What was read and what was rejected (with line numbers and reasons) from one input file."""
    return {
        "path": report.path,
        "n_records": report.n_records,
        "formats": dict(report.formats),
        "n_rejected": len(report.problems),
        "rejected_by_reason": {r: len(lines) for r, lines in report.by_reason().items()},
        "rejected": [{report.unit: p.line, "reason": p.reason} for p in report.problems[:1000]],
    }


def overlap(noisy: Sequence[Example], safe: Sequence[Example]) -> dict:
    """Safe examples that also occur in the noisy set (same id, or same prompt and response).

    They are kept in both sets (the safety set is the user's), counted, and listed in inputs.json.
    """
    noisy_ids = {ex.id for ex in noisy}
    noisy_pairs = {(ex.prompt, ex.response) for ex in noisy}
    same = [ex.id for ex in safe if ex.id in noisy_ids or (ex.prompt, ex.response) in noisy_pairs]
    return {"count": len(same), "safe_ids": same[:100]}


def unlabelled(examples: Sequence[Example]) -> list[Example]:
    """Copies without label, meta and the user's other columns: what training and scoring see."""
    return [dataclasses.replace(ex, label=None, meta={}, columns={}) for ex in examples]


# ------------------------------------------------------------------ training stages
def noisy_cfg(cfg: RunConfig) -> TrainConfig:
    """The noisy finetune's settings, with the run's seed."""
    return dataclasses.replace(cfg.noisy_train, seed=cfg.seed)


def screen_cfg(cfg: RunConfig) -> TrainConfig:
    """Training settings of M0 -> M1: the noisy finetune's, `screen_steps` steps or
    `screen_epochs` epochs long if set."""
    t = noisy_cfg(cfg)
    if cfg.screen_steps is not None:
        return dataclasses.replace(t, max_steps=cfg.screen_steps, epochs=max(t.epochs, 1e9))
    if cfg.screen_epochs is not None:
        return dataclasses.replace(t, max_steps=None, epochs=cfg.screen_epochs)
    return t


def final_cfg(cfg: RunConfig) -> TrainConfig:
    """Training settings of the delivered model: `final_train`, else the noisy finetune's."""
    return dataclasses.replace(cfg.final_train or cfg.noisy_train, seed=cfg.seed)


def safety_cfg(cfg: RunConfig, n_safe: int) -> TrainConfig:
    """Training settings of M1 -> M2: `safety_steps` steps (default one epoch)."""
    t = cfg.safety_train
    steps = cfg.safety_steps or max(1, math.ceil(n_safe / t.batch_size))
    return dataclasses.replace(t, seed=cfg.seed + 1, max_steps=steps, epochs=max(t.epochs, 1e9))


def train_stage(
    model: str, examples: Sequence[Example], out: Path, tcfg: TrainConfig, progress: bool = True
) -> str:
    """Finetune `model` on `examples` into `out` (resumable); returns the trained model path.

    The progress bar is named after the stage (`out`'s name)."""
    from .training import train

    label = STAGE_LABELS.get(out.name, out.name)
    result = train(model, unlabelled(examples), out, tcfg, progress=progress, label=label)
    return str(getattr(result, "model_dir", out / "model"))


def safety_stage(
    m1: str,
    safe: Sequence[Example],
    noisy: Sequence[Example],
    run_dir: Path,
    cfg: RunConfig,
    main: bool = True,
    progress: bool = True,
) -> str:
    """Safety finetuning M1 -> M2, scoring the noisy set at `curve_points` checkpoints if asked
    (on the main process when several train together)."""
    from .training import train

    tcfg = safety_cfg(cfg, len(safe))
    every = max(1, tcfg.max_steps // cfg.curve_points) if cfg.curve_points else 0
    curve_dir = run_dir / "curve"

    def on_checkpoint(step: int, model, tokenizer) -> None:
        path = curve_dir / f"step-{step:06d}.jsonl"
        if main and not path.exists():
            values = score_values(model, tokenizer, noisy, cfg)
            io.write_jsonl(
                path, ({"id": ex.id, "score": v} for ex, v in zip(noisy, values, strict=True))
            )

    result = train(
        m1,
        unlabelled(safe),
        run_dir / "m2",
        tcfg,
        callback=on_checkpoint if every else None,
        callback_every=every,
        progress=progress,
        label=STAGE_LABELS["m2"],
    )
    return str(getattr(result, "model_dir", run_dir / "m2" / "model"))


# ------------------------------------------------------------------ scoring
def score_values(
    model, tokenizer, examples: Sequence[Example], cfg: RunConfig, progress: bool = True
) -> list[float]:
    """Scores of `examples` under a loaded model, rounded to 6 decimals for stable output.

    Records are cut to `max_length` (capped at the model's context by `inference`, as in training;
    see the truncation policy in `batching`; the counts are in summary.json `truncated`).
    """
    import torch

    max_length = cfg.noisy_train.max_length
    options = signals.ScoreOptions(
        batch_size=cfg.score_batch_size,
        max_length=max_length,
        progress=progress,
        prompt_format=cfg.noisy_train.prompt_format,
        turns=cfg.noisy_train.assistant_turns,
        max_new_tokens=cfg.max_new_tokens,
        generation={"cache_implementation": "static", "disable_compile": False}
        if cfg.compile_generation
        else {},
    )
    try:
        values = signals.get(cfg.signal).score(model, tokenizer, unlabelled(examples), options)
    except torch.cuda.OutOfMemoryError:
        raise ForgetFilterError(
            f"out of GPU memory scoring even one example at a time (max_length {max_length}); "
            "lower `max_length` or free GPU memory, then rerun the same command"
        ) from None
    check_finite(values, f"{cfg.signal} scores")
    return [round(float(v), 6) for v in values]


def score_stage(
    model_path: str,
    examples: Sequence[Example],
    out: Path,
    cfg: RunConfig,
    ranks: Ranks | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Score every example on a model, in shards that survive interruption; returns scores by position.

    With several processes, shard k is scored by process k mod N and the main process merges them.
    """
    ranks = ranks or Ranks()
    done = out.exists()
    ranks.barrier()  # every process has looked before the merged file can appear
    if not done:
        parts = out.with_suffix(".shards")  # (".parts" held input-order shards: not reused)
        _score_shards(model_path, examples, parts, out.stem, cfg, ranks, progress)
        ranks.barrier()
        if ranks.main:
            rows = [r for p in sorted(parts.glob("part-*.jsonl")) for r in io.read_jsonl(p)]
            position = {ex.id: i for i, ex in enumerate(examples)}
            io.write_jsonl(out, sorted(rows, key=lambda r: position.get(r["id"], len(position))))
        ranks.barrier()
    # Shards are deleted only once the merged file is in place (also after a kill right between).
    if ranks.main:
        for leftover in (".shards", ".parts"):
            shutil.rmtree(out.with_suffix(leftover), ignore_errors=True)
    return _scores_in_order(io.read_jsonl(out), examples, out)


def shard_order(examples: Sequence[Example]) -> list[int]:
    """Positions by decreasing text length (ties by position), the order scoring shards are cut in.

    Records in a shard then have similar lengths, so its batches pad as little as a whole-set sort
    would (scoring sorts by token length inside each shard).
    """
    size = [len(ex.prompt) + len(ex.response) for ex in examples]
    return sorted(range(len(examples)), key=lambda i: (-size[i], i))


def shard_positions(examples: Sequence[Example]) -> list[list[int]]:
    """The positions in each scoring shard: `SCORE_SHARD` at a time, cut from `shard_order`."""
    order = shard_order(examples)
    return [order[start : start + SCORE_SHARD] for start in range(0, len(order), SCORE_SHARD)]


def _score_shards(
    model_path: str,
    examples: Sequence[Example],
    parts: Path,
    stage: str,
    cfg: RunConfig,
    ranks,
    progress: bool = True,
) -> None:
    """Write this process's missing shards (`SCORE_SHARD` examples each) under `parts`."""
    from tqdm.auto import tqdm

    shards = [
        (k, [examples[i] for i in positions], parts / f"part-{k:05d}.jsonl")
        for k, positions in enumerate(shard_positions(examples))
        if k % ranks.world == ranks.rank
    ]
    todo = [s for s in shards if not s[2].exists()]
    total = sum(len(chunk) for _, chunk, _ in shards)
    done = total - sum(len(chunk) for _, chunk, _ in todo)
    bar = tqdm(
        total=total,
        initial=done,
        desc=f"{stage} ({cfg.signal})",
        unit="ex",
        disable=not (ranks.main and progress),
    )
    model = tokenizer = None
    for k, chunk, shard in todo:
        if model is None:
            model, tokenizer = _load(model_path, ranks.device, scoring_dtype(cfg))
        values = score_values(model, tokenizer, chunk, cfg, progress=False)
        io.write_jsonl(
            shard, ({"id": ex.id, "score": v} for ex, v in zip(chunk, values, strict=True))
        )
        bar.update(len(chunk))
        io.fault_point(f"{stage}:{k}")
    bar.close()


def _scores_in_order(rows: list[dict], examples: Sequence[Example], path: Path) -> np.ndarray:
    by_id = {r["id"]: r["score"] for r in rows}
    missing = [ex.id for ex in examples if ex.id not in by_id]
    if missing or len(by_id) != len(examples):
        raise ForgetFilterError(
            f"{path} does not match the input (e.g. {missing[:3]}); rerun with `force=True`"
        )
    return np.asarray([by_id[ex.id] for ex in examples], dtype=np.float64)


def scoring_dtype(cfg: RunConfig) -> str | None:
    """The precision of a run's scoring passes (`score_dtype`; `train`: the noisy finetune's)."""
    return cfg.noisy_train.dtype if cfg.score_dtype == "train" else cfg.score_dtype


def _load(model_path: str, device: str | None, dtype: str | None):
    """A stage's model for scoring in `dtype` (None: bf16 on GPUs that support it, fp32
    otherwise), a float32 LoRA adapter merged."""
    from .models import load_model

    return load_model(model_path, device=device, dtype=dtype, merge=True)


# ------------------------------------------------------------------ filtering
def filter_stage(
    run_dir: Path,
    noisy: Sequence[Example],
    before: np.ndarray | None,
    after: np.ndarray | None,
    cfg: RunConfig,
    reference: np.ndarray | None = None,
    trusted: Sequence[Example] = (),
) -> tuple[ThresholdChoice, set[str]]:
    """Compute forgetting, choose phi, and write scores.jsonl, kept.jsonl and removed.jsonl.

    `before`, `after` and `reference` are the scores on M1, M2 and M0, each None when the filter
    did not need that model (`needed`). `reference` is recorded in scores.jsonl and enters the
    score only with the recipes that read it (`relative+learning`, `relative+surprise`, `reversion`).
    """
    path = run_dir / "filter.json"
    if path.exists() and (run_dir / "removed.jsonl").exists():
        saved = io.read_json(path)
        return ThresholdChoice(**{k: saved["threshold"][k] for k in _CHOICE_FIELDS}), set(
            saved["removed_ids"]
        )
    scored, n_trusted = list(noisy) + list(trusted), len(trusted)
    table = recipes.ScoreTable(cfg.signal, before, after, reference)
    threshold = dataclasses.replace(cfg.threshold, seed=cfg.seed)
    texts = [content(ex) for ex in scored]
    f = filters.get(cfg.filter)
    decision = f.decide(
        texts, table, threshold, cfg.normalise, cfg.seed, n_trusted=n_trusted,
        neighbours=cfg.neighbours,
    )  # fmt: skip
    choice, score = decision.choice, decision.score
    curve, _ = filters.split(
        curve_auc(run_dir / "curve", scored, before, cfg, reference), n_trusted
    )
    parts = [filters.split(v, n_trusted)[0] for v in (before, after, reference)]
    removed = {noisy[i].id: reason for i, reason in decision.reasons.items()}
    write_filter_outputs(
        run_dir, noisy, parts, score, curve, removed, neighbour_columns(decision, scored)
    )
    record = {"threshold": choice.to_dict(), "removed_ids": sorted(removed)}
    if n_trusted:
        io.write_jsonl(
            run_dir / "trusted_scores.jsonl",
            (
                {"id": ex.id, "score": round(float(v), 6)}
                for ex, v in zip(trusted, decision.trusted, strict=True)
            ),
        )
        record["unsafe_share"] = unsafe_share(score, decision.trusted, seed=cfg.seed)
    io.write_json(path, record)
    return choice, removed


_CHOICE_FIELDS = ("phi", "method", "reason", "n_removed", "n_total", "details")


def curve_auc(
    curve_dir: Path,
    noisy: Sequence[Example],
    before: np.ndarray | None,
    cfg: RunConfig,
    reference: np.ndarray | None = None,
) -> np.ndarray | None:
    """Mean forgetting over the checkpoints of safety finetuning (area under each example's curve)."""
    files = sorted(curve_dir.glob("step-*.jsonl")) if curve_dir.exists() else []
    if not files or before is None:
        return None
    curves = [_scores_in_order(io.read_jsonl(f), noisy, f) for f in files]
    return np.mean(
        [forgetting(before, c, cfg.signal, cfg.normalise, reference) for c in curves], axis=0
    )


def neighbour_columns(decision: filters.Decision, scored: Sequence[Example]) -> dict[str, list]:
    """With neighbour smoothing, scores.jsonl's columns `own_score` (the recipe's score of the
    example alone) and `neighbours` (the ids its score was averaged with); else none."""
    if decision.near is None:
        return {}
    n, ids = len(decision.score), [ex.id for ex in scored]
    return {
        "own_score": [round(float(v), 6) for v in decision.own[:n]],
        "neighbours": [[ids[j] for j in row] for row in decision.near[:n]],
    }


def write_filter_outputs(
    run_dir, noisy, scores, score, curve, removed: dict[str, str], columns: dict | None = None
) -> None:
    """The audit trail: every input id in exactly one of kept.jsonl and removed.jsonl.

    `scores` is (before, after, reference): scores on M1, on M2 and on M0, each None when the run
    did not score that model (and then absent from scores.jsonl); `score` the filter's score (the
    `forgetting` column, whichever filter made it); `removed` id -> reason for every removed one;
    `columns` more per-example columns of scores.jsonl (name -> values in input order).
    """
    before, after, reference = scores
    rows, kept_rows, removed_rows = [], [], []
    for i, ex in enumerate(noisy):
        is_removed = ex.id in removed
        row = {"id": ex.id, "line": ex.line}
        for key, values in (("before", before), ("after", after)):
            if values is not None:
                row[key] = values[i]
        row |= {"forgetting": round(float(score[i]), 6), "removed": is_removed}
        if reference is not None:
            row["m0"] = reference[i]
        if curve is not None:
            row["curve_auc"] = round(float(curve[i]), 6)
        row |= {key: values[i] for key, values in (columns or {}).items()}
        rows.append(row)
        record = ex.to_dict() | {"forgetting": row["forgetting"]}
        if is_removed:
            record["reason"] = removed[ex.id]
            removed_rows.append(record)
        else:
            kept_rows.append(record)
    assert len(kept_rows) + len(removed_rows) == len(noisy) == len({r["id"] for r in rows})
    io.write_jsonl(run_dir / "scores.jsonl", rows)
    io.write_jsonl(run_dir / "kept.jsonl", kept_rows)
    io.write_jsonl(run_dir / "removed.jsonl", removed_rows)


def cleaned_path(run_dir: Path, noisy_path: str | Path) -> Path:
    """Where the kept records go in the user's own form: `clean/<the noisy file's name>`."""
    return Path(run_dir) / "clean" / Path(noisy_path).name


def clean_stage(run_dir: Path, noisy_path: str | Path, kept: Sequence[Example]) -> Path:
    """Write the kept records in the noisy file's own container and schema (`cleaned`)."""
    from .cleaned import write_cleaned

    out = cleaned_path(run_dir, noisy_path)
    write_cleaned(noisy_path, [ex.line for ex in kept if ex.line is not None], out)
    return out


# ------------------------------------------------------------------ defaults
@dataclass(frozen=True)
class Preset:
    """Training defaults for a family of models (`preset_for`).

    Attributes:
        name: what the preset is for.
        finetune: `lora` or `full`.
        lr: learning rate of the noisy finetune (and the final model).
        epochs: epochs of the noisy finetune (and the final model).
        screen_epochs: epochs of the noisy finetune that produces the scores (M0 -> M1), when
            shorter than `epochs` (`RunConfig.screen_epochs`); None = `epochs`.
        safety_lr: learning rate of the safety finetune.
        max_length: records are cut to this many tokens.
        loss_recipe: the filter's score with the loss signal when `normalise` is not given.
        neighbours: the filter's neighbour smoothing when `neighbours` is not given (0 = off).
    """

    name: str
    finetune: str
    lr: float
    epochs: float
    safety_lr: float
    max_length: int
    loss_recipe: str = "relative"
    neighbours: int = 0
    screen_epochs: float | None = None


#: The built-in `tiny` model (a few million parameters) is finetuned fully: LoRA r=8 barely
#: learns the unsafe examples at that size.
#: Its score adds learning over M0 to forgetting: on tiny the unsafe examples are learned faster
#: than the task data; on the pretrained models measured they are not (README, "Results").
TINY_PRESET = Preset("tiny", "full", 5e-4, 5.0, 5e-4, 256, loss_recipe="relative+learning")
#: Hugging Face models: the paper's settings (LoRA r=8, alpha=16, dropout 0.05, lr 2e-4). Its
#: score, relative forgetting, is averaged in rank with how unlikely the aligned M0 finds each
#: answer: both read the answer's conflict with M0's alignment, and together they ranked better
#: than forgetting alone on most runs measured, not at the top of the ranking where forgetting
#: alone is sharp (README, "M0's surprise"). `--normalise relative --neighbours 0` is the paper's
#: score by name. Each example's score is then averaged with those of its 5 most similar noisy examples: on every
#: realistic run of the two pretrained models measured, that ranked the unsafe examples better,
#: most at the top of the ranking (README, "Neighbours"). `--neighbours 0` turns it off.
#: M1 trains one epoch, the delivered model the paper's 3: three epochs let a pretrained M1
#: memorise the task data, whose drift under safety finetuning then swamps the unsafe examples'
#: forgetting (README, "How long the noisy finetune runs"). `--screen-epochs 3` is the paper's M1.
PAPER_PRESET = Preset(
    "paper",
    "lora",
    2e-4,
    3.0,
    2e-4,
    512,
    loss_recipe="relative+surprise",
    neighbours=5,
    screen_epochs=1.0,
)


def preset_for(model: str) -> Preset:
    """The training defaults for `model`: `TINY_PRESET` for the built-in tiny models, else the
    paper's."""
    return TINY_PRESET if str(model).split(":")[0] == "tiny" else PAPER_PRESET


def default_run_config(
    model: str = "tiny",
    *,
    full=None,
    lr=None,
    safety_lr=None,
    epochs=None,
    batch_size=None,
    micro_batch_size=None,
    max_length=None,
    dtype=None,
    normalise=None,
    save_every=None,
    prompt_format="auto",
    assistant_turns="last",
    **run_fields,
) -> RunConfig:
    """A RunConfig with defaults for `model`, overridden by the non-None arguments.

    The defaults are `preset_for(model)`'s: the paper's settings for Hugging Face models (batch
    32, M1 one epoch and the delivered model 3), full finetuning at lr 5e-4 for 5 epochs for the
    built-in `tiny`. `epochs` is the delivered model's (and M1's where the preset gives it no
    `screen_epochs`; pass `screen_epochs` for M1's). `save_every` (steps)
    checkpoints every training stage, so a killed run resumes inside a stage, not at its start.
    With `screen_model` (in `run_fields`), the noisy and safety finetunes take that model's preset
    and the arguments, and the final finetune (`final_train`) takes `model`'s preset with the
    arguments that are not about the noisy finetune's length or rate (`max_length`, `dtype`,
    batch sizes, `save_every`, prompt settings).
    """
    screen = run_fields.get("screen_model")
    base = dataclasses.asdict(preset_for(screen or model))
    # (the model's prompt format is chosen per tokenizer when the records are encoded)
    given = {"lr": lr, "safety_lr": safety_lr, "epochs": epochs, "max_length": max_length}
    base |= {k: v for k, v in given.items() if v is not None}
    if full is not None:
        base["finetune"] = "full" if full else "lora"
    shared = {"dtype": dtype, "prompt_format": prompt_format, "assistant_turns": assistant_turns}
    shared |= {
        k: v
        for k, v in {
            "batch_size": batch_size,
            "micro_batch_size": micro_batch_size,
            "save_every": save_every,
        }.items()
        if v
    }
    common = {"finetune": base["finetune"], "max_length": base["max_length"], **shared}
    noisy = TrainConfig(lr=base["lr"], epochs=base["epochs"], **common)
    safety = TrainConfig(lr=base["safety_lr"], epochs=1.0, **common)
    if screen and run_fields.get("final_train") is None:
        target = preset_for(model)
        run_fields["final_train"] = TrainConfig(
            lr=target.lr,
            epochs=target.epochs,
            finetune=target.finetune,
            max_length=max_length or target.max_length,
            **shared,
        )
    if normalise is not None:
        run_fields["normalise"] = normalise
    run_fields.setdefault("screen_epochs", base["screen_epochs"])
    return RunConfig(model=model, noisy_train=noisy, safety_train=safety, **run_fields)
