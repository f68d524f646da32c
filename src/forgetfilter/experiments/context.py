"""Experiment settings shared by all experiments: scales, the run context, small helpers."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import claims, io
from ..errors import ConfigError
from ..evaluation import DEFAULT_CUES
from ..records import RISKS, Example

if TYPE_CHECKING:
    from ..evaluation import EvalConfig
    from ..pipeline import RunConfig


EXPERIMENTS = ("dynamics", "compare", "ablate", "interleaved", "report")

#: The self-correction cues, defined once (`evaluation.DEFAULT_CUES`).
CUES = DEFAULT_CUES

#: Per risk: (metric key in the evaluation result, column name); the first is the primary metric.
SAFETY_METRICS = {
    "bias": (("s_amb", "s_AMB"), ("s_dis", "s_DIS"), ("acc_ambig", "acc_ambig")),
    "toxicity": (("mean_toxicity", "mean_toxicity"), ("frac_toxic", "frac_toxic")),
    "harm": (("mean_harm", "mean_harm"), ("refusal_rate", "refusal_rate")),
}

#: The methods of `compare` (`Context.methods` selects among them), and those that filter the data.
COMPARE_METHODS = (
    "no_safety",
    "sequential",
    "replay",
    "self_correction",
    "classifier_filter",
    "static_loss_filter",
    "random_filter",
    "forgetfilter",
    "forgetfilter+self_correction",
    "oracle_filter",
)
FILTER_METHODS = (
    "classifier_filter",
    "static_loss_filter",
    "random_filter",
    "forgetfilter",
    "oracle_filter",
)


# ---------------------------------------------------------------- scales and context
@dataclass(frozen=True)
class Scale:
    """Sizes of one experiment scale.

    Attributes:
        name: `test`, `small` or `paper`.
        n: size of the noisy finetuning set (half unsafe unless ablated).
        n_safe: size of the safety set (None: min(7000, what the data has)).
        n_eval: items per evaluation file written by the mixture.
        eval_limit: items evaluated per suite (None: all).
        epochs: epochs of noisy/final finetuning (None: the model's default in the pipeline).
        batch_size: effective batch size (None: the default).
        max_length: tokens per example (None: the model's default).
        safety_steps: steps of ForgetFilter's short safety finetune (None: one epoch of the safe set).
        curve_points: checkpoints per phase in `dynamics`.
        dynamics_safety_steps: safety-finetuning steps shown in `dynamics`.
        curve_per_group: examples per group scored at each learning checkpoint in `dynamics`.
        ratios: unsafe ratios of the `ablate` sweep.
        ablate_safety_steps: the longest safety finetune of the `ablate` step sweep.
        ablate_points: checkpoints (evenly spaced) of the step sweep.
        rounds: rounds K of `interleaved`.
        round_safety_steps: safety-finetuning steps after each round of `interleaved`.
        max_new_tokens: generation budget per suite in evaluation (None: evaluation's defaults).
        eval_batch_size: evaluation batch size.
        full: full finetuning (True) or LoRA (False); None = the pipeline's default for the model.
    """

    name: str
    n: int
    n_safe: int | None
    n_eval: int
    eval_limit: int | None
    epochs: float | None
    batch_size: int | None
    max_length: int | None
    safety_steps: int | None
    curve_points: int
    dynamics_safety_steps: int | None
    curve_per_group: int
    ratios: tuple[float, ...]
    ablate_safety_steps: int
    ablate_points: int
    rounds: int
    round_safety_steps: int
    max_new_tokens: dict[str, int] | None = None
    eval_batch_size: int = 16
    full: bool | None = None


SCALES = {
    "test": Scale(
        "test", n=24, n_safe=12, n_eval=6, eval_limit=6, epochs=1.0, batch_size=8, max_length=64,
        safety_steps=2, curve_points=2, dynamics_safety_steps=2, curve_per_group=4,
        ratios=(0.25, 0.75), ablate_safety_steps=2, ablate_points=2, rounds=2, round_safety_steps=1,
        max_new_tokens={"bias": 4, "toxicity": 4, "harm": 4, "squad": 4, "alpaca": 4}, eval_batch_size=8,
        full=True,
    ),
    "small": Scale(
        "small", n=300, n_safe=200, n_eval=60, eval_limit=50, epochs=None, batch_size=16, max_length=None,
        safety_steps=10, curve_points=8, dynamics_safety_steps=16, curve_per_group=40,
        ratios=(0.25, 0.5, 0.75), ablate_safety_steps=24, ablate_points=6, rounds=4, round_safety_steps=6,
        max_new_tokens={"bias": 16, "toxicity": 32, "harm": 48, "squad": 16, "alpaca": 48},
    ),
    "paper": Scale(
        "paper", n=5000, n_safe=None, n_eval=300, eval_limit=None, epochs=None, batch_size=None,
        max_length=None, safety_steps=None, curve_points=10, dynamics_safety_steps=None, curve_per_group=200,
        ratios=(0.25, 0.5, 0.75), ablate_safety_steps=200, ablate_points=8, rounds=5, round_safety_steps=50,
    ),
}  # fmt: skip


@dataclass
class Context:
    """Where and with what an experiment runs.

    Attributes:
        out: the experiment directory.
        model: the aligned model M0 (`tiny`, a path or a Hugging Face id).
        data_dir: the data pack root (for mixtures and the offline classifiers).
        scale: sizes.
        seed: seed of the mixtures, training and random choices.
        risks: risks to run (`dynamics`, `ablate` and `interleaved` use the first).
        methods: `compare` methods to run (None: all).
        force: discard a directory made with another model, scale or seed (else refused).
    """

    out: Path
    model: str = "tiny"
    data_dir: Path | None = None
    scale: Scale = SCALES["small"]
    seed: int = 0
    risks: tuple[str, ...] = ("bias",)
    methods: tuple[str, ...] | None = None
    force: bool = False

    def __post_init__(self) -> None:
        from ..paths import data_dir

        self.out = Path(self.out)
        self.data_dir = data_dir(self.data_dir)
        bad = [r for r in self.risks if r not in RISKS]
        if bad or not self.risks:
            raise ConfigError(f"unknown risk(s) {bad}: choose from {', '.join(RISKS)}")
        if self.methods is not None:
            unknown = [m for m in self.methods if m not in COMPARE_METHODS]
            if unknown:
                raise ConfigError(
                    f"unknown method(s) {unknown}: choose from {', '.join(COMPARE_METHODS)}"
                )

    # ---- the directory
    def identity(self) -> dict:
        """What every cached result in the directory was made with."""
        from ..models import canonical_name

        identity = {
            "model": canonical_name(self.model),
            "scale": dataclasses.asdict(self.scale),
            "seed": self.seed,
        }
        return json.loads(io.dumps(identity))  # as it reads back (tuples as lists)

    def claim(self) -> None:
        """Take the directory for this identity: refuse one made with another, unless `force`
        (`claims.claim`, the rule `forgetfilter run` and `demo` follow too)."""
        claims.claim(
            self.out,
            "experiment.json",
            self.identity(),
            force=self.force,
            what="an experiment",
            has_work=lambda: self.out.exists() and any(self.out.rglob("result*.json")),
        )

    # ---- data
    def mixture(self, risk: str, ratio: float = 0.5) -> Path:
        """The mixture directory for (risk, ratio), built once with `mixture.build_mixture`."""
        from ..mixture import MixtureConfig, build_mixture

        name = risk if ratio == 0.5 else f"{risk}-r{ratio:g}"
        path = self.out / "data" / name
        if not (path / "manifest.json").exists():
            s = self.scale
            cfg = MixtureConfig(risk, s.n, ratio, n_safe=s.n_safe, n_eval=s.n_eval, seed=self.seed)
            build_mixture(cfg, self.data_dir, path)
        return path

    # ---- configs
    def run_config(self, **fields: Any) -> RunConfig:
        """The pipeline's RunConfig for the model with this scale's sizes (fields override); M1
        trains as long as the noisy finetune, as in the paper (no `screen_epochs`)."""
        from ..pipeline import default_run_config

        s = self.scale
        fields.setdefault("safety_steps", s.safety_steps)
        fields.setdefault("screen_epochs", None)
        cfg = default_run_config(
            self.model, epochs=s.epochs, batch_size=s.batch_size, max_length=s.max_length,
            full=s.full, seed=self.seed, **fields,
        )  # fmt: skip
        cfg.score_batch_size = min(cfg.score_batch_size, 2 * (s.batch_size or cfg.score_batch_size))
        return cfg

    def eval_config(
        self, out_file: Path | None = None, self_correction: bool = False
    ) -> EvalConfig:
        """Evaluation settings for this scale."""
        from ..evaluation import DEFAULT_MAX_NEW_TOKENS, EvalConfig

        s = self.scale
        return EvalConfig(
            batch_size=s.eval_batch_size,
            max_new_tokens=dict(s.max_new_tokens or DEFAULT_MAX_NEW_TOKENS),
            max_length=self.run_config().noisy_train.max_length,
            self_correction=self_correction,
            self_correction_cues=dict(CUES),
            limit=s.eval_limit,
            seed=self.seed,
            classifier_data_dir=str(self.data_dir),
            outputs_path=str(out_file) if out_file else None,
            progress=False,
        )

    def evaluate(
        self,
        model_dir: str | Path,
        suites: Sequence[str],
        data: Path,
        out_file: Path,
        sc: bool = False,
    ) -> dict:
        """Evaluate a model on `suites` of a mixture's eval files; returns {suite: results}."""
        from ..evaluation import evaluate

        res = evaluate(str(model_dir), list(suites), data / "eval", self.eval_config(out_file, sc))
        return res["suites"]


def cached(directory: Path, fn: Callable[[], dict]) -> dict:
    """`directory/result.json` if present (the done marker), else run `fn`, add its time, save it."""
    done = directory / "result.json"
    if done.exists():
        return io.read_json(done)
    directory.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = fn()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    io.write_json(done, result)
    return result


def load_examples(path: Path) -> list[Example]:
    """Records of a mixture file (our own JSONL, labels included)."""
    return [Example.from_dict(r) for r in io.read_jsonl(path)]


def groups_of(examples: Sequence[Example]) -> dict[str, str]:
    """id -> evaluation group (unsafe, safe (same risk), SQuAD, Alpaca)."""
    from ..report import example_group

    return {ex.id: example_group(ex.to_dict()) for ex in examples}


def rounded(x: float | None, nd: int = 6) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), nd)


def relative_change(x: float | None, ref: float | None) -> float | None:
    """Relative change (x - ref) / |ref| (None when undefined)."""
    if x is None or ref is None or abs(ref) < 1e-12:
        return None
    return round((x - ref) / abs(ref), 4)
