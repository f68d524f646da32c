"""Signals: a per-example score of how well a model has learned each record (`--signal`).

A run scores every noisy example with one signal on M1 and M2 (and, for an NLL-like signal, on
M0); `recipes` turns those columns into the filter's score.

- `loss`: mean negative log-likelihood of the response tokens under teacher forcing (one
  forward pass per batch). Forgetting = NLL after safety finetuning - NLL before.
- `rouge`: the paper's signal. Greedy generation of the response, first non-empty line,
  lower-cased and stripped of punctuation, ROUGE-1 F-measure with stemming against the target.
  Forgetting = ROUGE before - ROUGE after.
- more in their own modules, registered at import (`tail_loss`, `head_loss`).

A signal declares its `kind`: `nll` (lower = better learned; M0 is scored too, as the reference
of the recipes that need it) or `similarity` (higher = better learned). A new signal is one class
with `name`, `help`, `kind` and `score`, in its own module, and one `register(...)` call.

Scoring reads each record's conversation (or `prompt` and `response`), never its label. This
module imports no model code: `score` loads the inference engine (`inference`) when it runs.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .errors import ConfigError
from .head_loss import HeadLoss
from .records import Example
from .tail_loss import TailLoss

KINDS = ("nll", "similarity")


@dataclass(frozen=True)
class ScoreOptions:
    """How a signal scores: the run's batching, length and prompt-format settings.

    Attributes:
        batch_size: rows per scoring batch.
        max_length: records are cut to this many tokens (capped at the model's context).
        progress: show a progress bar.
        prompt_format: `auto`, `chat` or `alpaca` (`chat.resolve_format`).
        turns: in the chat format, the target turns (`last` or `all`).
        max_new_tokens: generation budget of generating signals (None: each target's length + 8).
        generation: extra `model.generate` options of generating signals.
    """

    batch_size: int = 32
    max_length: int = 512
    progress: bool = True
    prompt_format: str = "auto"
    turns: str = "last"
    max_new_tokens: int | None = None
    generation: dict = field(default_factory=dict)


class Signal(Protocol):
    """The interface of a signal."""

    name: str
    help: str
    kind: str  # one of KINDS

    def score(
        self, model, tokenizer, records: Sequence[Example], options: ScoreOptions
    ) -> np.ndarray: ...


SIGNALS_BY_NAME: dict[str, Signal] = {}


def register(signal: Signal) -> Signal:
    """Add a signal to the registry (by its name)."""
    if signal.kind not in KINDS:
        raise ValueError(f"signal {signal.name}: kind must be one of {KINDS}, got {signal.kind!r}")
    SIGNALS_BY_NAME[signal.name] = signal
    return signal


def get(name: str) -> Signal:
    """The registered signal called `name` (ConfigError naming the choices otherwise)."""
    if name not in SIGNALS_BY_NAME:
        raise ConfigError(f"unknown signal {name!r}; choose from {', '.join(SIGNALS_BY_NAME)}")
    return SIGNALS_BY_NAME[name]


def names() -> tuple[str, ...]:
    """The registered signals' names."""
    return tuple(SIGNALS_BY_NAME)


def kind_of(name: str) -> str:
    """`nll` or `similarity`: the kind of signal `name`."""
    return get(name).kind


def score(model, tokenizer, examples: Sequence[Example], signal: str, **options) -> np.ndarray:
    """The per-example scores of `signal` on a loaded model (`options`: `ScoreOptions` fields)."""
    return get(signal).score(model, tokenizer, examples, ScoreOptions(**options))


def check_finite(values: np.ndarray, what: str) -> None:
    """Raise a clear error when scores contain NaN or inf."""
    from .errors import NumericalError

    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise NumericalError(f"{what}: {len(bad)} non-finite scores (first at position {bad[0]})")


# ---------------------------------------------------------------- loss
class Loss:
    """Mean response NLL under teacher forcing."""

    name = "loss"
    help = "teacher-forced mean NLL of the response tokens (one forward pass)"
    kind = "nll"

    def score(self, model, tokenizer, records, options: ScoreOptions) -> np.ndarray:
        from .inference import nll_kwargs, response_nll

        return response_nll(model, tokenizer, records, **nll_kwargs(options))


# ---------------------------------------------------------------- rouge
class Rouge:
    """ROUGE-1 F of the greedy generation's first line against the response (the paper's)."""

    name = "rouge"
    help = "ROUGE-1 F of the greedy generation's first line against the response (the paper's)"
    kind = "similarity"

    def score(self, model, tokenizer, records, options: ScoreOptions) -> np.ndarray:
        from .inference import nll_kwargs

        return greedy_rouge1(
            model,
            tokenizer,
            records,
            max_new_tokens=options.max_new_tokens,
            **nll_kwargs(options),
            **options.generation,
        )


_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalise_for_rouge(text: str) -> str:
    """First non-empty line, lower-cased, punctuation removed (the paper's preprocessing)."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    return " ".join(_PUNCT.sub(" ", line.lower()).split())


def greedy_rouge1(
    model,
    tokenizer,
    examples: Sequence[Example],
    *,
    max_new_tokens: int | None = None,
    batch_size: int = 32,
    max_length: int = 512,
    progress: bool = True,
    prompt_format: str = "auto",
    turns: str = "last",
    **gen_kwargs,
) -> np.ndarray:
    """ROUGE-1 F of each record's greedy generation against its response (the paper's score).

    Generation of a record stops once its first non-empty line is complete: the score reads only
    that line, so it equals the score of the full generation up to `max_new_tokens`.
    """
    from .inference import generate, target_lengths
    from .metrics import rouge1_f

    limits = max_new_tokens if max_new_tokens is not None else target_lengths(tokenizer, examples)
    outputs = generate(
        model,
        tokenizer,
        list(examples),
        max_new_tokens=limits,
        batch_size=batch_size,
        max_length=max_length,
        progress=progress,
        desc="scoring (rouge)",
        first_line_only=True,
        prompt_format=prompt_format,
        **gen_kwargs,
    )
    scores = [
        rouge1_f(normalise_for_rouge(o), normalise_for_rouge(ex.response))
        for o, ex in zip(outputs, examples, strict=True)
    ]
    return np.asarray(scores, dtype=np.float64)


# ---------------------------------------------------------------- the registry
register(Loss())
register(Rouge())
register(TailLoss())
register(HeadLoss())
