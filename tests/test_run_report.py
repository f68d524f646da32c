"""The audit report of a run: report.html against summary.json, in a real browser, on an older
run directory; figures as PNG files; training metrics through TensorBoard."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import pytest
from test_pipeline import make_data, micro_config

from forgetfilter import io
from forgetfilter.cli import main
from forgetfilter.pipeline import run_forgetfilter
from forgetfilter.records import Example
from forgetfilter.report import fmt
from forgetfilter.thresholds import ThresholdConfig

HOSTILE = "<script>window.ffInjected = 1</script> & <b>not bold</b>"


@pytest.fixture(scope="module")
def run_dir(micro_model_dir, tmp_path_factory) -> Path:
    """One finished run: a trusted sample, curve points, TensorBoard metrics, and a removed
    example whose text is HTML."""
    tmp = tmp_path_factory.mktemp("report")
    noisy, safe = make_data(tmp)
    rows = io.read_jsonl(noisy)
    rows[0]["response"] = HOSTILE + " The woman."
    io.write_jsonl(noisy, rows)
    trusted = tmp / "trusted.jsonl"
    io.write_jsonl(
        trusted,
        [
            Example(
                f"k{i}", f"Question {i}: what colour is grass?", f"Grass is green {i}."
            ).to_dict()
            for i in range(20)
        ],
    )
    cfg = micro_config(
        str(micro_model_dir),
        safety_steps=4,
        curve_points=2,
        threshold=ThresholdConfig("fraction", fraction=0.25),
        neighbours=0,  # each example's own score, whose top quarter holds biased answers here
    )
    cfg.noisy_train.report_to = cfg.safety_train.report_to = "tensorboard"
    run_forgetfilter(noisy, safe, tmp / "run", cfg, trusted=trusted, progress=False)
    return tmp / "run"


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_the_report_says_what_summary_json_says(run_dir):
    page = _text(run_dir / "report.html")
    s = io.read_json(run_dir / "summary.json")
    c = s["counts"]
    assert f"Removed {c['removed']} of {c['input']} examples" in page
    assert f"phi = {fmt(s['threshold']['phi'])}" in page
    assert html.escape(s["threshold"]["reason"], quote=True) in page
    est = s["unsafe_share"]
    assert f"about {est['estimate']:.0%} ({est['low']:.0%}-{est['high']:.0%}" in page
    for source, v in c["by_source"].items():  # the per-source table, cell by cell
        row = re.search(rf"<tr><td>{re.escape(source)}</td><td>(\d+)</td><td>(\d+)</td>", page)
        assert row and (int(row[1]), int(row[2])) == (v["kept"], v["removed"]), source
    auroc = s["quality"]["forgetting"]["auroc"]
    assert f"<td>{fmt(auroc)}</td>" in page
    for stage, seconds in s["timings_s"].items():
        assert f"<td>{stage}</td><td>{fmt(seconds)}</td>" in page


def test_the_report_shows_the_texts_escaped_and_embeds_its_figures(run_dir):
    page = _text(run_dir / "report.html")
    assert HOSTILE not in page and html.escape(HOSTILE) in page  # shown as text, never run
    removed = io.read_jsonl(run_dir / "removed.jsonl")
    for r in removed:
        assert html.escape(str(r["id"])) in page
    for name in ("score_histogram", "learning_vs_forgetting", "forgetting_curves"):
        png = run_dir / "report" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert page.count("src='data:image/png;base64,") == 3
    assert "http://" not in page and "https://" not in page  # offline: nothing to fetch


def test_each_training_stage_logs_to_tensorboard(run_dir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for stage in ("m1", "m2", "final"):
        logdir = run_dir / stage / "tensorboard" / stage
        acc = EventAccumulator(str(logdir)).Reload()
        steps = [e.step for e in acc.Scalars("loss")]
        log = io.read_jsonl(run_dir / stage / "log.jsonl")
        assert steps == [row["step"] for row in log], stage
        assert {"loss", "lr", "tokens_per_s"} <= set(acc.Tags()["scalars"])


def test_report_command_on_a_run_written_before_the_report_existed(run_dir, tmp_path, capsys):
    """An older run directory: no report, no trusted sample, no curve, no line numbers, no filter
    name, no unsafe-share estimate."""
    old = tmp_path / "old"
    shutil.copytree(run_dir, old, ignore=shutil.ignore_patterns("report*", "curve", "trusted*"))
    for name in ("scores.jsonl", "kept.jsonl", "removed.jsonl"):
        rows = io.read_jsonl(old / name)
        io.write_jsonl(old / name, [{k: v for k, v in r.items() if k != "line"} for r in rows])
    summary = io.read_json(old / "summary.json")
    for key in ("unsafe_share", "trusted", "warning"):
        summary.pop(key, None)
    io.write_json(old / "summary.json", summary)
    config = io.read_json(old / "config.json")
    config["config"].pop("filter")
    io.write_json(old / "config.json", config)
    assert main(["report", str(old)]) == 0
    assert "report.html" in capsys.readouterr().out
    page = _text(old / "report.html")
    assert f"Removed {summary['counts']['removed']} of" in page
    assert (old / "report" / "score_histogram.png").exists()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no summary.json" in capsys.readouterr().err


def _browser():
    """A headless Chromium driven by chromedriver, or a skip naming what is missing."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')"
    )
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Chromium is absent: apt-get install chromium chromium-driver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,1600"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_a_person_sees_the_report_in_chromium(run_dir):
    browser = _browser()
    try:
        browser.get((run_dir / "report.html").resolve().as_uri())
        from selenium.webdriver.common.by import By

        body = browser.find_element(By.TAG_NAME, "body").text
        s = io.read_json(run_dir / "summary.json")
        assert f"Removed {s['counts']['removed']} of {s['counts']['input']} examples" in body
        assert HOSTILE in body  # the hostile text is shown as text
        assert browser.execute_script("return window.ffInjected === undefined")
        images = browser.find_elements(By.CSS_SELECTOR, "figure img")
        sizes = [browser.execute_script("return [arguments[0].naturalWidth, arguments[0].complete]", i) for i in images]  # fmt: skip
        assert len(images) == 3 and all(w > 100 and done for w, done in sizes)
        assert images[0].is_displayed() and images[0].size["height"] > 100
        source_rows = [
            tr.text for tr in browser.find_elements(By.XPATH, "//table[caption]//tbody/tr")
        ]
        for source, v in s["counts"]["by_source"].items():
            assert any(
                row.startswith(f"{source} {v['kept']} {v['removed']}") for row in source_rows
            )
        rows = browser.find_elements(By.CSS_SELECTOR, "#removed tbody tr")
        assert len(rows) == s["counts"]["removed"]
        texts = [r.get_attribute("textContent").lower() for r in rows]
        search = browser.find_element(By.ID, "search")
        search.send_keys("Woman")
        assert [r.is_displayed() for r in rows] == ["woman" in t for t in texts]
        assert any("woman" in t for t in texts)
        search.clear()
        search.send_keys("zzz-nothing-matches")
        assert not any(r.is_displayed() for r in rows)
    finally:
        browser.quit()


def test_at_scale_the_tables_cap_and_the_scatter_samples_saying_so(run_dir, tmp_path, monkeypatch):
    from forgetfilter import run_report

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    monkeypatch.setattr(run_report, "MAX_TABLE_ROWS", 3)
    monkeypatch.setattr(run_report, "MAX_POINTS", 5)
    run_report.write_run_report(copy)
    page = _text(copy / "report.html")
    n_removed = len(io.read_jsonl(copy / "removed.jsonl"))
    assert f"Showing the 3 highest-scoring of {n_removed} removed examples" in page
    assert page.count("<td class='txt'>") == 3
    _, n_points = run_report.plot_scatter(run_report.load_run(copy), tmp_path / "s.png")
    assert n_points == 5


def test_the_scatter_axes_follow_the_signal_kind():
    from forgetfilter.run_report import learning_and_forgetting

    rows = [{"before": 2.0, "after": 3.0, "m0": 4.0}, {"before": 1.0, "after": 1.0, "m0": 2.0}]
    x, y, xl, yl = learning_and_forgetting(rows, "nll")
    assert list(x) == [0.5, 0.5] and list(y) == [0.5, 0.0] and "NLL_M0" in xl and "NLL_M1" in yl
    x, y, xl, yl = learning_and_forgetting([{"before": 0.8, "after": 0.3}], "similarity")
    assert list(x) == [0.8] and list(y) == pytest.approx([0.5]) and "M1 - M2" in yl
