"""The demo's code path end to end at a reduced size (CI covers what `forgetfilter demo` runs)."""

import json

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


def test_demo_outputs_made_with_other_settings_are_redone(micro_model_dir, tmp_path, capsys):
    cfg = DemoConfig(risk="bias", n=40, n_safe=16, n_eval=8, model="tiny:micro", epochs=1)
    run_demo(tmp_path / "demo", cfg)
    (tmp_path / "demo" / "bias" / "stale-marker").write_text("x")
    changed = DemoConfig(risk="bias", n=40, n_safe=16, n_eval=8, model="tiny:micro", epochs=2)
    capsys.readouterr()
    out = run_demo(tmp_path / "demo", changed)
    assert "made with other settings: starting it again" in capsys.readouterr().out
    assert not (tmp_path / "demo" / "bias" / "stale-marker").exists()
    assert out["results"]["bias"]["config"]["epochs"] == 2


def test_demo_outputs_without_a_fingerprint_are_redone(tmp_path, capsys):
    from forgetfilter.demo import _discard_if_changed

    old = tmp_path / "bias"
    (old / "run").mkdir(parents=True)
    (old / "results.json").write_text("{}")  # an older version's outputs: no fingerprint
    _discard_if_changed(old, {"demo": {"n": 1}})
    assert "starting it again" in capsys.readouterr().out
    assert not (old / "results.json").exists()
    assert json.loads((old / "demo_fingerprint.json").read_text()) == {"demo": {"n": 1}}
    _discard_if_changed(old, {"demo": {"n": 1}})  # same settings: kept, nothing printed
    assert capsys.readouterr().out == "" and (old / "demo_fingerprint.json").exists()
