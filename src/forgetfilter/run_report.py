"""The audit report of one `forgetfilter run`: `report.html` and its figures as PNG files.

`write_run_report(run_dir)` reads only what the run wrote (summary.json, filter.json, scores.jsonl,
kept.jsonl, removed.jsonl, trusted_scores.jsonl, curve/, config.json, timings.json) and writes:

- `report/score_histogram.png`, `report/learning_vs_forgetting.png` and, with curve points,
  `report/forgetting_curves.png`;
- `report.html`: one self-contained file (the PNGs embedded, no network): the verdict (removed of
  how many, the unsafe-share estimate, the cut and why), the figures, kept/removed per source and
  per label, the most strongly removed examples and the ones just below the cut with their texts
  and scores, a searchable and sortable table of every removed example, label-based quality when
  the input carried labels, the stage timings and the configuration.

At scale the figures sample (`MAX_POINTS` points in the scatter) and the tables cap
(`MAX_TABLE_ROWS` removed examples, `N_EXAMPLES` per text list), saying so; kept.jsonl and
removed.jsonl hold everything. Fields a run written by an older version lacks are left out.
Labels are read here only to describe the run; the filter never saw them.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from . import io
from .report import GROUP_COLOURS, Image, Raw, Section, Table, fmt, save_figure, write_report
from .signals import kind_of

N_EXAMPLES = 10
MAX_TABLE_ROWS = 1000
MAX_POINTS = 5000
FOLD_CHARS = 600
TRUSTED = "trusted sample"


# ---------------------------------------------------------------- reading the run
def load_run(run_dir: str | Path) -> dict[str, Any]:
    """Everything the report shows, read from the run directory (missing files -> empty)."""
    run_dir = Path(run_dir)

    def optional_json(name: str) -> dict:
        path = run_dir / name
        return io.read_json(path) if path.exists() else {}

    def optional_jsonl(name: str) -> list[dict]:
        path = run_dir / name
        return io.read_jsonl(path) if path.exists() else []

    if not (run_dir / "summary.json").exists():
        from .errors import ForgetFilterError

        raise ForgetFilterError(f"{run_dir} holds no finished run (no summary.json)")
    return {
        "dir": run_dir,
        "summary": io.read_json(run_dir / "summary.json"),
        "filter": optional_json("filter.json"),
        "config": optional_json("config.json").get("config", {}),
        "timings": optional_json("timings.json"),
        "scores": optional_jsonl("scores.jsonl"),
        "kept": optional_jsonl("kept.jsonl"),
        "removed": optional_jsonl("removed.jsonl"),
        "trusted": optional_jsonl("trusted_scores.jsonl"),
        "curve": {
            int(p.stem.split("-")[1]): io.read_jsonl(p)
            for p in sorted((run_dir / "curve").glob("step-*.jsonl"))
            if p.stem.split("-")[1].isdigit()
        },
    }


def group_of(record: Mapping[str, Any], labelled: bool) -> str:
    """How an example is grouped in the figures: its label when the input has labels, else its
    source column, else one group."""
    if labelled and record.get("label") is not None:
        return str(record["label"])
    return str(record.get("source") or "your data")


def _groups(run: Mapping[str, Any]) -> tuple[dict[str, str], bool]:
    records = run["kept"] + run["removed"]
    labelled = any(r.get("label") is not None for r in records)
    return {str(r["id"]): group_of(r, labelled) for r in records}, labelled


# ---------------------------------------------------------------- figures
_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _colour(group: str, order: Sequence[str]) -> str:
    fixed = {"unsafe": GROUP_COLOURS["unsafe"], TRUSTED: "#000000", "safe": "#2ca02c"}
    if group in fixed:
        return fixed[group]
    rest = [g for g in order if g not in fixed]
    return _PALETTE[rest.index(group) % len(_PALETTE)] if group in rest else "#7f7f7f"


def _finish_plot(fig, ax, path: Path, legend_size: int = 8, **labels: str) -> Path:
    """Titles and axis labels, legend and grid, saved as PNG: one look for every figure."""
    ax.set(**labels)
    ax.legend(fontsize=legend_size)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_histogram(run: Mapping[str, Any], path: Path) -> Path:
    """The filter score of every example by group (and of the trusted sample), the cut marked."""
    groups, _ = _groups(run)
    by: dict[str, list[float]] = {}
    for row in run["scores"]:
        by.setdefault(groups.get(str(row["id"]), "your data"), []).append(float(row["forgetting"]))
    if run["trusted"]:
        by[TRUSTED] = [float(r["score"]) for r in run["trusted"]]
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    values = [v for vs in by.values() for v in vs]
    bins = np.histogram_bin_edges(values, bins=50) if values else 10
    order = sorted(by, key=lambda g: (g == TRUSTED, -len(by[g])))
    for g in order:
        colour = _colour(g, order)
        kw = {"bins": bins, "color": colour}
        if g != TRUSTED:
            ax.hist(by[g], histtype="stepfilled", alpha=0.25, **kw)
        ax.hist(by[g], histtype="step", lw=1.6, label=f"{g} (n={len(by[g])})", **kw)
    phi = run["summary"].get("threshold", {}).get("phi")
    if phi is not None and math.isfinite(phi):
        ax.axvline(phi, color="k", ls="--", lw=1.2, label=f"cut phi = {phi:.4g}")
    return _finish_plot(
        fig,
        ax,
        path,
        title="Filter score by group (removed: right of the cut)",
        xlabel="filter score (larger = removed first)",
        ylabel="examples",
    )


def learning_and_forgetting(
    rows: Sequence[Mapping[str, Any]], kind: str = "nll"
) -> tuple[np.ndarray, np.ndarray, str, str]:
    """(learning, forgetting, x-axis name, y-axis name) per scores row. An NLL-like signal:
    learning 1 - NLL_M1/NLL_M0 (with M0 scores, else minus NLL on M1), relative forgetting
    (NLL_M2 - NLL_M1)/NLL_M1; a similarity (ROUGE): the score on M1, and its drop on M2."""
    before = np.array([float(r["before"]) for r in rows])
    after = np.array([float(r["after"]) for r in rows])
    if kind != "nll":
        return before, before - after, "fit under M1: score on M1", "forgetting: M1 - M2 score"
    forgetting = (after - before) / np.maximum(np.abs(before), 1e-6)
    y = "relative forgetting: (NLL_M2 - NLL_M1) / NLL_M1"
    if rows and "m0" in rows[0]:
        m0 = np.array([float(r["m0"]) for r in rows])
        return 1.0 - before / np.maximum(m0, 1e-6), forgetting, "learning: 1 - NLL_M1 / NLL_M0", y
    return -before, forgetting, "fit under M1: - NLL_M1", y


def plot_scatter(run: Mapping[str, Any], path: Path, seed: int = 0) -> tuple[Path, int] | None:
    """Learning vs relative forgetting per example (a sample at scale); None without both."""
    rows = run["scores"]
    if not rows or "before" not in rows[0] or "after" not in rows[0]:
        return None
    groups, _ = _groups(run)
    keep = np.arange(len(rows))
    if len(rows) > MAX_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), MAX_POINTS, replace=False))
    rows = [rows[i] for i in keep]
    kind = kind_of(run["summary"].get("signal", "loss"))
    x, y, xlabel, ylabel = learning_and_forgetting(rows, kind)
    removed = np.array([bool(r["removed"]) for r in rows])
    names = [groups.get(str(r["id"]), "your data") for r in rows]
    order = sorted(set(names), key=names.count, reverse=True)
    fig = Figure(figsize=(7.0, 5.0))
    ax = fig.subplots()
    for g in order:
        idx = np.array([n == g for n in names])
        for gone, marker in ((False, "o"), (True, "x")):
            sel = idx & (removed == gone)
            if sel.any():
                label = f"{g}, {'removed' if gone else 'kept'} ({int(sel.sum())})"
                ax.scatter(x[sel], y[sel], s=12, marker=marker, alpha=0.6, label=label,
                           color=_colour(g, order))  # fmt: skip
    sampled = f" (a sample of {len(rows)})" if len(keep) < len(run["scores"]) else ""
    title = f"Learning vs forgetting{sampled}"
    return _finish_plot(fig, ax, path, 7, title=title, xlabel=xlabel, ylabel=ylabel), len(rows)


def plot_curves(run: Mapping[str, Any], path: Path) -> Path | None:
    """Mean score per group at each safety-finetuning checkpoint (with `--curve-points`)."""
    if not run["curve"] or not run["scores"] or "before" not in run["scores"][0]:
        return None
    groups, _ = _groups(run)
    start = {str(r["id"]): float(r["before"]) for r in run["scores"]}
    series: dict[str, list[tuple[int, float]]] = {}
    points = {0: [{"id": k, "score": v} for k, v in start.items()], **run["curve"]}
    for step, rows in sorted(points.items()):
        by: dict[str, list[float]] = {}
        for r in rows:
            if str(r["id"]) in start:
                by.setdefault(groups.get(str(r["id"]), "your data"), []).append(float(r["score"]))
        for g, vs in by.items():
            series.setdefault(g, []).append((step, float(np.mean(vs))))
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    order = sorted(series)
    for g in order:
        xs, ys = zip(*series[g], strict=True)
        ax.plot(xs, ys, marker="o", ms=3.5, lw=1.8, label=g, color=_colour(g, order))
    return _finish_plot(
        fig,
        ax,
        path,
        title="Forgetting during the safety finetune",
        xlabel="safety-finetuning step",
        ylabel="mean score of the signal",
    )


# ---------------------------------------------------------------- sections
def verdict(run: Mapping[str, Any]) -> Section:
    """How many were removed, the unsafe-share estimate, the cut and why."""
    s = run["summary"]
    counts, choice = s.get("counts", {}), s.get("threshold", {})
    n_in, n_removed = counts.get("input", 0), counts.get("removed", 0)
    share = n_removed / n_in if n_in else 0.0
    lines = [
        f"**Removed {n_removed} of {n_in} examples ({share:.1%})**; kept {counts.get('kept', 0)}, "
        f"rejected at load {counts.get('rejected_at_load', 0)}.",
    ]
    est = s.get("unsafe_share")
    if est and est.get("basis") == "score distribution":
        lines.append(
            f"**Unsafe share:** about {est['estimate']:.0%} of the data looks unsafe, judged from "
            "the score distribution alone (weaker: no interval; a trusted sample gives one)."
        )
    elif est and est.get("estimate") is not None:
        lines.append(
            f"**Unsafe share:** about {est['estimate']:.0%} ({est['low']:.0%}-{est['high']:.0%}, "
            "90% interval) of the data looks unsafe, estimated against the trusted sample."
        )
    elif est:
        lines.append(f"**Unsafe share:** not estimated ({est.get('note', '')}).")
    phi = choice.get("phi")
    phi_text = fmt(phi) if phi is not None and math.isfinite(phi) else "none (nothing removed)"
    lines.append(f"**The cut:** phi = {phi_text}, method `{choice.get('method', 'n/a')}`.")
    lines.append(f"**Why:** {choice.get('reason', 'not recorded')}")
    if s.get("warning"):
        lines.append(f"**Warning:** {s['warning']}")
    trusted = s.get("trusted")
    if trusted:
        lines.append(
            f"Trusted sample: {trusted.get('n')} examples from `{trusted.get('path')}` "
            f"({trusted.get('note', '')})."
        )
    lines.append(
        f"Model `{s.get('model')}`, signal `{s.get('signal')}`, score `{s.get('normalise')}`"
        f"{neighbours_text(s.get('neighbours'))}"
        f"{', filter `' + run['config']['filter'] + '`' if run['config'].get('filter') else ''}."
    )
    return Section("Verdict", ["\n\n".join(lines)])


def counts_section(run: Mapping[str, Any]) -> Section:
    """Kept and removed per source and per label (labels only when the input carried them)."""
    counts = run["summary"].get("counts", {})
    blocks: list[Any] = []
    for key, title in (("by_source", "source"), ("by_label", "label")):
        table = counts.get(key) or {}
        if key == "by_label" and set(table) <= {"None"}:
            continue
        rows = [
            {
                title: name,
                "kept": v["kept"],
                "removed": v["removed"],
                "removed %": round(100 * v["removed"] / max(1, v["kept"] + v["removed"]), 1),
            }
            for name, v in table.items()
        ]
        if rows:
            blocks.append(Table(rows, caption=f"kept and removed per {title}"))
    return Section("Counts", blocks or ["No per-source counts were recorded."])


def _parts(row: Mapping[str, Any] | None) -> str:
    if not row:
        return ""
    names = {"m0": "NLL on M0", "before": "on M1", "after": "on M2", "curve_auc": "curve area"}
    return ", ".join(f"{label} {fmt(row[k])}" for k, label in names.items() if k in row)


def _text(record: Mapping[str, Any]) -> str:
    """The example as a reader sees it: the conversation, or prompt and response."""
    turns = record.get("messages")
    if turns:
        return "\n\n".join(f"[{t.get('role')}] {_content(t.get('content'))}" for t in turns)
    return f"[prompt] {record.get('prompt', '')}\n\n[response] {record.get('response', '')}"


def _content(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def example_html(record: Mapping[str, Any], row: Mapping[str, Any] | None) -> str:
    """One example: its score, parts and reason, and its text escaped (long texts folded)."""
    text = _text(record)
    head = (
        f"<b>score {html.escape(fmt(record.get('forgetting')))}</b> · id "
        f"<code>{html.escape(str(record.get('id')))}</code> · line {html.escape(fmt(record.get('line')))}"
    )
    extra = [p for p in (_parts(row), record.get("reason")) if p]
    if record.get("label") is not None:
        extra.append(f"label (not seen by the filter): {record['label']}")
    meta = "<br>".join(html.escape(str(p)) for p in extra)
    if len(text) > FOLD_CHARS:
        body = (
            f"<pre class='ex'>{html.escape(text[:FOLD_CHARS])}…</pre><details><summary>whole "
            f"text ({len(text)} characters)</summary><pre class='ex'>{html.escape(text)}</pre>"
            "</details>"
        )
    else:
        body = f"<pre class='ex'>{html.escape(text)}</pre>"
    return f"<div class='example'><div>{head}</div><div class='meta'>{meta}</div>{body}</div>"


def examples_section(run: Mapping[str, Any]) -> Section:
    """The most strongly removed examples and the kept ones just below the cut."""
    rows = {str(r["id"]): r for r in run["scores"]}
    by_score = lambda rs: sorted(rs, key=lambda r: -float(r.get("forgetting", 0.0)))  # noqa: E731
    top = by_score(run["removed"])[:N_EXAMPLES]
    below = by_score(run["kept"])[:N_EXAMPLES]
    blocks: list[Any] = [
        f"### Most strongly removed ({len(top)} of {len(run['removed'])})",
        Raw("".join(example_html(r, rows.get(str(r["id"]))) for r in top) or "<p>none</p>"),
        f"### Just below the cut: the highest-scoring kept examples ({len(below)} of "
        f"{len(run['kept'])})",
        Raw("".join(example_html(r, rows.get(str(r["id"]))) for r in below) or "<p>none</p>"),
    ]
    return Section("Examples", blocks)


def removed_table(run: Mapping[str, Any]) -> Section:
    """Every removed example (capped at MAX_TABLE_ROWS, saying so), searchable and sortable."""
    removed = sorted(run["removed"], key=lambda r: -float(r.get("forgetting", 0.0)))
    shown = removed[:MAX_TABLE_ROWS]
    cells = []
    for r in shown:
        text = _text(r).replace("\n", " ")
        cells.append(
            "<tr>"
            + f"<td data-v='{float(r.get('forgetting', 0.0))}'>{html.escape(fmt(r.get('forgetting')))}</td>"
            + f"<td>{html.escape(str(r.get('id')))}</td>"
            + f"<td data-v='{r.get('line') or 0}'>{html.escape(fmt(r.get('line')))}</td>"
            + f"<td>{html.escape(str(r.get('source') or ''))}</td>"
            + f"<td class='txt'>{html.escape(text[:300])}{'…' if len(text) > 300 else ''}</td>"
            + f"<td>{html.escape(str(r.get('reason', '')))}</td></tr>"
        )
    note = (
        f"Showing the {len(shown)} highest-scoring of {len(removed)} removed examples; "
        "removed.jsonl holds them all."
        if len(shown) < len(removed)
        else f"All {len(removed)} removed examples."
    )
    table = (
        f"<p class='meta'>{html.escape(note)} Type to search; click a column to sort.</p>"
        "<input id='search' type='search' placeholder='search the removed examples' "
        "oninput='ffSearch(this.value)'>"
        "<table id='removed'><thead><tr><th onclick='ffSort(0,1)'>score</th>"
        "<th onclick='ffSort(1,0)'>id</th><th onclick='ffSort(2,1)'>line</th>"
        "<th onclick='ffSort(3,0)'>source</th><th>text</th><th>reason</th></tr></thead>"
        f"<tbody>{''.join(cells)}</tbody></table>"
    )
    return Section("Every removed example", [Raw(table + _TABLE_JS)])


def quality_section(run: Mapping[str, Any]) -> Section | None:
    """The removal against the input's labels, and every ranking's AUROC (labels only)."""
    quality = run["summary"].get("quality")
    if not quality:
        return None
    rows = [
        {
            "score": name,
            "AUROC": q.get("auroc"),
            "precision": q.get("precision") if name == "forgetting" else None,
            "recall": q.get("recall") if name == "forgetting" else None,
            "F1": q.get("f1") if name == "forgetting" else None,
        }
        for name, q in quality.items()
        if isinstance(q, dict)
    ]
    text = (
        "The input carried labels: this is how the removal compares with them (the filter never "
        "read them). `forgetting` is the run's own score and cut; the other rows rank by other "
        "scores without a cut."
    )
    return Section("Quality against the labels", [text, Table(rows)])


def settings_section(run: Mapping[str, Any]) -> Section:
    """Stage timings and the configuration."""
    timings = [{"stage": k, "seconds": v} for k, v in run["timings"].items()]
    total = sum(float(v) for v in run["timings"].values())
    config = json.dumps(run["config"], indent=2, sort_keys=True)
    return Section(
        "Settings and timings",
        [
            Table(timings, caption=f"stage timings (total {total:.1f} s)"),
            Raw(
                f"<details><summary>configuration</summary><pre>{html.escape(config)}</pre></details>"
            ),
        ],
    )


# ---------------------------------------------------------------- the report
def write_run_report(run_dir: str | Path) -> Path:
    """Write `report.html` and `report/*.png` for a finished run directory; return the HTML path."""
    run = load_run(run_dir)
    figures = Path(run_dir) / "report"
    figures.mkdir(parents=True, exist_ok=True)
    images: list[Any] = []
    if run["scores"]:
        images.append(
            Image(
                plot_histogram(run, figures / "score_histogram.png"),
                "filter score by group, the cut dashed"
                + ("; black: the trusted sample" if run["trusted"] else ""),
            )
        )
    scatter = plot_scatter(run, figures / "learning_vs_forgetting.png")
    if scatter:
        images.append(
            Image(scatter[0], "each example: how much M1 learned it, how much M2 forgot it")
        )
    curves = plot_curves(run, figures / "forgetting_curves.png")
    if curves:
        images.append(Image(curves, "mean score per group at each curve point"))
    sections = [verdict(run), Section("Figures", images or ["No scores were recorded."])]
    sections += [counts_section(run), examples_section(run), removed_table(run)]
    sections += [s for s in (quality_section(run),) if s] + [settings_section(run)]
    return write_report(
        run_dir, f"forgetfilter run: {Path(run_dir).resolve().name}", sections,
        meta=f"run directory {Path(run_dir).resolve()}; every figure is also a PNG under report/",
    )  # fmt: skip


_TABLE_JS = """<script>
function ffSearch(q){q=q.toLowerCase();for(const tr of document.querySelectorAll('#removed tbody tr'))
{tr.style.display=tr.textContent.toLowerCase().includes(q)?'':'none';}}
let ffLast=null;function ffSort(c,num){const tb=document.querySelector('#removed tbody');
const rows=[...tb.rows];const dir=(ffLast===c)?-1:1;ffLast=(ffLast===c)?null:c;
const key=r=>num?parseFloat(r.cells[c].dataset.v):r.cells[c].textContent;
rows.sort((a,b)=>{const x=key(a),y=key(b);return (x>y?1:x<y?-1:0)*dir*(num?-1:1);});
rows.forEach(r=>tb.appendChild(r));}
</script>"""


def neighbours_text(k: int | None) -> str:
    """How the score was smoothed, as the verdict says it ("" for none)."""
    return f", averaged over each example and its {k} most similar ones" if k else ""
