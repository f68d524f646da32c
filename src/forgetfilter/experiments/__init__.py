"""The paper's experiments as resumable library calls: dynamics, compare, ablate, interleaved, report.

`run_experiment(name, ctx)` writes into `ctx.out`:

* `data/<risk>[-r<ratio>]/`: the mixture (`mixture.build_mixture`; reused when its manifest exists),
* `methods/...`: each method's or stage's models and outputs, with a `result.json` done marker
  (a finished method is never recomputed; an interrupted one continues where training stopped),
* `results.json` (everything the tables and plots need), `table.md`, `table.csv`, `plots/*.png`
  and `report.html` (one portable file with the plots embedded).

`report` rebuilds the tables, plots and report.html from `results.json` without any training.

Reuse between methods (identical models are trained once): the no-safety model is M1 of the
ForgetFilter run; moral self-correction evaluates M1 with a cue; ForgetFilter + self-correction
evaluates ForgetFilter's final model with a cue; sequential safety finetuning reuses M2 when M2 is
already one epoch of the safe set; the static-loss filter reuses the run's scores on M1; a filter
that removes nothing reuses M1.

Labels are read here only to evaluate (filter precision/recall/AUROC, group plots) and by the
oracle filter, which is the label-using upper bound by definition.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

from .. import io
from ..errors import ConfigError
from .ablate import Ablate
from .compare import run_compare
from .context import CUES, EXPERIMENTS, SCALES, Context, Scale
from .dynamics import Dynamics
from .interleaved import Interleaved
from .render import write_outputs

__all__ = [
    "CUES",
    "EXPERIMENTS",
    "SCALES",
    "Context",
    "Scale",
    "regenerate_report",
    "run_experiment",
    "write_outputs",
]

RUNNERS: dict[str, Callable[[Context], dict]] = {
    "dynamics": lambda ctx: Dynamics(ctx).run(),
    "compare": run_compare,
    "ablate": lambda ctx: Ablate(ctx).run(),
    "interleaved": lambda ctx: Interleaved(ctx).run(),
}


def run_experiment(name: str, ctx: Context) -> dict:
    """Run experiment `name` (resumable), write results.json, tables, plots and report.html."""
    if name == "report":
        return regenerate_report(ctx.out)
    if name not in RUNNERS:
        raise ConfigError(f"unknown experiment {name!r}: choose from {', '.join(EXPERIMENTS)}")
    ctx.claim()
    t0 = time.perf_counter()
    body = RUNNERS[name](ctx)
    results = {
        "experiment": name,
        "model": ctx.model,
        "scale": dataclasses.asdict(ctx.scale),
        "seed": ctx.seed,
        "risks": list(ctx.risks),
        "wall_s_this_invocation": round(time.perf_counter() - t0, 1),
        **body,
    }
    io.write_json(ctx.out / "results.json", results)
    write_outputs(ctx.out, results)
    return results


def regenerate_report(out: str | Path) -> dict:
    """`report`: rebuild tables, plots and report.html from results.json (no training)."""
    out = Path(out)
    path = out / "results.json"
    if not path.exists():
        raise ConfigError(f"{path} does not exist: run an experiment into {out} first")
    results = io.read_json(path)
    write_outputs(out, results)
    return results
