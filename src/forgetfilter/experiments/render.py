"""Tables, plots and report.html of an experiment, from its results.json only."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .context import FILTER_METHODS, SAFETY_METRICS


def write_outputs(out: Path, results: dict) -> Path:
    """Write table.md, table.csv, plots/*.png and report.html for a results dict."""
    from ..report import Section, Table, write_report

    out = Path(out)
    name = results["experiment"]
    sections, rows = RENDERERS[name](out / "plots", results)
    table = Table(
        rows, table_columns(rows), caption="All rows (also in table.md and table.csv)", name="table"
    )
    sections = [Section("Setup", [setup_text(results)]), *sections, Section("Table", [table])]
    return write_report(out, TITLES[name], sections, meta=f"forgetfilter experiment {name}")


_COLUMN_ORDER = (
    "risk", "method", "group", "arm", "round", "phase", "x", "unsafe_ratio", "safety_steps", "phi",
    "s_AMB", "s_DIS", "acc_ambig", "mean_toxicity", "frac_toxic", "mean_harm", "refusal_rate",
    "squad_f1", "alpaca_rougeL", "n", "nll_M0", "nll_M1", "nll_M2", "mean_forgetting", "median_forgetting",
    "n_train", "n_removed", "filter_precision", "filter_recall", "filter_f1", "filter_auroc",
    "precision", "recall", "f1", "auroc", "seconds", "note",
)  # fmt: skip


def table_columns(rows: Sequence[dict]) -> list[str]:
    """The columns present in `rows`, in a fixed readable order (JSON key order is not kept)."""
    present = {k for r in rows for k in r}
    return [c for c in _COLUMN_ORDER if c in present] + sorted(present - set(_COLUMN_ORDER))


TITLES = {
    "dynamics": "Learning and forgetting dynamics of unsafe examples",
    "compare": "ForgetFilter vs. baselines",
    "ablate": "ForgetFilter ablations: unsafe ratio, safety-finetuning steps, threshold phi",
    "interleaved": "Long-term safety: interleaved safety finetuning vs. filtering first",
}


def setup_text(results: dict) -> str:
    """What was run, at what scale, and how long it took."""
    s = results["scale"]
    sizes = (
        f"noisy N = {s['n']}, safety set {s['n_safe'] or 'min(7000, available)'}, "
        f"evaluation items per suite {s['eval_limit'] or s['n_eval']}"
    )
    return (
        f"- model: `{results['model']}`, scale `{s['name']}` ({sizes}), seed {results['seed']}, "
        f"risks: {', '.join(results['risks'])}\n"
        f"- wall time of the last invocation: {results.get('wall_s_this_invocation')} s "
        "(finished methods are cached and not recomputed)"
    )


def _render_compare(plots: Path, results: dict) -> tuple[list, list[dict]]:
    from ..report import Image, Section, Table, plot_bars

    sections = []
    for risk, rr in results["risk_results"].items():
        rows = rr["rows"]
        safety = [col for _, col in SAFETY_METRICS[risk]]
        cols = ["method", *safety, "squad_f1", "alpaca_rougeL", "n_train", "n_removed",
                "filter_precision", "filter_recall", "filter_f1", "filter_auroc", "seconds"]  # fmt: skip
        bars = plot_bars(
            rows, [*safety, "squad_f1", "alpaca_rougeL"], plots / f"compare_{risk}.png",
            title=f"{risk}: safety and downstream metrics per method", highlight=("forgetfilter",),
        )  # fmt: skip
        frows = [
            r for r in rows if r["method"] in FILTER_METHODS and r.get("filter_f1") is not None
        ]
        fbars = plot_bars(
            frows, ["filter_precision", "filter_recall", "filter_f1", "filter_auroc"],
            plots / f"filters_{risk}.png", title=f"{risk}: quality of each filter's removal vs. labels",
            highlight=("forgetfilter",),
        )  # fmt: skip
        notes = "\n".join(f"- **{r['method']}**: {r['note']}" for r in rows if r.get("note"))
        sections.append(Section(f"Risk: {risk}", [
            headline_text(risk, rr["headline"]),
            Table(rows, cols, caption=f"{risk}: {SAFETY_NOTE[risk]}"),
            Image(bars, f"{risk}: per-method metrics (ForgetFilter in red)"),
            Image(fbars, "precision / recall / F1 of the removal against the hidden labels, and AUROC of each filter's score"),
            notes,
        ]))  # fmt: skip
    return sections, results["rows"]


SAFETY_NOTE = {
    "bias": "s_AMB / s_DIS are BBQ bias scores in [-1, 1] (0 = unbiased, lower = less stereotyped); "
    "acc_ambig = accuracy on ambiguous items (the right answer is UNKNOWN). squad_f1 x100, ROUGE-L in [0, 1].",
    "toxicity": "mean_toxicity = mean classifier probability of the continuation being toxic, frac_toxic = share > 0.5 "
    "(lower is safer). squad_f1 x100, ROUGE-L in [0, 1].",
    "harm": "mean_harm = mean harmfulness probability of the response, refusal_rate = share of refusals. "
    "squad_f1 x100, ROUGE-L in [0, 1].",
}


def headline_text(risk: str, h: dict) -> str:
    """The relative changes and the paper's claims as bullet lines."""
    p = h["primary_metric"]
    pct = lambda v: "n/a" if v is None else f"{v:+.1%}"  # noqa: E731
    lines = [f"Relative changes of {p} (lower is safer), SQuAD F1 and Alpaca ROUGE-L:", ""]
    for key, v in h.items():
        if "_vs_" in key:
            lines.append(f"- {key}: {p} {pct(v.get(p))}, squad_f1 {pct(v.get('squad_f1'))}, "
                         f"alpaca_rougeL {pct(v.get('alpaca_rougeL'))}")  # fmt: skip
    lines += ["", "Checks against the paper:", ""]
    for key, c in h["checks"].items():
        verdict = (
            {True: "agrees", False: "disagrees", None: "n/a"}[c.get("agrees")]
            if "agrees" in c
            else "compare"
        )
        lines.append(f"- {key}: {c['criterion']}; measured {c['measured']} -> **{verdict}**")
    return "\n".join(lines)


def _render_dynamics(plots: Path, results: dict) -> tuple[list, list[dict]]:
    from ..report import Image, Section, plot_forgetting_by_group, plot_group_curves

    learn = plot_group_curves(
        results["learning"], plots / "learning.png",
        title="Learning: noisy finetuning M0 -> M1 (per-group mean response NLL)",
    )  # fmt: skip
    forget = plot_group_curves(
        results["forgetting"], plots / "forgetting.png",
        title="Forgetting: safety finetuning M1 -> M2 (per-group mean response NLL)",
        xlabel="optimizer step of safety finetuning",
    )  # fmt: skip
    rows = [
        {"id": f"{g}:{i}", "forgetting": v}
        for g, vs in results["forgetting_scores"].items()
        for i, v in enumerate(vs)
    ]
    groups = {r["id"]: r["id"].rsplit(":", 1)[0] for r in rows}
    hist = plot_forgetting_by_group(
        rows, groups, plots / "forgetting_hist.png", phi=results.get("phi"),
        title="Forgetting scores (relative NLL increase M1 -> M2) by group",
    )  # fmt: skip
    q = (results.get("quality") or {}).get("forgetting") or {}
    text = (
        f"Threshold: {results['threshold']['reason']}. Removal vs. hidden labels: precision "
        f"{_f(q.get('precision'))}, recall {_f(q.get('recall'))}, F1 {_f(q.get('f1'))}, AUROC {_f(q.get('auroc'))}."
    )
    return [Section("Dynamics", [
        Image(learn, "learning: mean response NLL of a group-balanced sample of the noisy set during noisy finetuning"),
        Image(forget, "forgetting: mean response NLL of every noisy example during safety finetuning"),
        Image(hist, "forgetting score = NLL(M2) / NLL(M1) - 1 of each noisy example; dashed: the chosen phi"),
        text,
    ])], results["rows"]  # fmt: skip


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _render_ablate(plots: Path, results: dict) -> tuple[list, list[dict]]:
    from ..report import Image, Section, plot_xy

    runs = results["ratios"]
    final = {r: run["steps"][-1] for r, run in runs.items() if run["steps"]}
    ratio_png = plot_xy(
        {m: [(float(r), s[m.lower()]) for r, s in final.items()] for m in ("F1", "AUROC")},
        plots / "ablate_ratio.png", title="Filter quality vs. unsafe ratio", xlabel="unsafe ratio of the noisy set",
        ylabel="score (0-1)", ylim=(0, 1.02),
    )  # fmt: skip
    series = {}
    for r, run in runs.items():
        for m in ("f1", "auroc"):
            series[f"{m.upper()} (ratio {r})"] = [(s["step"], s[m]) for s in run["steps"]]
    steps_png = plot_xy(
        series, plots / "ablate_steps.png", title="Filter quality vs. safety-finetuning steps",
        xlabel="safety-finetuning steps (M1 -> M2)", ylabel="score (0-1)", ylim=(0, 1.02),
    )  # fmt: skip
    phi = results["phi"]
    auroc = runs["0.5"]["steps"][-1]["auroc"] if runs["0.5"]["steps"] else None
    phi_series = {m: [(p["phi"], p[m.lower()]) for p in phi] for m in ("F1", "precision", "recall")}
    phi_series["AUROC (threshold-free)"] = [(p["phi"], auroc) for p in phi]
    phi_png = plot_xy(
        phi_series, plots / "ablate_phi.png", title="Filter quality vs. threshold phi (unsafe ratio 0.5)",
        xlabel="phi (forgetting score threshold)", ylabel="score (0-1)", ylim=(0, 1.02),
        vlines={"auto phi": results.get("auto_phi")},
    )  # fmt: skip
    return [Section("Ablations", [
        "Each ratio is one ForgetFilter run whose safety finetune is scored at evenly spaced checkpoints; "
        "the step sweep applies the run's threshold rule (auto) at each checkpoint. The phi sweep reuses the "
        "ratio-0.5 run's scores (no retraining).",
        Image(ratio_png, "F1 and AUROC of the removal at the last checkpoint, per unsafe ratio"),
        Image(steps_png, "F1 and AUROC vs. the number of safety-finetuning steps"),
        Image(phi_png, "precision, recall and F1 vs. phi; AUROC does not depend on phi"),
    ])], results["rows"]  # fmt: skip


def _render_interleaved(plots: Path, results: dict) -> tuple[list, list[dict]]:
    from ..report import Image, Section, plot_xy

    col = results["metric"]
    rows = results["rows"]
    series = lambda k: {  # noqa: E731
        "interleaved: noisy chunk, then safety finetune": [
            (r["x"], r[k]) for r in rows if r["arm"] == "interleaved"
        ],
        "filter first (ForgetFilter once), then kept chunks": [
            (r["x"], r[k]) for r in rows if r["arm"] == "filter_first"
        ],
    }
    safety_png = plot_xy(
        series(col),
        plots / "interleaved.png",
        title=f"Long-term safety: {col} after each round",
        xlabel="round (x.5 = after that round's safety finetune)",
        ylabel=f"{col} (lower is safer)",
    )
    squad_png = plot_xy(
        series("squad_f1"),
        plots / "interleaved_squad.png",
        title="SQuAD F1 after each round",
        xlabel="round (x.5 = after that round's safety finetune)",
        ylabel="SQuAD F1 (x100)",
    )
    return [Section("Interleaved", [
        f"The noisy set is split into {results['scale']['rounds']} chunks. Interleaved: finetune on chunk k, "
        f"evaluate, safety-finetune {results['scale']['round_safety_steps']} steps, evaluate. Filter first: "
        "ForgetFilter on all the data once, then finetune on the kept part of each chunk in turn.",
        Image(safety_png, f"{col} after each round"),
        Image(squad_png, "SQuAD F1 after each round"),
    ])], rows  # fmt: skip


RENDERERS: dict[str, Callable[[Path, dict], tuple[list, list[dict]]]] = {
    "dynamics": _render_dynamics,
    "compare": _render_compare,
    "ablate": _render_ablate,
    "interleaved": _render_interleaved,
}
