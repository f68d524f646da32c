"""The run's audit summary (summary.json): counts that reconcile, phi and why, truncation,
timings, and, where the input carries labels, the quality of the removal against them.

This is the only module of a ForgetFilter run that reads labels; the filtering modules
(`pipeline`, `signals`, `thresholds`, `batching`) are checked for label access by a test.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import io, share
from .models import describe
from .recipes import RECIPES, ScoreTable, forgetting, learning, surprise
from .recipes import static as static_fit
from .signals import kind_of
from .thresholds import ThresholdChoice
from .training import finished_run

if TYPE_CHECKING:
    from .pipeline import Run


def summarise(run: Run, choice: ThresholdChoice, final_skipped: str | None = None) -> dict:
    """Write summary.json: counts, phi and why, truncation, timings, and label-based quality where labels exist.

    It is built from the audit files on disk (inputs.json, kept/removed/scores.jsonl, filter.json,
    each training stage's record), not from values in memory, so that the summary of a resumed
    run, whose filter stage ran in an earlier process, describes exactly the files a user reads.
    A threshold that removes nothing, everything or more than half adds `warning`; a final stage skipped
    because nothing is left adds `final_skipped` (and `final_model` is None).
    """
    inputs = io.read_json(run.dir / "inputs.json")
    kept, removed = io.read_jsonl(run.dir / "kept.jsonl"), io.read_jsonl(run.dir / "removed.jsonl")
    rows = io.read_jsonl(run.dir / "scores.jsonl")
    summary = {
        "signal": run.cfg.signal,
        "normalise": run.cfg.normalise,
        "neighbours": run.cfg.neighbours,
        "model": run.cfg.model,
        "model_source": describe(run.cfg.model),
        "threshold": choice.to_dict(),
        "counts": accounting(inputs["noisy"], kept, removed),
        "safe_noisy_overlap": inputs["safe_noisy_overlap"]["count"],
        "prompt_format": prompt_format(run.dir),
        "truncated": truncation(run.dir),
        "timings_s": run.timings,
        "quality": label_quality(kept + removed, rows, run.cfg.signal),
        "outputs": {k: str(run.dir / k) for k in ("kept.jsonl", "removed.jsonl", "scores.jsonl")}
        | {"cleaned": next((str(p) for p in sorted((run.dir / "clean").glob("*"))), None)},
        "final_model": str(run.dir / "final" / "model")
        if run.cfg.final and not final_skipped
        else None,
    }
    if run.cfg.screen_model or run.cfg.screen_steps or run.cfg.screen_epochs:
        summary["screening"] = screening(run)
    saved = io.read_json(run.dir / "filter.json")
    fitted = share.from_fit(choice.details) if choice.method == "auto" else None
    if fitted and "unsafe_share" not in saved:
        summary["unsafe_share"] = fitted
    if "unsafe_share" in saved:
        summary["unsafe_share"] = saved["unsafe_share"]
        summary["trusted"] = {
            "n": inputs["trusted"]["n_records"] - inputs["trusted"]["n_rejected"],
            "path": inputs["trusted"]["path"],
            "note": "finetuned and scored with the noisy data; in no output file",
        }
    warning = threshold_warning(choice)
    if warning:
        summary["warning"] = warning
    if final_skipped:
        summary["final_skipped"] = final_skipped
    io.write_json(run.dir / "summary.json", summary)
    return summary


def screening(run: Run) -> dict:
    """Which model made the scores and how long its noisy finetune was, against the delivered one."""
    cfg = run.cfg
    screen = cfg.screen_model or cfg.model
    steps, epochs = cfg.screen_steps, cfg.screen_epochs
    done = {k: finished_run(run.dir / k) for k in ("m1", "final")}
    length = f"{steps}-step" if steps else f"{epochs:g}-epoch" if epochs else ""
    return {
        "screen_model": screen,
        "screen_model_source": describe(screen),
        "screen_steps": steps,
        "screen_epochs": None if steps else epochs,
        "delivered_model": cfg.model,
        "trained": {
            k: {"steps": v.get("steps"), "tokens": v.get("tokens")} for k, v in done.items()
        },
        "note": f"the filtering stages (M0 -> M1 -> M2 and every score) ran on {screen}"
        + (f" with a {length} noisy finetune" if length else "")
        + (f"; {cfg.model} is finetuned once" if cfg.screen_model else "; M0 is finetuned again")
        + f", on the kept data ({final_length(cfg)})",
    }


def final_length(cfg) -> str:
    """How long the delivered finetune runs, in words."""
    t = cfg.final_train or cfg.noisy_train
    return f"{t.max_steps} steps" if t.max_steps else f"{t.epochs:g} epochs"


def threshold_warning(choice: ThresholdChoice) -> str | None:
    """A warning when phi removes nothing, everything, or more than half of the examples."""
    capped = choice.details.get("capped")
    if capped:
        return (
            f"the cap binds: the cut would have removed {capped['would_remove']} of "
            f"{choice.n_total} examples, the removal cap (`threshold.max_remove`, --remove-at-most) "
            f"allows {capped['limit']}"
        )
    if choice.degenerate:
        what = "nothing" if choice.n_removed == 0 else "everything"
        return f"the threshold removes {what}: {choice.reason}"
    if choice.n_removed > choice.n_total / 2:
        return (
            f"the threshold removes {choice.n_removed} of {choice.n_total} examples (more than half): "
            f"{choice.reason}. Check the forgetting histogram; --remove-fraction or --threshold "
            "sets the cut by hand"
        )
    return None


def prompt_format(run_dir: Path) -> dict:
    """The prompt format the noisy finetune used (`chat`: the tokenizer's chat template); the
    final finetune's when the filter needed no M1."""
    state = finished_run(run_dir / "m1") or finished_run(run_dir / "final")
    config = state.get("config", {})
    return {
        "requested": config.get("prompt_format", "auto"),
        "used": state.get("prompt_format", "alpaca"),
        "assistant_turns": config.get("assistant_turns", "last"),
    }


def truncation(run_dir: Path) -> dict:
    """Records cut to the context (batching's truncation policy), counted by training M1 and M2.

    Scoring uses the same max_length and tokenizer as training M1, so the noisy count is also
    the number of noisy records scored truncated.
    """
    out: dict = {
        "policy": "forgetfilter.batching: chat format: oldest history turns dropped, then the last "
        "user turn's text cut at the left, then the response's text at the right (the system "
        "prompt and template tokens are never cut); Alpaca format: prompt cut at the left, a "
        "response over max_length - 16 cut at the right"
    }
    for name, stage in (("noisy", "m1"), ("safe", "m2")):
        state = finished_run(run_dir / stage)
        out[name] = state.get("truncated_records")
        out.setdefault("max_length", state.get("max_length"))
    return out


def accounting(read_report: dict, kept: list[dict], removed: list[dict]) -> dict:
    """Counts that reconcile: input lines = kept + removed + rejected at load, by source and label."""
    rejected = read_report["n_rejected"]
    counts = {
        "kept": len(kept),
        "removed": len(removed),
        "rejected_at_load": rejected,
        "input": len(kept) + len(removed) + rejected,
    }
    for key in ("source", "label"):
        counts[f"by_{key}"] = {
            str(v): {"kept": kc[v], "removed": rc[v]}
            for kc, rc in [
                (Counter(r.get(key) for r in kept), Counter(r.get(key) for r in removed))
            ]
            for v in sorted(set(kc) | set(rc), key=str)
        }
    return counts


def label_quality(records: list[dict], rows: list[dict], signal: str = "loss") -> dict | None:
    """Precision, recall, F1 and AUROC of the removal against label == unsafe (None without labels).

    Beside the chosen forgetting score it reports, as rankings only, the static baseline (how well
    M1 learned each example, no safety step), the other forgetting normalisations, the
    forgetting-curve area when it was recorded, and with M0 scores (loss signal) `learning`, the
    share of M0's NLL that noisy finetuning removed (1 - NLL_M1 / NLL_M0, no safety step), and
    `surprise`, M0's NLL of the response (no finetune at all).
    """
    from .metrics import filter_quality

    labels = {r["id"]: r.get("label") for r in records}
    if not any(v is not None for v in labels.values()):
        return None
    unsafe = [labels[r["id"]] == "unsafe" for r in rows]
    q = {
        "forgetting": filter_quality(
            [r["removed"] for r in rows], unsafe, [r["forgetting"] for r in rows]
        )
    }
    rankings = _rankings(rows, signal) if rows and "before" in rows[0] else {}
    for name, values in rankings.items():
        q[name] = filter_quality([False] * len(rows), unsafe, values.tolist())
    q["static_baseline"] = q.get("static_low_nll_before") or q.get("static_high_rouge_before")
    return q


def _rankings(rows: list[dict], signal: str) -> dict[str, np.ndarray]:
    """Every label-free ranking the scores file allows besides the filter's own."""
    before = np.array([r["before"] for r in rows])
    after = np.array([r["after"] for r in rows]) if "after" in rows[0] else None
    nll = kind_of(signal) == "nll"
    rankings = {
        "static_low_nll_before" if nll else "static_high_rouge_before": static_fit(
            ScoreTable(signal, before, after)
        )
    }
    m0 = np.array([r["m0"] for r in rows]) if "m0" in rows[0] else None
    for name, recipe in RECIPES.items():  # every recipe this run's scores allow
        if after is None:
            break
        if kind_of(signal) in recipe.kinds and (m0 is not None or "m0" not in recipe.needs):
            rankings[f"forgetting_{name}"] = forgetting(before, after, signal, name, m0)
    if "curve_auc" in rows[0]:
        rankings["curve_auc"] = np.array([r["curve_auc"] for r in rows])
    if m0 is not None:
        rankings["learning"] = learning(m0, before)
        rankings["surprise"] = surprise(ScoreTable(signal, before, after, m0))
    return rankings
