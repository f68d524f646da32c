"""`forgetfilter run`'s options come from the configuration dataclasses: flags and a YAML file
reach every field and give the same configuration for the same settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from forgetfilter.cli import build_parser, run_config_from_args
from forgetfilter.errors import ConfigError
from forgetfilter.options import NOT_FLAGS, _leaves, file_settings, run_options
from forgetfilter.pipeline import RunConfig

BASE = ["run", "--noisy", "n.jsonl", "--safe", "s.jsonl", "--out", "o"]
YAML = """
model: tiny
signal: loss
normalise: reversion
filter: static
safety_steps: 7
score_batch_size: 4
curve_points: 2
skip_invalid: true
final: false
seed: 3
noisy_train:
  lr: 0.001
  epochs: 2
  batch_size: 4
  warmup_ratio: 0.1
  loss_on: full
  max_length: 128
  prompt_format: alpaca
  lora: {r: 16, alpha: 32, targets: [c_attn]}
safety_train:
  lr: 0.0005
  batch_size: 4
  warmup_ratio: 0.1
  loss_on: full
  max_length: 128
  prompt_format: alpaca
threshold: {method: fraction, fraction: 0.1}
"""
FLAGS = [
    "--model", "tiny", "--normalise", "reversion", "--filter", "static", "--safety-steps", "7",
    "--score-batch-size", "4", "--curve-points", "2", "--skip-invalid", "--no-final",
    "--seed", "3", "--lr", "0.001", "--epochs", "2", "--batch-size", "4", "--warmup-ratio", "0.1",
    "--loss-on", "full", "--max-length", "128", "--prompt-format", "alpaca", "--lora-r", "16",
    "--lora-alpha", "32", "--lora-targets", "c_attn", "--safety-lr", "0.0005",
    "--remove-fraction", "0.1",
]  # fmt: skip


def _config(argv: list[str]) -> RunConfig:
    return run_config_from_args(build_parser().parse_args(BASE + argv))


def test_a_config_file_and_the_flags_give_the_same_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(YAML)
    from_file, from_flags = _config(["--config", str(path)]), _config(FLAGS)
    assert from_file.fingerprint() == from_flags.fingerprint()
    assert from_file == from_flags
    assert from_file.noisy_train.lora.targets == ("c_attn",)
    assert from_file.safety_train.lr == 0.0005 and from_file.noisy_train.lr == 0.001


def test_every_field_is_reachable_from_both(tmp_path: Path) -> None:
    leaves = {path for path, *_ in _leaves(RunConfig)}
    flagged = {p for opt in run_options() for p in opt.paths}
    by_other_means = {p for p in leaves if p.startswith("threshold.")} | NOT_FLAGS
    safety_by_steps = {f"safety_train.{k}" for k in ("epochs", "max_steps")}
    safety_from_noisy = {p for p in leaves if p.startswith("safety_train.lora.")} | {
        "safety_train.prompt_format",
        "safety_train.assistant_turns",
    }
    assert leaves - flagged - by_other_means - safety_by_steps - safety_from_noisy == set()
    # every leaf, however nested, is a known key of a config file
    path = tmp_path / "all.yaml"
    nested: dict = {}
    for leaf in leaves:
        node = nested
        *parents, last = leaf.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = None
    import yaml

    path.write_text(yaml.safe_dump(nested))
    assert set(file_settings(path)) == leaves


def test_flags_override_the_file_and_old_flags_keep_their_meaning(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("noisy_train: {lr: 0.01}\nsafety_steps: 3\n")
    cfg = _config(["--config", str(path), "--lr", "0.002", "--batch-size", "16"])
    assert cfg.noisy_train.lr == 0.002 and cfg.safety_steps == 3
    assert cfg.noisy_train.batch_size == cfg.safety_train.batch_size == 16
    preset = _config([])
    assert cfg.safety_train.lr == preset.safety_train.lr  # --lr is the noisy finetune's
    full = _config(["--full"])
    assert full.noisy_train.finetune == full.safety_train.finetune == "full"
    assert _config(["--signal", "rouge"]).normalise == "relative"


def test_a_bad_config_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("noisy_train: {lrr: 0.01}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown field 'noisy_train\.lrr'"):
        _config(["--config", str(path)])
    path.write_text("noisy_train: {batch_size: 0}\n")
    with pytest.raises(ConfigError, match="`batch_size` and `micro_batch_size` must be positive"):
        _config(["--config", str(path)])


def test_eval_and_train_flags_come_from_their_configs() -> None:
    import dataclasses

    from forgetfilter.evaluation import EvalConfig
    from forgetfilter.options import (
        EVAL_SKIPPED,
        build_eval_config,
        build_train_config,
        eval_options,
        flag_settings,
        train_options,
    )
    from forgetfilter.training import TrainConfig

    fields = {f.name for f in dataclasses.fields(EvalConfig)} - set(EVAL_SKIPPED)
    assert {p for o in eval_options() for p in o.paths} == fields
    base = ["eval", "--model", "m", "--data", "d", "--out", "o"]
    args = build_parser().parse_args(base)
    assert build_eval_config(flag_settings(args, eval_options())) == EvalConfig()  # no copies
    args = build_parser().parse_args(base + ["--no-progress", "--limit", "5", "--outputs", "x"])
    cfg = build_eval_config(flag_settings(args, eval_options()))
    assert (cfg.progress, cfg.limit, cfg.outputs_path) == (False, 5, "x")
    train = ["train", "--model", "m", "--data", "d", "--out", "o"]
    args = build_parser().parse_args(train)
    assert build_train_config(flag_settings(args, train_options())) == TrainConfig()
    args = build_parser().parse_args(train + ["--lora-r", "4", "--full", "--max-steps", "3"])
    cfg = build_train_config(flag_settings(args, train_options()))
    assert (cfg.lora.r, cfg.finetune, cfg.max_steps) == (4, "full", 3)


def test_library_errors_name_fields_and_the_cli_names_flags(tmp_path: Path, capsys) -> None:
    from forgetfilter import cli
    from forgetfilter.pipeline import RunConfig
    from forgetfilter.thresholds import ThresholdConfig

    with pytest.raises(ConfigError) as err:
        RunConfig(threshold=ThresholdConfig("fraction", fraction=2.0))
    assert "`threshold.fraction` must be in [0, 1]" in str(err.value) and "--" not in str(err.value)
    noisy = tmp_path / "n.jsonl"
    noisy.write_text('{"prompt": "p", "response": "r"}\n')
    base = ["run", "--noisy", str(noisy), "--safe", str(noisy), "--out", str(tmp_path / "o")]
    assert cli.main([*base, "--remove-fraction", "2"]) == 2
    assert "error: --remove-fraction must be in [0, 1], got 2.0" in capsys.readouterr().err
    assert cli.main([*base, "--batch-size", "0"]) == 2
    err_line = capsys.readouterr().err
    assert "--batch-size and --micro-batch-size must be positive" in err_line
    assert cli.main([*base, "--filter", "random"]) == 2
    assert "--filter random needs --remove-fraction or --threshold" in capsys.readouterr().err


def test_screening_gives_the_filtering_stages_the_screen_preset_and_the_final_the_target(
    tmp_path: Path,
) -> None:
    target = "HuggingFaceTB/SmolLM2-135M-Instruct"
    cfg = _config(["--model", target, "--screen-model", "tiny", "--screen-steps", "5"])
    # tiny's preset (full finetuning) screens; the target keeps its own (LoRA, the paper's lr)
    assert cfg.noisy_train.finetune == "full" and cfg.final_train.finetune == "lora"
    assert cfg.final_train.lr == 2e-4 and cfg.noisy_train.lr == 5e-4
    assert cfg.screener == "tiny" and cfg.screen_steps == 5
    tuned = _config(
        ["--model", target, "--screen-model", "tiny", "--lr", "1e-3", "--final-lr", "3e-4"]
        + ["--max-length", "96", "--final-lora-r", "16"]
    )
    assert tuned.noisy_train.lr == 1e-3 and tuned.final_train.lr == 3e-4
    assert tuned.noisy_train.max_length == tuned.final_train.max_length == 96
    assert tuned.final_train.lora.r == 16 and tuned.noisy_train.lora.r == 8
    # without screening, a final-only setting makes the final finetune differ from the noisy one
    plain = _config(["--model", target, "--final-epochs", "1"])
    assert plain.final_train.epochs == 1 and plain.noisy_train.epochs == 3
    assert _config(["--model", target, "--batch-size", "4"]).final_train is None
    path = tmp_path / "run.yaml"
    path.write_text(f"model: {target}\nscreen_model: tiny\nfinal_train: {{lr: 0.0003}}\n")
    assert _config(["--config", str(path)]).final_train.lr == 3e-4
    with pytest.raises(ConfigError, match="screen_steps"):
        RunConfig(screen_steps=0)


def test_a_pretrained_model_scores_a_one_epoch_m1_and_delivers_the_papers_three_epochs() -> None:
    from forgetfilter.pipeline import final_cfg, screen_cfg

    target = "HuggingFaceTB/SmolLM2-135M-Instruct"
    cfg = _config(["--model", target])
    assert cfg.screen_epochs == 1 and cfg.final_train is None
    assert screen_cfg(cfg).epochs == 1 and final_cfg(cfg).epochs == 3
    # --epochs is the delivered model's length; --screen-epochs M1's (3: the paper's M1)
    longer = _config(["--model", target, "--epochs", "5"])
    assert screen_cfg(longer).epochs == 1 and final_cfg(longer).epochs == 5
    paper = _config(["--model", target, "--screen-epochs", "3"])
    assert screen_cfg(paper).epochs == 3 and final_cfg(paper).epochs == 3
    # a step count gives the delivered model its length, M1 keeps its epoch; --screen-steps wins
    steps = _config(["--model", target, "--max-steps", "40"])
    assert screen_cfg(steps).max_steps is None and screen_cfg(steps).epochs == 1
    assert final_cfg(steps).max_steps == 40
    assert screen_cfg(_config(["--model", target, "--screen-steps", "4"])).max_steps == 4
    # the built-in tiny keeps one length for both
    tiny = _config(["--model", "tiny"])
    assert tiny.screen_epochs is None and screen_cfg(tiny).epochs == final_cfg(tiny).epochs == 5
    with pytest.raises(ConfigError, match="screen_epochs"):
        RunConfig(screen_epochs=0)
    # a run recorded before M1 had its own length continues where M1 is unchanged, not elsewhere
    from forgetfilter.pipeline import _canonical

    one = _config(["--model", target, "--epochs", "1"]).fingerprint()
    assert one["screen_epochs"] is None
    recorded = {k: v for k, v in one.items() if k != "screen_epochs"}
    assert _canonical(recorded) == one
    three = {k: v for k, v in cfg.fingerprint().items() if k != "screen_epochs"}
    assert _canonical(three) != cfg.fingerprint()


def test_every_library_error_names_fields_and_data_build_and_training_name_flags(
    tmp_path: Path, capsys
) -> None:
    """The errors of the mixture builder, the cut, the random filter and training name fields
    (a library caller passed no flag); each command line names its own flags."""
    import numpy as np

    from forgetfilter import cli
    from forgetfilter.filters import get
    from forgetfilter.mixture import MixtureConfig
    from forgetfilter.options import name_flags
    from forgetfilter.thresholds import ThresholdConfig, choose_threshold

    with pytest.raises(ConfigError, match="`unsafe_ratio` must be in") as err:
        MixtureConfig(risk="harm", n=10, unsafe_ratio=1.5).validate()
    assert "--" not in str(err.value)
    with pytest.raises(ConfigError, match="`threshold.fraction`") as err:
        choose_threshold(np.zeros(3), ThresholdConfig("fraction", fraction=None))
    assert "--" not in str(err.value)
    with pytest.raises(ConfigError) as err:
        get("random").decide([], None, ThresholdConfig(), "relative", 0)
    assert "`threshold.fraction`" in str(err.value) and "--" not in str(err.value)
    out = str(tmp_path / "d")
    assert (
        cli.main(
            ["data", "build", "--risk", "harm", "--n", "8", "--unsafe-ratio", "2", "--out", out]
        )
        == 2
    )
    assert "error: --unsafe-ratio must be in [0, 1], got 2.0" in capsys.readouterr().err
    assert cli.main(["data", "build", "--risk", "harm", "--n", "-1", "--out", out]) == 2
    assert "error: --n, --n-safe and --n-eval must not be negative" in capsys.readouterr().err
    resume = "use another output directory or start over with `resume=False`"
    assert name_flags(resume, "train").endswith("start over with --no-resume")
    assert name_flags("rerun with `force=True`", "run") == "rerun with --force"
    assert name_flags("lower `max_length` or `lr`", "train") == "lower --max-length or --lr"
