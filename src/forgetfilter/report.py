"""Figures (matplotlib, drawn off screen) and a self-contained HTML report with tables and embedded PNGs.

`write_report(out_dir, title, sections)` writes one portable `report.html`: every image is embedded
as a base64 data URI, every table is an HTML table (and, when it has a `name`, also `<name>.md` and
`<name>.csv` beside the report). All files are written atomically.

Sections are `Section(title, blocks)` where a block is a text string (markdown-ish: blank-line
separated paragraphs, `- ` bullet lines, `**bold**`, `` `code` ``), a `Table` or an `Image`; a plain
dict `{"title", "text", "table" | "tables", "images"}` is accepted too.

Plot helpers share one look: a title, axis labels with units, a legend, fixed colours per group.
"""

from __future__ import annotations

import base64
import csv
import html
import io as _io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # no pyplot: the user's matplotlib backend is left alone

from . import io

GROUPS = ("unsafe", "safe (same risk)", "SQuAD", "Alpaca")
GROUP_COLOURS = {
    "unsafe": "#d62728",
    "safe (same risk)": "#2ca02c",
    "SQuAD": "#1f77b4",
    "Alpaca": "#ff7f0e",
    "other": "#7f7f7f",
}
DPI = 110


# ---------------------------------------------------------------- report structure
@dataclass
class Table:
    """A table: rows of dicts, optional column order, caption, and a file `name` for .md/.csv."""

    rows: list[dict]
    columns: list[str] | None = None
    caption: str = ""
    name: str | None = None


@dataclass
class Image:
    """A PNG file to embed, with a caption."""

    path: str | Path
    caption: str = ""


class Raw(str):
    """A block of ready HTML, inserted as it is (plain text blocks are escaped)."""


@dataclass
class Section:
    """A titled part of the report: text strings, `Table`s and `Image`s in order."""

    title: str
    blocks: list[str | Table | Image | Raw] = field(default_factory=list)


def as_section(obj: Section | Mapping[str, Any]) -> Section:
    """A `Section` from a Section or a dict with `title`, `text`, `table`/`tables`, `images`."""
    if isinstance(obj, Section):
        return obj
    blocks: list[str | Table | Image] = []
    text = obj.get("text")
    blocks += [text] if isinstance(text, str) else list(text or [])
    tables = list(obj.get("tables") or []) + (
        [obj["table"]] if obj.get("table") is not None else []
    )
    blocks += [t if isinstance(t, Table) else Table(list(t)) for t in tables]
    blocks += [i if isinstance(i, Image) else Image(i) for i in obj.get("images") or []]
    return Section(str(obj.get("title", "")), blocks)


# ---------------------------------------------------------------- cell formatting
def fmt(value: Any) -> str:
    """A table cell as text: None -> n/a, floats to 4 significant digits, lists joined."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def table_columns(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> list[str]:
    """The given columns, or every key in first-seen order."""
    if columns:
        return list(columns)
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def table_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table."""
    cols = table_columns(rows, columns)
    if not cols:
        return "(empty table)\n"
    esc = lambda s: fmt(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(esc(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_table_md(
    path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> Path:
    """Write a markdown table atomically."""
    with io.atomic_open(path) as fh:
        fh.write(table_markdown(rows, columns))
    return Path(path)


def write_table_csv(
    path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> Path:
    """Write a CSV table atomically (None as empty cells, floats unrounded)."""
    cols = table_columns(rows, columns)
    with io.atomic_open(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(cols)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    return Path(path)


# ---------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}th,td{border:1px solid #bbb;padding:.3em .6em;
text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
caption{caption-side:top;text-align:left;font-style:italic;padding:.3em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-style:italic;color:#555}
code{background:#f4f4f4;padding:0 .2em;border-radius:3px}.meta{color:#666;font-size:.85em}
.example{border:1px solid #ddd;border-radius:4px;padding:.5em .8em;margin:.7em 0}
pre.ex{white-space:pre-wrap;word-break:break-word;background:#fafafa;padding:.4em;margin:.3em 0}
td.txt{text-align:left;max-width:480px}#removed th{cursor:pointer}
input[type=search]{width:60%;padding:.3em;margin:.5em 0}
"""


def _inline(text: str) -> str:
    """Escape HTML, then render **bold** and `code`."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def text_html(text: str) -> str:
    """Markdown-ish text to HTML: paragraphs, `- ` bullet lists, `### ` sub-headings."""
    parts = []
    for para in re.split(r"\n\s*\n", text.strip()):
        lines = [ln.rstrip() for ln in para.splitlines() if ln.strip()]
        if not lines:
            continue
        if all(ln.lstrip().startswith("- ") for ln in lines):
            items = "".join(f"<li>{_inline(ln.lstrip()[2:])}</li>" for ln in lines)
            parts.append(f"<ul>{items}</ul>")
        elif lines[0].startswith("### "):
            parts.append(f"<h3>{_inline(lines[0][4:])}</h3>")
            if lines[1:]:
                parts.append(f"<p>{_inline(' '.join(lines[1:]))}</p>")
        else:
            parts.append(f"<p>{_inline(' '.join(lines))}</p>")
    return "\n".join(parts)


def table_html(table: Table) -> str:
    """An HTML table (cells formatted with `fmt`)."""
    cols = table_columns(table.rows, table.columns)
    cap = f"<caption>{_inline(table.caption)}</caption>" if table.caption else ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(r.get(c)))}</td>" for c in cols) + "</tr>"
        for r in table.rows
    )
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image_html(image: Image) -> str:
    """A <figure> with the PNG embedded as a data URI (a missing file is noted, not fatal)."""
    path = Path(image.path)
    if not path.exists():
        return f"<p class='meta'>(figure {html.escape(path.name)} is missing)</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cap = f"<figcaption>{_inline(image.caption)}</figcaption>" if image.caption else ""
    alt = html.escape(image.caption or path.stem)
    return f"<figure><img alt='{alt}' src='data:image/png;base64,{data}'>{cap}</figure>"


def block_html(block: str | Table | Image) -> str:
    """One block of a section as HTML."""
    if isinstance(block, Table):
        return table_html(block)
    if isinstance(block, Image):
        return image_html(block)
    if isinstance(block, Raw):
        return str(block)
    return text_html(str(block))


def render_html(title: str, sections: Iterable[Section | Mapping[str, Any]], meta: str = "") -> str:
    """The whole report as one HTML string."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    if meta:
        body.append(f"<p class='meta'>{_inline(meta)}</p>")
    for sec in map(as_section, sections):
        if sec.title:
            body.append(f"<h2>{html.escape(sec.title)}</h2>")
        body += [block_html(b) for b in sec.blocks]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(
    out_dir: str | Path,
    title: str,
    sections: Iterable[Section | Mapping[str, Any]],
    *,
    filename: str = "report.html",
    meta: str = "",
) -> Path:
    """Write `out_dir/filename` (one portable HTML file) and `<name>.md/.csv` of each named table."""
    out_dir = Path(out_dir)
    sections = [as_section(s) for s in sections]
    for sec in sections:
        for b in sec.blocks:
            if isinstance(b, Table) and b.name:
                write_table_md(out_dir / f"{b.name}.md", b.rows, b.columns)
                write_table_csv(out_dir / f"{b.name}.csv", b.rows, b.columns)
    path = out_dir / filename
    with io.atomic_open(path) as fh:
        fh.write(render_html(title, sections, meta))
    return path


# ---------------------------------------------------------------- figures
def save_figure(fig, path: str | Path) -> Path:
    """Save a figure as PNG atomically and close it."""
    buf = _io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    with io.atomic_open(path, "wb") as fh:
        fh.write(buf.getvalue())
    return Path(path)


def example_group(record: Mapping[str, Any]) -> str:
    """The evaluation group of a noisy record: unsafe, safe (same risk), SQuAD, Alpaca or other."""
    label, source = record.get("label"), str(record.get("source") or "").lower()
    if label == "unsafe":
        return "unsafe"
    if label == "safe":
        return "safe (same risk)"
    if "squad" in source:
        return "SQuAD"
    if "alpaca" in source:
        return "Alpaca"
    return "other"


def _ordered_groups(names: Iterable[str]) -> list[str]:
    names = set(names)
    return [g for g in GROUPS if g in names] + sorted(names - set(GROUPS))


def plot_forgetting_by_group(
    scores_rows: Sequence[Mapping[str, Any]],
    groups: Mapping[str, str],
    path: str | Path,
    *,
    key: str = "forgetting",
    phi: float | None = None,
    title: str = "Forgetting scores by group",
    xlabel: str = "forgetting score (relative NLL increase)",
) -> Path:
    """Overlaid density histograms of `row[key]` per group (`groups`: id -> group name)."""
    by_group: dict[str, list[float]] = {}
    for row in scores_rows:
        g = groups.get(str(row["id"]), "other")
        by_group.setdefault(g, []).append(float(row[key]))
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    values = [v for vs in by_group.values() for v in vs]
    bins = np.histogram_bin_edges(values, bins=40) if values else 10
    for g in _ordered_groups(by_group):
        vs = by_group[g]
        colour = GROUP_COLOURS.get(g, GROUP_COLOURS["other"])
        ax.hist(vs, bins=bins, density=True, histtype="stepfilled", alpha=0.25, color=colour)
        ax.hist(
            vs,
            bins=bins,
            density=True,
            histtype="step",
            lw=1.6,
            color=colour,
            label=f"{g} (n={len(vs)}, mean {np.mean(vs):.3g})",
        )
    if phi is not None and math.isfinite(phi):
        ax.axvline(phi, color="k", ls="--", lw=1.2, label=f"threshold phi = {phi:.3g}")
    ax.set(title=title, xlabel=xlabel, ylabel="density")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_group_curves(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    *,
    title: str,
    xlabel: str = "optimizer step",
    ylabel: str = "mean response NLL (nats/token)",
    vline: float | None = None,
    vline_label: str = "",
) -> Path:
    """Per-group mean score vs step (one line per group, markers at checkpoints)."""
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.subplots()
    for g in _ordered_groups(curves):
        pts = sorted(curves[g])
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, marker="o", ms=3.5, lw=1.8, label=g, color=GROUP_COLOURS.get(g))
    if vline is not None:
        ax.axvline(vline, color="k", ls=":", lw=1.2, label=vline_label or None)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_xy(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
    logx: bool = False,
    vlines: Mapping[str, float | None] | None = None,
) -> Path:
    """Line plot of named (x, y) series, e.g. filter F1 and AUROC vs an ablated setting.

    `vlines` draws labelled dashed vertical lines (e.g. the chosen threshold); None values are skipped.
    """
    fig = Figure(figsize=(6.5, 4.0))
    ax = fig.subplots()
    for name, pts in series.items():
        pts = sorted((x, y) for x, y in pts if y is not None)
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", lw=1.8, label=name)
    for k, (label, x) in enumerate((vlines or {}).items()):
        if x is not None and math.isfinite(x):
            ax.axvline(
                x, color="k", ls=("--", ":", "-.")[k % 3], lw=1.1, label=f"{label} = {x:.3g}"
            )
    if logx:
        ax.set_xscale("log")
    if ylim:
        ax.set_ylim(*ylim)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_bars(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    path: str | Path,
    *,
    label_key: str = "method",
    title: str = "",
    metric_labels: Mapping[str, str] | None = None,
    highlight: Sequence[str] = (),
) -> Path:
    """Grouped bar chart of a compare table: one panel per metric, one horizontal bar per row.

    Missing values (None) are drawn as an empty slot marked "n/a". Rows named in `highlight`
    are drawn in a strong colour.
    """
    metrics = [m for m in metrics if any(_num(r.get(m)) is not None for r in rows)]
    n = max(1, len(metrics))
    fig = Figure(figsize=(3.3 * n + 1.6, 0.36 * len(rows) + 1.6))
    axes = fig.subplots(1, n, sharey=True, squeeze=False)
    names = [str(r.get(label_key)) for r in rows]
    y = np.arange(len(rows))
    for ax, m in zip(axes[0], metrics, strict=False):
        vals = [_num(r.get(m)) for r in rows]
        colours = ["#d62728" if nm in highlight else "#4c72b0" for nm in names]
        ax.barh(y, [v if v is not None else 0 for v in vals], color=colours, alpha=0.85)
        for yi, v in zip(y, vals, strict=True):
            ax.text(
                0 if v is None else v,
                yi,
                " n/a" if v is None else f" {v:.3g}",
                va="center",
                fontsize=7,
            )
        ax.set_title((metric_labels or {}).get(m, m), fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.axvline(0, color="k", lw=0.6)
    axes[0][0].set_yticks(y, names, fontsize=8)
    axes[0][0].invert_yaxis()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ---------------------------------------------------------------- the demo's report
def demo_report(out: str | Path, results: Mapping[str, Mapping[str, Any]]) -> Path:
    """`forgetfilter demo`'s report.html: per risk the filter summary, the comparison table, a bar
    chart of it, and the forgetting histogram by group (read from `<out>/<risk>/run/scores.jsonl`
    and `<out>/<risk>/data/noisy.jsonl` when they exist).

    `results[risk]` holds `filter` (the run's summary.json), `table` (rows with a `method` key).
    """
    out = Path(out)
    sections = [_demo_section(out, risk, res) for risk, res in results.items()]
    return write_report(out, "ForgetFilter demo", sections, meta="forgetfilter demo")


def _demo_section(out: Path, risk: str, res: Mapping[str, Any]) -> Section:
    summary, rows = res.get("filter") or {}, list(res.get("table") or [])
    blocks: list[str | Table | Image] = [_filter_text(summary)]
    if rows:
        blocks.append(Table(rows, caption=f"{risk}: delivered models"))
        metrics = [k for k in rows[0] if k != "method"]
        png = plot_bars(rows, metrics, out / "plots" / f"demo_{risk}.png", title=f"{risk}: per-model metrics",
                        highlight=tuple(r["method"] for r in rows if "forgetfilter" in str(r["method"]).lower()))  # fmt: skip
        blocks.append(Image(png, "ForgetFilter in red"))
    scores, noisy = out / risk / "run" / "scores.jsonl", out / risk / "data" / "noisy.jsonl"
    if scores.exists() and noisy.exists():
        groups = {str(r["id"]): example_group(r) for r in io.read_jsonl(noisy)}
        phi = (summary.get("threshold") or {}).get("phi")
        score = SCORE_LABELS.get(summary.get("normalise"), "filter score")
        png = plot_forgetting_by_group(
            io.read_jsonl(scores), groups, out / "plots" / f"demo_{risk}_hist.png", phi=phi,
            title="Filter scores by group", xlabel=score,
        )  # fmt: skip
        blocks.append(Image(png, f"{score} of each noisy example by group; dashed: the chosen phi"))
    return Section(f"Risk: {risk}", blocks)


SCORE_LABELS = {
    "relative+learning": "filter score: mean rank of relative forgetting and learning over M0",
    "relative": "forgetting score (relative increase M1 -> M2)",
    "none": "forgetting score (increase M1 -> M2)",
    "relative+static": "filter score: mean rank of relative forgetting and low NLL under M1",
    "relative+surprise": "filter score: mean rank of relative forgetting and high NLL under M0",
}


def _filter_text(summary: Mapping[str, Any]) -> str:
    c, t = summary.get("counts") or {}, summary.get("threshold") or {}
    lines = [
        f"- removed {c.get('removed')} of {c.get('input')} examples; phi = {fmt(t.get('phi'))}: {t.get('reason', '')}"
    ]
    quality = summary.get("quality") or {}
    q = quality.get("forgetting") or {}
    if q:
        lines.append(f"- against the hidden labels: precision {fmt(q.get('precision'))}, recall {fmt(q.get('recall'))}, "
                     f"F1 {fmt(q.get('f1'))}, AUROC {fmt(q.get('auroc'))}")  # fmt: skip
        lines.append(f"- {baseline_text(quality)}")
    return "\n".join(lines)


BASELINE_RANKINGS = {
    "forgetting_relative": "forgetting alone (relative)",
    "learning": "learning vs M0 (1 - NLL_M1/NLL_M0)",
    "surprise": "M0's surprise (NLL under M0)",
    "static_baseline": "static (fit under M1: low NLL or high ROUGE)",
}


def baseline_text(quality: Mapping[str, Any]) -> str:
    """One line with the ranking AUROC of the label-free baselines present in `quality`."""
    parts = [
        f"{label} {fmt((quality.get(key) or {}).get('auroc'))}"
        for key, label in BASELINE_RANKINGS.items()
        if quality.get(key)
    ]
    return "ranking AUROC of its parts and baselines (no threshold): " + ", ".join(parts)
