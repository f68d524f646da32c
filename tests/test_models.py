"""Model loading, name resolution, LoRA targets, adapter save/load/merge."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from forgetfilter import io, models
from forgetfilter.cli import main
from forgetfilter.errors import ConfigError
from forgetfilter.models import (
    LoraSettings,
    apply_lora,
    export_merged,
    find_lora_targets,
    load_model,
    resolve_dtype,
    resolve_model,
    save_model,
)


def logits(model, tokenizer, text: str = "### Instruction:\nhello there") -> torch.Tensor:
    ids = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


def test_load_model_defaults(micro_model_dir):
    model, tok = load_model(micro_model_dir)
    assert tok.padding_side == "right" and tok.pad_token_id is not None
    assert tok.pad_token_id != tok.eos_token_id  # the tiny tokenizer has its own pad token
    assert model.config.pad_token_id == tok.pad_token_id
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert next(model.parameters()).dtype == torch.float32
    half, _ = load_model(micro_model_dir, dtype="bf16", trainable=True)
    assert next(half.parameters()).dtype == torch.bfloat16 and half.training


def test_resolve_names(micro_model_dir, tmp_path):
    assert resolve_model("tiny:micro") == str(micro_model_dir)
    assert resolve_model("org/some-hub-model") == "org/some-hub-model"
    (tmp_path / "model").mkdir()
    io.write_json(tmp_path / "train_state.json", {"complete": True})
    assert resolve_model(tmp_path) == str(tmp_path / "model")
    with pytest.raises(ConfigError):
        resolve_model("tiny:micro:x")
    with pytest.raises(ConfigError):
        resolve_dtype("fp8")


def test_tiny_is_built_once_under_concurrency(monkeypatch, tmp_path):
    monkeypatch.setenv("FORGETFILTER_CACHE", str(tmp_path))
    calls = []

    def fake_build(out, preset, seed, data_dir=None):
        calls.append(preset)
        time.sleep(0.3)
        tmp = io.temp_dir_for(out)
        io.write_json(tmp / "build_info.json", {"preset": preset})
        io.replace_dir(tmp, out)
        return out

    monkeypatch.setattr("forgetfilter.tiny.build_tiny", fake_build)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(resolve_model("tiny:nano:s2")))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["nano"]
    assert set(results) == {str(tmp_path / "models" / "tiny-nano-s2")}


def test_lora_targets_by_architecture(micro_model_dir):
    from transformers import LlamaConfig, LlamaForCausalLM

    gpt2, _ = load_model(micro_model_dir)
    assert find_lora_targets(gpt2) == (["c_attn"], True)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    assert find_lora_targets(LlamaForCausalLM(cfg)) == (["q_proj", "v_proj"], False)

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.up, self.down, self.lm_head = nn.Linear(4, 8), nn.Linear(8, 4), nn.Linear(4, 10)

    assert find_lora_targets(Custom()) == (["down", "up"], False)


def test_adapter_save_load_and_merge(micro_model_dir, tmp_path):
    base, tok = load_model(micro_model_dir, trainable=True)
    model = apply_lora(base, LoraSettings(r=4, alpha=8))
    assert models.model_summary(model)["trainable"] < models.model_summary(model)["params"] / 5
    with torch.no_grad():  # make the adapter non-trivial (B starts at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.eval()
    expected = logits(model, tok)
    save_model(model, tok, tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
    loaded, ltok = load_model(tmp_path / "adapter")
    torch.testing.assert_close(logits(loaded, ltok), expected)
    assert (
        main(
            [
                "model",
                "export-merged",
                "--model",
                str(tmp_path / "adapter"),
                "--out",
                str(tmp_path / "merged"),
            ]
        )
        == 0
    )
    merged, mtok = load_model(tmp_path / "merged")
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    torch.testing.assert_close(logits(merged, mtok), expected, atol=1e-4, rtol=1e-4)
    inference, itok = load_model(tmp_path / "adapter", merge=True)  # merged in memory
    assert not models.is_peft_model(inference) and not inference.training
    torch.testing.assert_close(logits(inference, itok), expected, atol=1e-4, rtol=1e-4)
    half, _ = load_model(tmp_path / "adapter", merge=True, dtype="bf16")
    assert models.is_peft_model(half)  # bf16 weights would round a small update away
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no library deprecation noise on an adapter load
        load_model(tmp_path / "adapter")


def test_known_library_noise_is_silenced_only_inside():
    log = logging.getLogger("transformers.modeling_utils")
    seen: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    log.addHandler(handler)
    advice = (
        "We strongly recommend passing in an `attention_mask` since your input_ids may be padded."
    )
    try:
        with models.known_library_noise_silenced():
            log.warning(advice)
            warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning, stacklevel=1)
            log.warning("another message")
        assert seen == ["another message"]
        log.warning(advice)
        assert seen[-1] == advice
        with pytest.warns(FutureWarning):
            warnings.warn("`is_gradient_checkpointing` is deprecated", FutureWarning, stacklevel=1)
    finally:
        log.removeHandler(handler)


def test_trainable_adapter_reload(micro_model_dir, tmp_path):
    model = apply_lora(load_model(micro_model_dir, trainable=True)[0])
    save_model(model, load_model(micro_model_dir)[1], tmp_path / "a")
    again, _ = load_model(tmp_path / "a", trainable=True)
    names = [n for n, p in again.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    export_merged(tmp_path / "a", tmp_path / "m")
    assert Path(tmp_path / "m" / "model.safetensors").exists()
    config = io.read_json(tmp_path / "a" / "adapter_config.json")
    io.write_json(
        tmp_path / "a" / "adapter_config.json", {**config, "base_model_name_or_path": "./gone"}
    )
    with pytest.raises(ConfigError, match="names its base model './gone', which is not found"):
        load_model(tmp_path / "a")


def test_attention_backends_leave_out_cudnn_on_cuda_only(monkeypatch):
    """cuDNN attention is switched off inside the context on CUDA and restored after; CPU untouched."""
    from forgetfilter.devices import CUDNN_SDPA_ENV, attention_backends

    monkeypatch.delenv(CUDNN_SDPA_ENV, raising=False)
    before = torch.backends.cuda.cudnn_sdp_enabled()
    with attention_backends("cuda"):
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled()
        assert torch.backends.cuda.mem_efficient_sdp_enabled()
    assert torch.backends.cuda.cudnn_sdp_enabled() == before
    with attention_backends("cpu"):
        assert torch.backends.cuda.cudnn_sdp_enabled() == before
    monkeypatch.setenv(CUDNN_SDPA_ENV, "1")
    with attention_backends("cuda"):
        assert torch.backends.cuda.cudnn_sdp_enabled() == before
