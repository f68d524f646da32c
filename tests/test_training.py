"""Training: determinism, resume after a hard kill, NaN handling, callbacks, CLI and 2-process DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from forgetfilter import io
from forgetfilter.cli import main
from forgetfilter.errors import ConfigError, NumericalError
from forgetfilter.models import LoraSettings, is_peft_model, load_model
from forgetfilter.training import FAULT_EXIT_CODE, TrainConfig, lr_at, train

FAST = dict(lr=3e-3, batch_size=8, micro_batch_size=4, max_length=64, warmup_ratio=0.0)


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """The saved tensors of a model or adapter dir."""
    name = (
        "adapter_model.safetensors"
        if (model_dir / "adapter_config.json").exists()
        else "model.safetensors"
    )
    return load_file(str(model_dir / name))


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0 if atol == 0 else 1e-5, msg=k)


def run_cmd(cmd: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run a command in its own process group; the whole group is killed on timeout."""
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd[:4]} timed out: {err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def write_records(path: Path, records) -> Path:
    io.write_jsonl(path, [r.to_dict() for r in records])
    return path


def test_full_finetune_is_deterministic_and_learns(micro_model_dir, micro_records, tmp_path):
    cfg = TrainConfig(finetune="full", max_steps=12, **FAST)
    a = train(str(micro_model_dir), micro_records, tmp_path / "a", cfg, progress=False)
    b = train(str(micro_model_dir), micro_records, tmp_path / "b", cfg, progress=False)
    assert_same(weights(a.model_dir), weights(b.model_dir))
    log = io.read_jsonl(tmp_path / "a" / "log.jsonl")
    assert [r["step"] for r in log] == list(range(1, 13))
    assert log[-1]["loss"] < log[0]["loss"]
    assert {"loss", "lr", "tokens", "tokens_per_s", "elapsed_s"} <= log[0].keys()
    state = io.read_json(tmp_path / "a" / "train_state.json")
    assert state["complete"] and state["steps"] == 12 and state["world_size"] == 1
    assert state["effective_batch_size"] == 8 and state["grad_accum"] == 2
    model, tok = load_model(a.model_dir)
    assert tok.pad_token_id is not None and not model.training


def test_completed_run_is_returned_and_config_change_refused(
    micro_model_dir, micro_records, tmp_path
):
    cfg = TrainConfig(finetune="full", max_steps=2, **FAST)
    first = train(str(micro_model_dir), micro_records, tmp_path, cfg, progress=False)
    again = train(str(micro_model_dir), micro_records, tmp_path, cfg, progress=False)
    assert again.already_complete and again.steps == first.steps == 2
    with pytest.raises(ConfigError, match=r"different settings \(config.max_steps\)"):
        train(
            str(micro_model_dir),
            micro_records,
            tmp_path,
            TrainConfig(finetune="full", max_steps=3, **FAST),
        )
    fresh = train(
        str(micro_model_dir),
        micro_records,
        tmp_path,
        TrainConfig(finetune="full", max_steps=3, **FAST),
        resume=False,
        progress=False,
    )
    assert fresh.steps == 3 and not fresh.already_complete


def test_resume_after_hard_exit_matches_uninterrupted_run(micro_model_dir, micro_records, tmp_path):
    data = write_records(tmp_path / "train.jsonl", micro_records)
    args = ["train", "--model", str(micro_model_dir), "--data", str(data), "--max-steps", "6",
            "--batch-size", "8", "--micro-batch-size", "4", "--lr", "3e-3", "--max-length", "64",
            "--save-every", "2", "--seed", "3"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0
    env = {**os.environ, "FORGETFILTER_FAULT_AFTER_STEP": "3"}
    cmd = [sys.executable, "-m", "forgetfilter.cli", *args, "--out", str(tmp_path / "run")]
    proc = run_cmd(cmd, env, timeout=120)
    assert proc.returncode == FAULT_EXIT_CODE, proc.stderr[-2000:]
    run = tmp_path / "run"
    assert (run / "checkpoints" / "step-2" / "state.json").exists()
    assert not (run / "train_state.json").exists()
    assert main([*args, "--out", str(run)]) == 0
    state = io.read_json(run / "train_state.json")
    assert state["complete"] and state["steps"] == 6
    assert [r["step"] for r in io.read_jsonl(run / "log.jsonl")] == list(range(1, 7))
    assert (
        run / "model" / "adapter_config.json"
    ).exists()  # LoRA by default (dropout: RNG restored)
    assert_same(weights(run / "model"), weights(tmp_path / "ref" / "model"), atol=1e-6)


def test_nan_loss_raises_and_keeps_last_checkpoint(
    micro_model_dir, micro_records, tmp_path, monkeypatch
):
    monkeypatch.setenv("FORGETFILTER_FAULT_NAN_AT_STEP", "3")
    cfg = TrainConfig(finetune="full", max_steps=6, save_every=2, **FAST)
    with pytest.raises(NumericalError, match="step 3.*checkpoint \\(step 2\\)"):
        train(str(micro_model_dir), micro_records, tmp_path, cfg, progress=False)
    assert (tmp_path / "checkpoints" / "step-2" / "state.json").exists()
    assert not (tmp_path / "model").exists() and not (tmp_path / "train_state.json").exists()


def test_callback_runs_every_k_steps_without_changing_training(
    micro_model_dir, micro_records, tmp_path
):
    cfg = TrainConfig(max_steps=4, lora=LoraSettings(r=4), **FAST)
    seen = []

    def callback(step, model, tokenizer):
        assert not model.training
        torch.rand(100)  # consuming RNG must not change training
        seen.append((step, tokenizer.pad_token_id is not None))

    a = train(
        str(micro_model_dir),
        micro_records,
        tmp_path / "a",
        cfg,
        callback=callback,
        callback_every=2,
        progress=False,
    )
    b = train(str(micro_model_dir), micro_records, tmp_path / "b", cfg, progress=False)
    assert seen == [(2, True), (4, True)]
    assert_same(weights(a.model_dir), weights(b.model_dir))


def test_full_sequence_loss_and_lr_schedule(micro_model_dir, micro_records, tmp_path):
    cfg = TrainConfig(finetune="full", max_steps=2, loss_on="full", **FAST)
    result = train(str(micro_model_dir), micro_records[:8], tmp_path, cfg, progress=False)
    assert result.steps == 2 and result.final_loss > 0
    sched = TrainConfig(lr=1.0, warmup_ratio=0.1)
    lrs = [lr_at(s, sched, 100) for s in range(100)]
    assert lrs[9] < lrs[10] == max(lrs) and lrs[-1] < 0.02


def test_two_process_torchrun_matches_one_process(micro_model_dir, micro_records, tmp_path):
    data = write_records(tmp_path / "train.jsonl", micro_records)
    args = ["train", "--model", str(micro_model_dir), "--data", str(data), "--full", "--max-steps", "3",
            "--batch-size", "8", "--micro-batch-size", "2", "--lr", "3e-3", "--max-length", "64"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    cmd = ["torchrun", "--nproc_per_node", "2", "--standalone", "-m", "forgetfilter.cli", *args, "--out", str(tmp_path / "two")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = run_cmd(cmd, env, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    state = io.read_json(tmp_path / "two" / "train_state.json")
    assert state["world_size"] == 2 and state["grad_accum"] == 2 and state["complete"]
    # the same examples per step and a loss normalised over the whole step: the same weights
    assert_same(weights(tmp_path / "two" / "model"), weights(tmp_path / "one" / "model"), atol=1e-4)
    load_model(tmp_path / "two")


def test_continue_from_previous_output_dir(micro_model_dir, micro_records, tmp_path, monkeypatch):
    cfg = TrainConfig(max_steps=2, **FAST)
    monkeypatch.chdir(Path(micro_model_dir).parent)  # the base model named by a relative path
    first = train(Path(micro_model_dir).name, micro_records, tmp_path / "m1", cfg, progress=False)
    monkeypatch.chdir(tmp_path)
    lora = train(str(tmp_path / "m1"), micro_records, tmp_path / "m2", cfg, progress=False)
    base = io.read_json(lora.model_dir / "adapter_config.json")["base_model_name_or_path"]
    assert Path(base).resolve() == Path(micro_model_dir).resolve()  # the same adapter, trained on
    assert Path(base).is_absolute()  # so the adapter loads from any working directory
    assert is_peft_model(load_model(first.model_dir)[0])
    wa, wb = weights(first.model_dir), weights(lora.model_dir)
    assert wa.keys() == wb.keys() and any(not torch.equal(wa[k], wb[k]) for k in wa)
    full = train(
        str(first.model_dir),
        micro_records,
        tmp_path / "m3",
        TrainConfig(finetune="full", max_steps=1, **FAST),
        progress=False,
    )
    assert (full.model_dir / "model.safetensors").exists()


def test_one_process_can_train_with_different_precisions(micro_model_dir, micro_records, tmp_path):
    """accelerate allows one mixed precision per process; `train` calls with others still work."""
    for i, dtype in enumerate(("fp32", "bf16", "fp32")):
        cfg = TrainConfig(max_steps=1, dtype=dtype, **FAST)
        result = train(str(micro_model_dir), micro_records, tmp_path / f"r{i}", cfg, progress=False)
        assert result.steps == 1
        assert io.read_json(tmp_path / f"r{i}" / "train_state.json")["config"]["dtype"] == dtype


def test_report_to_tensorboard_writes_what_log_jsonl_has(micro_model_dir, micro_records, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = TrainConfig(finetune="full", epochs=1, report_to="tensorboard", **FAST)
    train(str(micro_model_dir), micro_records, tmp_path / "m1", cfg, progress=False)
    events = list((tmp_path / "m1" / "tensorboard" / "m1").glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    acc = EventAccumulator(str(events[0].parent)).Reload()
    log = io.read_jsonl(tmp_path / "m1" / "log.jsonl")
    for tag, key in (("loss", "loss"), ("lr", "lr"), ("tokens_per_s", "tokens_per_s")):
        got = acc.Scalars(tag)
        assert [e.step for e in got] == [row["step"] for row in log]
        want = [row[key] for row in log]
        assert [e.value for e in got] == pytest.approx(want, rel=1e-3 if key != "lr" else 1e-6)
    # where metrics go is not part of what a resumed run must match
    again = TrainConfig(finetune="full", epochs=1, **FAST)
    assert train(str(micro_model_dir), micro_records, tmp_path / "m1", again).already_complete


def test_report_to_wandb_offline(micro_model_dir, micro_records, tmp_path, monkeypatch):
    pytest.importorskip(
        "wandb", reason="wandb is not installed (pip install 'forgetfilter[wandb]')"
    )
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = TrainConfig(finetune="full", epochs=1, report_to="wandb", **FAST)
    train(str(micro_model_dir), micro_records, tmp_path / "m1", cfg, progress=False)
    assert list((tmp_path / "m1").rglob("*.wandb")), "no offline wandb run file"


def test_report_to_a_missing_package_is_a_one_line_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"needs the wandb package: pip install"):
        TrainConfig(report_to="wandb").validate()
    with pytest.raises(ConfigError, match="`report_to` must be one of"):
        TrainConfig(report_to="mlflow").validate()
