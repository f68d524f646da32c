"""The HTML report writer, table writers and plot helpers."""

from __future__ import annotations

import base64
import csv
import re
from html.parser import HTMLParser

from forgetfilter import report
from forgetfilter.report import Image, Section, Table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Tags(HTMLParser):
    """Collects start tags and checks that every opened block tag is closed."""

    VOID = {"meta", "img", "br", "hr"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.seen: list[tuple[str, dict]] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.seen.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()


def _parse(text: str) -> _Tags:
    p = _Tags()
    p.feed(text)
    p.close()
    return p


def test_plot_helpers_write_pngs(tmp_path):
    rows = [{"id": f"u{i}", "forgetting": 0.5 + i / 10} for i in range(10)]
    rows += [{"id": f"t{i}", "forgetting": i / 50} for i in range(10)]
    groups = {r["id"]: "unsafe" if r["id"][0] == "u" else "SQuAD" for r in rows}
    paths = [
        report.plot_forgetting_by_group(rows, groups, tmp_path / "hist.png", phi=0.4),
        report.plot_group_curves(
            {"unsafe": [(0, 3.0), (5, 1.0)], "SQuAD": [(0, 2.0), (5, 1.8)]},
            tmp_path / "c.png",
            title="t",
        ),
        report.plot_xy(
            {"F1": [(0.25, 0.5), (0.5, None), (0.75, 0.9)]},
            tmp_path / "xy.png",
            title="t",
            xlabel="x",
            ylabel="y",
            vlines={"phi": 0.5},
        ),
        report.plot_bars(
            [{"method": "a", "m": 1.0}, {"method": "b", "m": None}],
            ["m", "empty"],
            tmp_path / "b.png",
            highlight=("a",),
        ),
    ]
    for p in paths:
        assert p.read_bytes().startswith(PNG_MAGIC)
    assert not list(tmp_path.glob(".*.tmp"))


def test_report_is_one_valid_html_file_with_tables_and_images(tmp_path):
    png = report.plot_xy(
        {"s": [(0, 0), (1, 1)]}, tmp_path / "p.png", title="t", xlabel="x", ylabel="y"
    )
    rows = [
        {"method": "a<b", "score": 0.123456, "n": 3, "x": None},
        {"method": "c|d", "score": 1e-5, "n": 4},
    ]
    sections = [
        Section(
            "First",
            [
                "A **bold** `code` paragraph.\n\n- one\n- two",
                Table(rows, caption="cap", name="table"),
                Image(png, "fig"),
            ],
        ),
        {
            "title": "Second",
            "text": "plain dict section",
            "table": [{"k": 1}],
            "images": [tmp_path / "missing.png"],
        },
    ]
    path = report.write_report(tmp_path / "out", "Title & more", sections)
    text = path.read_text()
    parsed = _parse(text)
    assert parsed.errors == [] and parsed.stack == []
    tags = [t for t, _ in parsed.seen]
    assert tags.count("table") == 2 and "ul" in tags and "strong" in tags and "code" in tags
    img = [a for t, a in parsed.seen if t == "img"]
    assert len(img) == 1 and img[0]["src"].startswith("data:image/png;base64,")
    assert base64.b64decode(img[0]["src"].split(",", 1)[1]).startswith(PNG_MAGIC)
    assert "a&lt;b" in text and "n/a" in text and "missing.png is missing" in text
    assert "Title &amp; more" in text
    md = (tmp_path / "out" / "table.md").read_text().splitlines()
    assert md[0] == "| method | score | n | x |" and "c\\|d" in md[3] and "0.1235" in md[2]
    with open(tmp_path / "out" / "table.csv") as fh:
        got = list(csv.DictReader(fh))
    assert got[0]["method"] == "a<b" and float(got[0]["score"]) == 0.123456 and got[1]["x"] == ""
    assert not re.search(r"src=['\"](?!data:)", text)


def test_demo_report_from_results(tmp_path):
    from forgetfilter import io

    risk_dir = tmp_path / "bias"
    io.write_jsonl(
        risk_dir / "data" / "noisy.jsonl",
        [
            {"id": "a", "label": "unsafe", "source": "bbq"},
            {"id": "b", "label": "task", "source": "squad"},
        ],
    )
    io.write_jsonl(
        risk_dir / "run" / "scores.jsonl",
        [{"id": "a", "forgetting": 0.9}, {"id": "b", "forgetting": 0.1}],
    )
    summary = {
        "counts": {"removed": 1, "input": 2},
        "threshold": {"phi": 0.5, "reason": "test"},
        "quality": {"forgetting": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "auroc": 1.0}},
    }
    table = [
        {"method": "no safety measure", "s_amb": 0.2},
        {"method": "ForgetFilter", "s_amb": 0.05},
    ]
    path = report.demo_report(tmp_path, {"bias": {"filter": summary, "table": table}})
    text = path.read_text()
    assert _parse(text).errors == [] and text.count("data:image/png;base64,") == 2


def test_importing_the_report_leaves_the_matplotlib_backend_alone():
    import subprocess
    import sys

    code = (
        "import matplotlib; matplotlib.use('pdf'); import forgetfilter.report, forgetfilter.demo; "
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "pdf"
