"""The demo's code path end to end at a reduced size (CI covers what `forgetfilter demo` runs)."""

import dataclasses
import json

import pytest

from forgetfilter.demo import DemoConfig, run_demo


def test_demo_runs_end_to_end_and_resumes(micro_model_dir, tmp_path, capsys):
    cfg = DemoConfig(risk="bias", n=40, n_safe=16, n_eval=8, model="tiny:micro", epochs=1)
    out = run_demo(tmp_path / "demo", cfg)
    printed = capsys.readouterr().out
    assert "ForgetFilter removed" in printed and "report:" in printed
    html = (tmp_path / "demo" / "report.html").read_text()
    assert "learning vs M0" in printed and "learning vs M0" in html
    assert "<table" in html and "data:image/png;base64" in html
    result = json.loads((tmp_path / "demo" / "bias" / "results.json").read_text())
    methods = [row["method"] for row in result["table"]]
    assert methods == ["no safety measure", "sequential safety finetuning", "ForgetFilter"]
    assert all(row["squad_f1"] is not None and row["s_amb"] is not None for row in result["table"])
    assert result["filter"]["counts"]["input"] == 40
    again = run_demo(tmp_path / "demo", cfg)
    assert again["results"]["bias"]["table"] == out["results"]["bias"]["table"]


def test_demo_outputs_made_with_other_settings_are_refused_unless_forced(micro_model_dir, tmp_path):
    from forgetfilter.errors import ConfigError

    cfg = DemoConfig(risk="bias", n=40, n_safe=16, n_eval=8, model="tiny:micro", epochs=1)
    run_demo(tmp_path / "demo", cfg)
    (tmp_path / "demo" / "bias" / "stale-marker").write_text("x")
    changed = dataclasses.replace(cfg, epochs=2)
    with pytest.raises(ConfigError, match=r"another configuration \(changed: demo.epochs, run"):
        run_demo(tmp_path / "demo", changed)
    assert (tmp_path / "demo" / "bias" / "stale-marker").exists()  # nothing was touched
    out = run_demo(tmp_path / "demo", changed, force=True)
    assert not (tmp_path / "demo" / "bias" / "stale-marker").exists()
    assert out["results"]["bias"]["config"]["epochs"] == 2


def test_demo_outputs_without_a_fingerprint_are_refused_unless_forced(tmp_path):
    from forgetfilter.demo import claim
    from forgetfilter.errors import ConfigError

    old = tmp_path / "bias"
    (old / "run").mkdir(parents=True)
    (old / "results.json").write_text("{}")  # an older version's outputs: no fingerprint
    with pytest.raises(ConfigError, match="recorded no configuration"):
        claim(old, {"demo": {"n": 1}}, force=False)
    assert (old / "results.json").exists()
    claim(old, {"demo": {"n": 1}}, force=True)
    assert not (old / "results.json").exists()
    assert json.loads((old / "demo_fingerprint.json").read_text()) == {"demo": {"n": 1}}
    claim(old, {"demo": {"n": 1}}, force=False)  # same settings: kept
    assert (old / "demo_fingerprint.json").exists()


def test_the_cli_passes_force_to_the_demo(monkeypatch):
    import forgetfilter.demo as demo
    from forgetfilter.cli import main

    seen = {}
    monkeypatch.setattr(demo, "run_demo", lambda out, cfg, force: seen.update(force=force))
    assert main(["demo", "--out", "x", "--force"]) == 0 and seen == {"force": True}
