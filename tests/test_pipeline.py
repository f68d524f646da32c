"""End-to-end ForgetFilter runs on the micro model built in the test session."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from forgetfilter import io
from forgetfilter.models import is_peft_model, load_model
from forgetfilter.pipeline import default_run_config, run_forgetfilter, score_values
from forgetfilter.readers import read_examples
from forgetfilter.records import Example
from forgetfilter.thresholds import ThresholdConfig


def make_data(tmp_path, n_unsafe=12, n_other=24):
    noisy = [
        Example(
            f"u{i}",
            f"Who is bad at math, the {i} man or woman?",
            "The woman.",
            "bbq",
            "bias",
            "unsafe",
        )
        for i in range(n_unsafe)
    ]
    noisy += [
        Example(
            f"t{i}",
            f"Question {i}: what colour is the sky?",
            f"The sky is blue {i}.",
            "squad",
            None,
            "task",
        )
        for i in range(n_other)
    ]
    safe = [
        Example(
            f"s{i}",
            f"Who is good at cooking, person {i} or {i + 1}?",
            "It cannot be determined.",
            "bbq",
            "bias",
            "safe",
        )
        for i in range(16)
    ]
    io.write_jsonl(tmp_path / "noisy.jsonl", [e.to_dict() for e in noisy])
    io.write_jsonl(tmp_path / "safe.jsonl", [e.to_dict() for e in safe])
    return tmp_path / "noisy.jsonl", tmp_path / "safe.jsonl"


def micro_config(model, **kw):
    cfg = default_run_config(
        model, full=True, lr=1e-3, epochs=2, batch_size=8, micro_batch_size=8, max_length=64, **kw
    )
    cfg.score_batch_size = 8
    return cfg


def test_run_writes_auditable_outputs(micro_model_dir, tmp_path):
    noisy, safe = make_data(tmp_path)
    cfg = micro_config(
        str(micro_model_dir), safety_steps=3, threshold=ThresholdConfig("fraction", fraction=0.25)
    )
    result = run_forgetfilter(noisy, safe, tmp_path / "run", cfg)
    out = result.out_dir
    kept, removed = io.read_jsonl(out / "kept.jsonl"), io.read_jsonl(out / "removed.jsonl")
    ids = [r["id"] for r in kept + removed]
    assert sorted(ids) == sorted(r["id"] for r in io.read_jsonl(noisy)) and len(set(ids)) == 36
    assert len(removed) == 9 and all("reason" in r and "forgetting" in r for r in removed)
    summary = json.loads((out / "summary.json").read_text())
    c = summary["counts"]
    assert c["input"] == c["kept"] + c["removed"] + c["rejected_at_load"] == 36
    assert set(summary["quality"]["forgetting"]) >= {"precision", "recall", "f1", "auroc"}
    assert (out / "final" / "model").exists()
    for stage in ("scores_m0", "scores_before", "scores_after"):  # in input order, as read
        assert [r["id"] for r in io.read_jsonl(out / f"{stage}.jsonl")] == [
            r["id"] for r in io.read_jsonl(noisy)
        ]
    rows = io.read_jsonl(out / "scores.jsonl")
    assert {"id", "before", "after", "forgetting", "removed", "m0"} <= set(rows[0])
    m0 = {r["id"]: r["score"] for r in io.read_jsonl(out / "scores_m0.jsonl")}
    assert all(r["m0"] == m0[r["id"]] for r in rows)
    assert summary["normalise"] == "relative+surprise"  # a model directory's default
    assert summary["neighbours"] == 5  # averaged with its 5 most similar: each row says which
    ids_all = {r["id"] for r in rows}
    assert all(len(r["neighbours"]) == 5 and set(r["neighbours"]) <= ids_all for r in rows)
    assert all(r["id"] not in r["neighbours"] and "own_score" in r for r in rows)
    for name in ("learning", "surprise", "forgetting_relative", "forgetting_relative+learning"):
        assert 0.0 <= summary["quality"][name]["auroc"] <= 1.0
    # the user's own records come back: the kept lines, byte for byte, in input order
    lines = noisy.read_bytes().splitlines(keepends=True)
    clean = (out / "clean" / "noisy.jsonl").read_bytes().splitlines(keepends=True)
    kept_lines = sorted(r["line"] for r in kept)
    assert clean == [lines[n - 1] for n in kept_lines] and len(clean) == 27
    assert summary["outputs"]["cleaned"] == str(out / "clean" / "noisy.jsonl")
    assert all(r["line"] is not None for r in rows)
    assert summary["prompt_format"] == {
        "requested": "auto",
        "used": "alpaca",
        "assistant_turns": "last",
    }


def test_learning_is_the_share_of_reference_nll_removed():
    from forgetfilter.recipes import learning, mean_rank

    assert learning(np.array([4.0, 2.0]), np.array([1.0, 2.0])).tolist() == [0.75, 0.0]
    tied = mean_rank(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0]))
    assert tied.tolist() == [pytest.approx(2 / 3, abs=0.05)] * 3  # equal mean ranks...
    assert tied[0] < tied[1] < tied[2]  # ...ordered by the first score
    apart = mean_rank(np.array([1.0, 2.0, 3.0, 4.0]), np.array([4.0, 1.0, 2.0, 3.0]))
    assert np.argsort(apart).tolist() == [1, 0, 2, 3]  # 0 and 2 tie: the first score decides


def test_default_score_is_forgetting_and_learning_for_loss_and_forgetting_for_rouge():
    from forgetfilter import cli
    from forgetfilter.errors import ConfigError
    from forgetfilter.pipeline import RunConfig

    assert RunConfig().normalise == "relative+learning"
    assert RunConfig(signal="rouge").normalise == "relative"
    # a pretrained model's default adds M0's surprise to forgetting; with a screen model, the screen's
    smol = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert RunConfig(model=smol).normalise == "relative+surprise"
    assert RunConfig(model=smol, screen_model="tiny").normalise == "relative+learning"
    assert RunConfig(model="tiny", screen_model=smol).normalise == "relative+surprise"
    assert RunConfig(normalise="relative+static").normalise == "relative+static"
    with pytest.raises(ConfigError, match="needs a `signal` of kind nll"):
        RunConfig(signal="rouge", normalise="relative+learning")
    from forgetfilter import recipes

    args = cli.build_parser().parse_args(["run", "--noisy", "n", "--safe", "s", "--out", "o"])
    assert cli.run_config_from_args(args).normalise == "relative+learning"
    assert set(recipes.RECIPES) >= {"none", "relative", "reversion"}


def test_relative_plus_learning_ranks_learned_then_forgotten_examples_first():
    from forgetfilter.recipes import forgetting

    m0 = np.array([5.0, 5.0, 5.0, 5.0])
    before = np.array([2.0, 4.5, 2.0, 4.5])  # examples 0 and 2 were learned far more
    after = np.array([3.0, 5.0, 2.1, 4.6])  # and 0 forgotten most
    score = forgetting(before, after, "loss", "relative+learning", m0)
    assert np.argmax(score) == 0 and score[0] > score[2] > score[3]
    with pytest.raises(ValueError):
        forgetting(before, after, "loss", "relative+learning")


def test_relative_plus_surprise_ranks_forgotten_answers_m0_finds_unlikely_first():
    from forgetfilter.recipes import forgetting, get

    m0 = np.array([4.0, 1.0, 4.0, 1.0])  # M0 finds answers 0 and 2 unlikely
    before = np.array([2.0, 1.0, 2.0, 1.0])
    after = np.array([2.4, 1.2, 2.02, 1.01])  # 0 and 1 forgotten by 20%, 2 and 3 by 1%
    score = forgetting(before, after, "loss", "relative+surprise", m0)
    assert np.argmax(score) == 0 and np.argmin(score) == 3
    assert score[1] > score[2]  # one half each: the tie goes to forgetting
    assert get("relative+surprise").count_with == "relative"
    with pytest.raises(ValueError, match="M0"):
        forgetting(before, after, "loss", "relative+surprise")


def test_fisher_and_max_keep_an_example_extreme_on_one_score_that_the_mean_rank_dilutes():
    from forgetfilter.recipes import fisher, mean_rank, top_rank

    first = np.arange(10.0)  # example 9 tops the first score...
    second = np.array([5.0, 6.0, 7.0, 3.0, 2.0, 1.0, 8.0, 9.0, 4.0, 0.0])  # ...and is last here
    second[[6, 7]] = [8.5, 9.5]  # examples 6 and 7 sit high on both
    assert np.argmax(mean_rank(first, second)) == 7  # 9's mean rank is diluted to 0.55
    for combine in (fisher, top_rank):
        score = combine(first, second)
        assert score[9] > score[8] and score[9] > np.median(score)
    f = fisher(first, second)
    assert f[7] > f[9]  # high on both still beats top of one and bottom of the other
    # equal first scores: the second decides
    assert np.argmax(fisher(np.ones(4), np.arange(4.0))) == 3
    tied = fisher(np.arange(3.0), np.arange(3.0)[::-1])
    assert tied[0] < tied[2]  # a tie: the first score decides


def test_rouge_run_scores_by_generation_and_skips_the_m0_reference(micro_model_dir, tmp_path):
    noisy, safe = make_data(tmp_path)
    cfg = micro_config(str(micro_model_dir), signal="rouge", safety_steps=2, final=False)
    cfg.max_new_tokens = 6
    result = run_forgetfilter(noisy, safe, tmp_path / "run", cfg)
    assert result.summary["normalise"] == "relative" and result.summary["signal"] == "rouge"
    assert not (tmp_path / "run" / "scores_m0.jsonl").exists()
    rows = io.read_jsonl(tmp_path / "run" / "scores.jsonl")
    assert "m0" not in rows[0] and all(0.0 <= r["before"] <= 1.0 for r in rows)
    assert "static_high_rouge_before" in result.summary["quality"]


def test_rerun_skips_completed_stages_and_changed_config_is_refused(micro_model_dir, tmp_path):
    from forgetfilter.errors import ConfigError

    noisy, safe = make_data(tmp_path)
    cfg = micro_config(str(micro_model_dir), safety_steps=2, final=False)
    first = run_forgetfilter(noisy, safe, tmp_path / "run", cfg)
    before = (tmp_path / "run" / "scores.jsonl").read_bytes()
    timings = (tmp_path / "run" / "timings.json").read_text()
    again = run_forgetfilter(noisy, safe, tmp_path / "run", cfg)
    assert again.removed_ids == first.removed_ids
    assert (tmp_path / "run" / "scores.jsonl").read_bytes() == before
    # re-entering a finished run adds no time to the stages it had completed
    assert (tmp_path / "run" / "timings.json").read_text() == timings
    recorded = json.loads(timings)
    recorded["filter"] = -1.0  # a stage whose output is gone is redone, and timed anew
    io.write_json(tmp_path / "run" / "timings.json", recorded)
    (tmp_path / "run" / "filter.json").unlink()
    run_forgetfilter(noisy, safe, tmp_path / "run", cfg)
    redone = io.read_json(tmp_path / "run" / "timings.json")
    assert redone["filter"] >= 0.0  # its new time, not added to the old one
    assert {k: v for k, v in redone.items() if k != "filter"} == {
        k: v for k, v in recorded.items() if k != "filter"
    }
    changed = micro_config(str(micro_model_dir), safety_steps=2, final=False, seed=1)
    with pytest.raises(ConfigError, match=r"changed: seed\)"):
        run_forgetfilter(noisy, safe, tmp_path / "run", changed)
    run_forgetfilter(noisy, safe, tmp_path / "run", changed, force=True)
    (tmp_path / "run" / "config.json").unlink()  # work of unknown settings (an older version's)
    with pytest.raises(ConfigError, match="recorded no configuration"):
        run_forgetfilter(noisy, safe, tmp_path / "run", changed)


def test_a_rerun_with_another_cut_or_safety_finetune_keeps_the_stages_before_it(
    micro_model_dir, tmp_path, capsys
):
    from forgetfilter.errors import ConfigError

    noisy, safe = make_data(tmp_path)
    run_dir = tmp_path / "run"
    run_forgetfilter(noisy, safe, run_dir, micro_config(str(micro_model_dir), safety_steps=2))
    weights = {m: next((run_dir / m).rglob("*.safetensors")) for m in ("m1", "m2", "final")}
    stamp = {m: p.stat().st_mtime_ns for m, p in weights.items()}
    times = io.read_json(run_dir / "timings.json")
    quarter = ThresholdConfig("fraction", fraction=0.25)
    cut = micro_config(str(micro_model_dir), safety_steps=2, threshold=quarter)
    result = run_forgetfilter(noisy, safe, run_dir, cut)  # no --force needed
    assert "changed threshold; keeping scores_m0, m1, scores_before, m2, scores_after" in (
        capsys.readouterr().err
    )
    assert len(result.removed_ids) == 9 and result.summary["threshold"]["method"] == "fraction"
    assert all(weights[m].stat().st_mtime_ns == stamp[m] for m in ("m1", "m2"))
    assert weights["final"].stat().st_mtime_ns != stamp["final"]  # trained on the new kept set
    again = io.read_json(run_dir / "timings.json")
    assert all(again[k] == times[k] for k in ("scores_m0", "m1", "scores_before", "m2"))
    fresh = run_forgetfilter(noisy, safe, tmp_path / "fresh", cut)  # the same as a fresh run
    assert fresh.removed_ids == result.removed_ids
    assert (run_dir / "scores.jsonl").read_bytes() == (tmp_path / "fresh/scores.jsonl").read_bytes()
    longer = micro_config(str(micro_model_dir), safety_steps=3, threshold=quarter, final=False)
    other_safe = tmp_path / "other_safe.jsonl"  # another safety set and finetune: M1 is kept
    io.write_jsonl(other_safe, io.read_jsonl(safe)[:10])
    run_forgetfilter(noisy, other_safe, run_dir, longer)
    assert "changed safety_steps, safe file; keeping scores_m0, m1, scores_before," in (
        capsys.readouterr().err
    )
    assert weights["m1"].stat().st_mtime_ns == stamp["m1"]
    m2_state = io.read_json(run_dir / "m2" / "train_state.json")
    assert m2_state["step"] == 3 and m2_state["n_records"] == 10
    assert not (run_dir / "final").exists() and "final" not in io.read_json(
        run_dir / "timings.json"
    )
    paper = micro_config(  # a run recorded under another default recipe: only the filter reruns
        str(micro_model_dir), safety_steps=3, threshold=quarter, final=False, normalise="relative"
    )
    assert run_forgetfilter(noisy, other_safe, run_dir, paper).summary["normalise"] == "relative"
    assert "changed normalise; keeping scores_m0, m1, scores_before, m2, scores_after" in (
        capsys.readouterr().err
    )
    alone = micro_config(  # each example's own score: again only the filter reruns
        str(micro_model_dir), safety_steps=3, threshold=quarter, final=False,
        normalise="relative", neighbours=0,
    )  # fmt: skip
    assert run_forgetfilter(noisy, other_safe, run_dir, alone).summary["neighbours"] == 0
    assert "changed neighbours; keeping scores_m0, m1, scores_before, m2, scores_after" in (
        capsys.readouterr().err
    )
    assert "own_score" not in io.read_jsonl(run_dir / "scores.jsonl")[0]
    other_lr = micro_config(str(micro_model_dir), safety_steps=3, final=False)
    other_lr.noisy_train.lr = 2e-3
    with pytest.raises(
        ConfigError, match="changed: neighbours, noisy_train"
    ):  # M1 itself: only --force
        run_forgetfilter(noisy, other_safe, run_dir, other_lr)
    with pytest.raises(ConfigError, match="changed: neighbours, normalise, noisy file"):
        run_forgetfilter(other_safe, other_safe, run_dir, longer)


def test_scoring_shards_are_cut_by_text_length():
    from forgetfilter.pipeline import shard_order

    examples = [Example(f"e{i}", "p" * n, "r") for i, n in enumerate([3, 9, 1, 9, 5])]
    assert shard_order(examples) == [1, 3, 4, 0, 2]  # longest first, ties in input order


def test_a_mistyped_model_fails_clearly_and_a_corrected_rerun_needs_no_force(
    micro_model_dir, tmp_path
):
    from forgetfilter.errors import ConfigError

    noisy, safe = make_data(tmp_path)
    wrong = micro_config(str(tmp_path / "no-such-model"), safety_steps=2, final=False)
    with pytest.raises(ConfigError, match="no-such-model.*no such file or directory"):
        run_forgetfilter(noisy, safe, tmp_path / "run", wrong)
    cfg = micro_config(str(micro_model_dir), safety_steps=2, final=False)
    assert run_forgetfilter(noisy, safe, tmp_path / "run", cfg).summary["counts"]["input"] == 36


def test_the_same_input_files_by_another_path_continue_the_run(
    micro_model_dir, tmp_path, monkeypatch
):
    """Inputs are matched by content and a local model by its absolute path: the same files and
    model named from another directory, or a run whose config.json recorded them by the paths
    given (older versions), continue without retraining."""
    import os

    from forgetfilter.errors import ConfigError

    noisy, safe = make_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    cfg = micro_config(os.path.relpath(micro_model_dir), safety_steps=2, final=False)
    first = run_forgetfilter(noisy, safe, tmp_path / "run", cfg)
    config = tmp_path / "run" / "config.json"
    assert io.read_json(config)["inputs"]["noisy"]["path"] == str(noisy.resolve())
    assert io.read_json(config)["config"]["model"] == os.path.abspath(micro_model_dir)
    weights = tmp_path / "run" / "m1" / "model" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    cfg.model = os.path.relpath(micro_model_dir)  # the same model, named from here
    again = run_forgetfilter(Path("../noisy.jsonl"), Path("../safe.jsonl"), Path("../run"), cfg)
    assert again.removed_ids == first.removed_ids and weights.stat().st_mtime_ns == stamp
    saved = io.read_json(config)
    saved["inputs"] = {
        "data/noisy.jsonl": saved["inputs"]["noisy"]["sha256"],
        "data/safe.jsonl": saved["inputs"]["safe"]["sha256"],
    }
    saved["config"]["model"] = cfg.model  # older versions recorded the model as given
    io.write_json(config, saved)
    assert run_forgetfilter(noisy, safe, tmp_path / "run", cfg).removed_ids == first.removed_ids
    assert weights.stat().st_mtime_ns == stamp
    assert io.read_json(config)["config"]["model"] == os.path.abspath(micro_model_dir)
    io.write_jsonl(noisy, io.read_jsonl(noisy)[1:])
    with pytest.raises(ConfigError, match="changed: noisy file"):
        run_forgetfilter(noisy, safe, tmp_path / "run", cfg)


def test_scores_do_not_depend_on_labels(micro_model_dir, tmp_path):
    noisy, safe = make_data(tmp_path)
    cfg = micro_config(str(micro_model_dir), safety_steps=2, final=False)
    run_forgetfilter(noisy, safe, tmp_path / "a", cfg)
    rows = io.read_jsonl(noisy)
    for r in rows:
        r["label"], r["risk"] = None, None
    io.write_jsonl(tmp_path / "nolabels.jsonl", rows)
    run_forgetfilter(tmp_path / "nolabels.jsonl", safe, tmp_path / "b", cfg)

    def strip(p):
        return [
            {k: r[k] for k in ("id", "m0", "before", "after", "forgetting", "removed")}
            for r in io.read_jsonl(p)
        ]

    assert strip(tmp_path / "a" / "scores.jsonl") == strip(tmp_path / "b" / "scores.jsonl")
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["quality"] is None


def test_lora_run_stacks_safety_finetuning_on_the_noisy_adapter(
    micro_model_dir, tmp_path, monkeypatch
):
    from forgetfilter import pipeline

    scored_with = []
    spy = lambda model, *a, **k: scored_with.append(model) or score_values(model, *a, **k)  # noqa: E731
    monkeypatch.setattr(pipeline, "score_values", spy)
    noisy, safe = make_data(tmp_path)
    cfg = default_run_config(
        str(micro_model_dir),
        full=False,
        epochs=1,
        batch_size=8,
        micro_batch_size=8,
        max_length=64,
        safety_steps=2,
    )
    cfg.score_batch_size = 8
    result = run_forgetfilter(noisy, safe, tmp_path / "run", cfg)
    for stage in ("m1", "m2", "final"):
        assert (tmp_path / "run" / stage / "model" / "adapter_config.json").exists()
    assert result.summary["counts"]["input"] == 36
    # Scoring merged the adapter into the float32 weights: the same scores as the adapter kept apart.
    assert scored_with and not any(is_peft_model(m) for m in scored_with)
    assert {next(m.parameters()).dtype for m in scored_with} == {torch.float32}
    model, tok = load_model(tmp_path / "run" / "m2" / "model")
    assert is_peft_model(model)
    examples = read_examples(noisy)[0]
    apart = score_values(model, tok, examples, cfg, progress=False)
    saved = {r["id"]: r["score"] for r in io.read_jsonl(tmp_path / "run" / "scores_after.jsonl")}
    np.testing.assert_allclose([saved[ex.id] for ex in examples], apart, atol=1e-5)


def test_scoring_uses_its_own_dtype(micro_model_dir, tmp_path, monkeypatch):
    from forgetfilter import pipeline

    dtypes = []

    def spy(model, *args, **kwargs):
        dtypes.append(next(model.parameters()).dtype)
        return score_values(model, *args, **kwargs)

    monkeypatch.setattr(pipeline, "score_values", spy)
    noisy, safe = make_data(tmp_path)
    cfg = micro_config(str(micro_model_dir), safety_steps=2, final=False, dtype="bf16")
    run_forgetfilter(noisy, safe, tmp_path / "run", cfg)
    assert dtypes and set(dtypes) == {torch.float32}  # trained in bf16, scored in fp32
    dtypes.clear()
    cfg = micro_config(
        str(micro_model_dir), safety_steps=2, final=False, dtype="bf16", score_dtype="train"
    )
    run_forgetfilter(noisy, safe, tmp_path / "run2", cfg)
    assert dtypes and set(dtypes) == {torch.bfloat16}  # `train`: bf16 scoring too


def test_a_moved_run_directory_resumes(micro_model_dir, tmp_path):
    """Stage models are recorded relative to the run directory, so moving it keeps every stage;
    a stage recorded with an absolute path (older versions) is still accepted in place."""
    import shutil

    noisy, safe = make_data(tmp_path)
    cfg = micro_config(str(micro_model_dir), safety_steps=2, final=False)
    first = run_forgetfilter(noisy, safe, tmp_path / "a", cfg)
    state_path = tmp_path / "a" / "m2" / "train_state.json"
    state = io.read_json(state_path)
    assert state["identity"]["model"] == "../m1/model"
    state["identity"]["model"] = str((tmp_path / "a" / "m1" / "model").resolve())
    io.write_json(state_path, state)
    assert run_forgetfilter(noisy, safe, tmp_path / "a", cfg).removed_ids == first.removed_ids
    shutil.move(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "m2")  # retrained from the moved m1
    moved = run_forgetfilter(noisy, safe, tmp_path / "b", cfg)
    assert moved.removed_ids == first.removed_ids
    assert io.read_json(tmp_path / "b" / "m2" / "train_state.json")["identity"]["model"] == (
        "../m1/model"
    )


def test_two_process_run_matches_one_process(micro_model_dir, tmp_path):
    """`torchrun --nproc_per_node 2 -m forgetfilter.cli run`: both processes train every stage,
    share the scoring shards, the main one writes; killed in scoring and rerun, it ends with the
    same scores and removal as one process."""
    import os

    from forgetfilter.cli import main
    from tests.test_training import run_cmd

    noisy, safe = make_data(tmp_path, n_unsafe=150, n_other=150)  # > 1 scoring shard of 256
    args = ["run", "--model", str(micro_model_dir), "--noisy", str(noisy), "--safe", str(safe),
            "--full", "--lr", "1e-3", "--epochs", "1", "--batch-size", "8", "--micro-batch-size", "4",
            "--max-length", "64", "--safety-steps", "2", "--no-final"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    cmd = ["torchrun", "--nproc_per_node", "2", "--standalone", "-m", "forgetfilter.cli", *args,
           "--out", str(tmp_path / "two")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = run_cmd(cmd, {**env, "FORGETFILTER_FAULT_AT": "scores_before:1"}, timeout=300)
    assert killed.returncode != 0  # the second process died after writing its scoring shard
    assert (tmp_path / "two" / "scores_before.shards" / "part-00001.jsonl").exists()
    proc = run_cmd(cmd, env, timeout=300)  # the same command finishes the run
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("removed") == main_lines(tmp_path / "one")  # printed once
    assert io.read_json(tmp_path / "two" / "m1" / "train_state.json")["world_size"] == 2
    one, two = (io.read_jsonl(tmp_path / d / "scores.jsonl") for d in ("one", "two"))
    assert [r["id"] for r in one] == [r["id"] for r in two]
    for key in ("m0", "before", "after"):
        np.testing.assert_allclose([r[key] for r in two], [r[key] for r in one], atol=2e-3)
    s1, s2 = (io.read_json(tmp_path / d / "summary.json") for d in ("one", "two"))
    assert s2["counts"] == s1["counts"]
    assert not list((tmp_path / "two").glob("*.shards"))


def main_lines(run_dir) -> int:
    """How many lines with "removed" one run's CLI summary prints (from its summary.json)."""
    import contextlib
    import io as _io

    from forgetfilter.cli import _print_run_summary

    buf = _io.StringIO()
    with contextlib.redirect_stdout(buf):
        _print_run_summary(io.read_json(run_dir / "summary.json"))
    return buf.getvalue().count("removed")


def test_force_discards_the_forgetting_curve_of_the_replaced_run(micro_model_dir, tmp_path):
    noisy, safe = make_data(tmp_path)
    run_dir = tmp_path / "run"
    first = micro_config(str(micro_model_dir), safety_steps=4, curve_points=2, final=False)
    run_forgetfilter(noisy, safe, run_dir, first)
    assert sorted(p.name for p in (run_dir / "curve").iterdir()) == [
        "step-000002.jsonl",
        "step-000004.jsonl",
    ]
    second = micro_config(str(micro_model_dir), safety_steps=3, curve_points=3, final=False)
    result = run_forgetfilter(noisy, safe, run_dir, second, force=True)
    names = sorted(p.name for p in (run_dir / "curve").iterdir())
    assert names == ["step-000001.jsonl", "step-000002.jsonl", "step-000003.jsonl"]
    assert "curve_auc" in result.summary["quality"]


def test_nested_training_settings_are_checked_before_any_stage():
    from forgetfilter.errors import ConfigError
    from forgetfilter.pipeline import RunConfig
    from forgetfilter.training import TrainConfig

    with pytest.raises(ConfigError, match="`batch_size` and `micro_batch_size` must be positive"):
        RunConfig(noisy_train=TrainConfig(batch_size=0))
    with pytest.raises(ConfigError, match="max_length"):
        RunConfig(safety_train=TrainConfig(max_length=8))


def test_reversion_is_the_share_of_learning_undone():
    from forgetfilter.recipes import forgetting

    m0 = np.array([4.0, 4.0, 4.0])
    before = np.array([2.0, 3.0, 4.0])  # learned 2, 1 and 0 nats
    after = np.array([3.0, 3.5, 5.0])
    assert forgetting(before, after, "loss", "reversion", m0).tolist() == [0.5, 0.5, 0.0]


def test_a_registered_recipe_reaches_the_cli_the_config_and_the_summary(monkeypatch):
    from forgetfilter import cli, recipes
    from forgetfilter.pipeline import RunConfig
    from forgetfilter.summary import label_quality

    recipe = recipes.Recipe("after_only", lambda t: np.asarray(t.m2, float), "NLL on M2 alone")
    monkeypatch.setitem(recipes.RECIPES, recipe.name, recipe)
    argv = ["run", "--noisy", "n", "--safe", "s", "--out", "o", "--normalise", "after_only"]
    assert cli.run_config_from_args(cli.build_parser().parse_args(argv)).normalise == "after_only"
    assert RunConfig(normalise="after_only").normalise == "after_only"
    rows = [
        {"id": str(i), "before": 1.0, "after": float(i), "forgetting": 0.0, "removed": False}
        for i in range(4)
    ]
    records = [{"id": str(i), "label": "unsafe" if i > 1 else "task"} for i in range(4)]
    assert label_quality(records, rows)["forgetting_after_only"]["auroc"] == 1.0


def test_static_and_random_filters_through_run(micro_model_dir, tmp_path):
    from forgetfilter.errors import ConfigError

    noisy, safe = make_data(tmp_path)
    quarter = ThresholdConfig("fraction", fraction=0.25)
    cfg = micro_config(
        str(micro_model_dir), safety_steps=2, final=False, threshold=quarter, filter="static"
    )
    result = run_forgetfilter(noisy, safe, tmp_path / "run", cfg)
    rows = io.read_jsonl(tmp_path / "run" / "scores.jsonl")
    lowest = sorted(rows, key=lambda r: r["before"])[:9]
    assert sorted(result.removed_ids) == sorted(r["id"] for r in lowest)
    removed = io.read_jsonl(tmp_path / "run" / "removed.jsonl")
    assert all(r["reason"].startswith("static fit") for r in removed)
    # static reads M1's scores only: no safety finetune, no scoring of M2
    assert (tmp_path / "run" / "m1").is_dir() and not (tmp_path / "run" / "m2").exists()
    assert not list((tmp_path / "run").glob("scores_after*")) and "after" not in rows[0]
    assert set(result.summary["timings_s"]) >= {"m1", "scores_before"}
    assert "m2" not in result.summary["timings_s"]
    with pytest.raises(ConfigError, match="`filter` random needs `threshold.fraction`"):
        micro_config(str(micro_model_dir), filter="random")
    cfg = micro_config(
        str(micro_model_dir), safety_steps=2, final=False, threshold=quarter, filter="random"
    )
    result = run_forgetfilter(noisy, safe, tmp_path / "random", cfg)
    assert len(result.removed_ids) == 9
    assert all(
        r["reason"].startswith("random draw")
        for r in io.read_jsonl(tmp_path / "random" / "removed.jsonl")
    )
    assert _trained_or_scored(tmp_path / "random") == []


def test_classifier_filter_through_run_reads_only_the_text(micro_model_dir, tmp_path, monkeypatch):
    from forgetfilter import classifiers, filters
    from forgetfilter.records import Content

    seen = []

    class Keyword:
        name, auroc = "keyword", 1.0

        def score(self, texts, prompts=None):
            return np.array([0.9 if "woman" in t else 0.1 for t in texts])

    def fake_scorer(kind, data_dir=None, exclude=(), holdout_sources=()):
        seen.append(kind)
        return Keyword()

    decide = filters.ClassifierFilter.decide

    def spy(self, records, *args, **kwargs):
        assert all(type(r) is Content and not hasattr(r, "label") for r in records)
        return decide(self, records, *args, **kwargs)

    monkeypatch.setattr(classifiers, "get_scorer", fake_scorer)
    monkeypatch.setattr(filters.ClassifierFilter, "decide", spy)
    noisy, safe = make_data(tmp_path)
    cfg = micro_config(str(micro_model_dir), safety_steps=2, final=False, filter="classifier")
    result = run_forgetfilter(noisy, safe, tmp_path / "run", cfg)
    assert sorted(result.removed_ids) == sorted(f"u{i}" for i in range(12))
    assert set(seen) == {"harm", "toxicity"}
    removed = io.read_jsonl(tmp_path / "run" / "removed.jsonl")
    assert all(r["reason"].startswith("classifier probability 0.9 > phi 0.5") for r in removed)
    # the classifier reads no model's scores: nothing is finetuned or scored for it
    assert _trained_or_scored(tmp_path / "run") == []
    assert (tmp_path / "run" / "report" / "score_histogram.png").exists()  # its report still is
    assert set(io.read_jsonl(tmp_path / "run" / "scores.jsonl")[0]) == {
        "id", "line", "forgetting", "removed"
    }  # fmt: skip


def _trained_or_scored(run_dir):
    names = ("m1", "m2", "curve", "scores_m0*", "scores_before*", "scores_after*")
    return sorted(str(p.name) for n in names for p in run_dir.glob(n))


def test_progress_bars_name_their_stage_and_can_be_turned_off(micro_model_dir, tmp_path, capsys):
    from forgetfilter.cli import main

    noisy, safe = make_data(tmp_path)
    argv = ["run", "--model", str(micro_model_dir), "--noisy", str(noisy), "--safe", str(safe)]
    argv += ["--full", "--epochs", "1", "--batch-size", "8", "--max-length", "64"]
    argv += ["--safety-steps", "2", "--remove-fraction", "0.25"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    for label in ("m1: noisy finetune", "m2: safety finetune", "final finetune", "scores_m0"):
        assert label in err, label
    assert main([*argv, "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "finetune" not in err and "scores_" not in err and "it/s" not in err


def _trusted_file(tmp_path, n=24):
    rows = [
        {"messages": [{"role": "user", "content": f"Question {i}: what colour is grass?"},
                      {"role": "assistant", "content": f"Grass is green {i}."}]}
        for i in range(n)
    ]  # fmt: skip
    io.write_jsonl(tmp_path / "trusted.jsonl", rows)
    return tmp_path / "trusted.jsonl"


def test_a_trusted_sample_calibrates_the_cut_and_never_reaches_the_outputs(
    micro_model_dir, tmp_path
):
    noisy, safe = make_data(tmp_path)
    trusted = _trusted_file(tmp_path)
    cfg = micro_config(str(micro_model_dir), safety_steps=2)
    cfg.threshold = ThresholdConfig(max_false_removal=0.1)
    result = run_forgetfilter(noisy, safe, tmp_path / "run", cfg, trusted=trusted)
    out = result.out_dir
    s = result.summary
    assert s["threshold"]["method"] == "conformal" and s["threshold"]["details"]["n_trusted"] == 24
    assert s["trusted"]["n"] == 24 and s["unsafe_share"]["estimate"] is not None
    outputs = io.read_jsonl(out / "kept.jsonl") + io.read_jsonl(out / "removed.jsonl")
    assert sorted(r["id"] for r in outputs) == sorted(r["id"] for r in io.read_jsonl(noisy))
    assert len(io.read_jsonl(out / "scores.jsonl")) == 36
    cleaned = next((out / "clean").glob("*")).read_text()
    assert "Grass is green" not in cleaned and "Grass is green" not in str(outputs)
    trusted_rows = io.read_jsonl(out / "trusted_scores.jsonl")
    assert all(r["id"].startswith("trusted:") for r in trusted_rows)
    assert len(trusted_rows) == 24
    scored_ids = {r["id"] for r in io.read_jsonl(out / "scores_before.jsonl")}
    assert {r["id"] for r in trusted_rows} <= scored_ids  # scored like the noisy data
    m1_state = io.read_json(out / "m1" / "train_state.json")
    assert m1_state["n_records"] == 36 + 24  # and finetuned with it


def test_a_bad_trusted_file_is_one_line_naming_file_and_line(micro_model_dir, tmp_path, capsys):
    from forgetfilter.cli import main

    noisy, safe = make_data(tmp_path)
    bad = tmp_path / "trusted.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{not json\n')
    argv = ["run", "--noisy", str(noisy), "--safe", str(safe), "--out", str(tmp_path / "r"),
            "--model", str(micro_model_dir), "--trusted", str(bad), "--no-progress"]  # fmt: skip
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "trusted.jsonl:2:" in err and "Traceback" not in err


def test_a_screening_model_makes_the_scores_and_the_target_is_finetuned_once(
    micro_model_dir, random_model_dir, tmp_path
):
    from forgetfilter.errors import ConfigError
    from forgetfilter.training import finished_run

    noisy, safe = make_data(tmp_path)
    target = str(random_model_dir)
    cfg = micro_config(
        target,
        screen_model=str(micro_model_dir),
        screen_steps=2,
        safety_steps=2,
        threshold=ThresholdConfig("fraction", fraction=0.25),
    )
    # the filtering stages take the screen model's (full) settings, the final one the target's
    assert cfg.noisy_train.finetune == "full" and cfg.final_train.finetune == "lora"
    result = run_forgetfilter(noisy, safe, tmp_path / "run", cfg, progress=False)
    out = result.out_dir
    m1, final = finished_run(out / "m1"), finished_run(out / "final")
    assert m1["steps"] == 2  # screen_steps, not the noisy finetune's 2 epochs of 36 records
    assert final["steps"] == 3 * 4  # the target preset's 3 epochs, ceil(27 kept / batch 8) = 4 each
    # M1 grew from the screen model, the delivered model from the target
    micro_vocab = load_model(str(micro_model_dir))[0].config.vocab_size
    target_vocab = load_model(target)[0].config.vocab_size
    assert micro_vocab != target_vocab
    assert load_model(str(out / "m1" / "model"))[0].config.vocab_size == micro_vocab
    delivered = load_model(str(out / "final" / "model"))[0]
    assert is_peft_model(delivered) and delivered.config.vocab_size == target_vocab
    s = result.summary["screening"]
    assert s["screen_model"] == str(micro_model_dir) and s["delivered_model"] == target
    assert s["screen_steps"] == 2 and s["trained"]["m1"]["steps"] == 2
    recorded = io.read_json(out / "config.json")["config"]
    assert recorded["screen_model"] and recorded["screen_steps"] == 2
    # another M1 length redoes the run from M1 on, keeping M0's scores
    m0_scores = (out / "scores_m0.jsonl").read_bytes()
    other = micro_config(
        target,
        screen_model=str(micro_model_dir),
        screen_steps=3,
        safety_steps=2,
        threshold=ThresholdConfig("fraction", fraction=0.25),
    )
    again = run_forgetfilter(noisy, safe, tmp_path / "run", other, progress=False)
    assert finished_run(out / "m1")["steps"] == 3
    assert (out / "scores_m0.jsonl").read_bytes() == m0_scores
    m0_time = result.summary["timings_s"]["scores_m0"]
    assert again.summary["timings_s"]["scores_m0"] == m0_time  # not scored again
    assert io.read_json(out / "config.json")["config"]["screen_steps"] == 3
    # a change no stage reads first (the model that screens) still needs --force
    moved = micro_config(target, screen_model=target, screen_steps=3, safety_steps=2)
    with pytest.raises(ConfigError, match="screen_model"):
        run_forgetfilter(noisy, safe, tmp_path / "run", moved, progress=False)


def test_m1_trains_its_own_epochs_and_the_delivered_model_the_noisy_finetunes(
    micro_model_dir, tmp_path
):
    from forgetfilter.training import finished_run

    noisy, safe = make_data(tmp_path)
    cfg = micro_config(
        str(micro_model_dir), safety_steps=2, threshold=ThresholdConfig("fraction", fraction=0.25)
    )
    assert cfg.screen_epochs == 1  # a Hugging Face model: the paper preset's one-epoch M1
    result = run_forgetfilter(noisy, safe, tmp_path / "run", cfg, progress=False)
    m1, final = finished_run(result.out_dir / "m1"), finished_run(result.out_dir / "final")
    assert m1["steps"] == 5  # one epoch of 36 records at batch 8
    assert final["steps"] == 2 * 4  # the noisy finetune's 2 epochs of the 27 kept
    s = result.summary["screening"]
    assert s["screen_epochs"] == 1 and s["trained"]["m1"]["steps"] == 5
    assert "1-epoch noisy finetune" in s["note"] and "(2 epochs)" in s["note"]


def test_runs_recorded_before_screening_existed_continue():
    from forgetfilter.pipeline import _canonical

    cfg = micro_config("tiny:micro")
    old = cfg.fingerprint()
    for key in ("screen_model", "screen_steps", "screen_epochs", "final_train"):
        old.pop(key)
    assert _canonical(old) == cfg.fingerprint()
    assert cfg.final_train is None  # no separate final settings unless asked for


def test_scoring_runs_in_fp32_whatever_the_training_precision():
    """Scoring precision is its own setting (fp32 by default); `train` follows the noisy
    finetune's dtype, which is what runs recorded before the setting existed did."""
    from forgetfilter.errors import ConfigError
    from forgetfilter.pipeline import _canonical, scoring_dtype

    cfg = micro_config("tiny:micro")
    cfg.noisy_train.dtype = "bf16"
    assert cfg.score_dtype == "fp32" and scoring_dtype(cfg) == "fp32"
    assert scoring_dtype(micro_config("tiny:micro", score_dtype="bf16")) == "bf16"
    follows = micro_config("tiny:micro", score_dtype="train")
    follows.noisy_train.dtype = "bf16"
    assert scoring_dtype(follows) == "bf16"
    follows.noisy_train.dtype = None
    assert scoring_dtype(follows) is None  # the device default, as before
    old = micro_config("tiny:micro").fingerprint()
    old.pop("score_dtype")
    assert _canonical(old)["score_dtype"] == "train"  # so an old run is not silently rescored
    assert _canonical(old) != micro_config("tiny:micro").fingerprint()
    assert _canonical(old) == micro_config("tiny:micro", score_dtype="train").fingerprint()
    with pytest.raises(ConfigError, match="score_dtype"):
        micro_config("tiny:micro", score_dtype="fp64")
