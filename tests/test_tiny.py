"""The built-in model: a plain HF model dir, built deterministically from the data directory."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from forgetfilter import io, tiny
from forgetfilter.cli import main
from forgetfilter.records import render_prompt

NANO = replace(
    tiny.PRESETS["micro"],
    n_layer=1,
    n_embd=32,
    vocab_size=512,
    seq_len=64,
    text_chars=60_000,
    pretrain_tokens=6_000,
    align_examples=16,
)


def test_micro_model_is_a_plain_hf_model(micro_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(micro_model_dir)
    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    assert tok.eos_token == tiny.EOS and tok.pad_token == tiny.PAD
    assert (
        model.config.eos_token_id == tok.eos_token_id
        and model.config.pad_token_id == tok.pad_token_id
    )
    text = render_prompt("Is the sky blue?") + "Yes, it is."
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level BPE round-trips
    ids = tok(render_prompt("Hello"), return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]
    info = io.read_json(micro_model_dir / "build_info.json")
    assert info["preset"] == "micro" and info["seed"] == 0 and info["params"] > 0
    assert info["pretrain_heldout_loss"] < 0.95 * math.log(len(tok))  # it learned something
    assert {
        "pretrain_tokens_seen",
        "align_final_loss",
        "wall_time_s",
        "tokenizer_time_s",
    } <= info.keys()


def test_same_seed_same_weights(data_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setitem(tiny.PRESETS, "nano", NANO)
    a = tiny.build_tiny(tmp_path / "a", preset="nano", seed=5, data_dir=data_dir, progress=False)
    monkeypatch.setitem(tiny.PRESETS, "micro", NANO)  # the CLI path, on the same small recipe
    assert main(["model", "build-tiny", "--preset", "micro", "--seed", "5", "--data-dir", str(data_dir), "--out", str(tmp_path / "b")]) == 0  # fmt: skip
    b = tmp_path / "b"
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert main(["model", "build-tiny", "--preset", "micro", "--out", str(b)]) == 0  # already built


def test_unknown_preset_and_sampling():
    from forgetfilter.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown tiny preset"):
        tiny.build_tiny("/nonexistent/x", preset="huge")
    pieces = tiny.sample_text(["a\n" * 5000, "b c\n" * 10], max_chars=3000, seed=1, piece=1000)
    assert 3000 <= sum(map(len, pieces)) < 4100 and all(len(p) <= 1000 for p in pieces)
    assert pieces == tiny.sample_text(
        ["a\n" * 5000, "b c\n" * 10], max_chars=3000, seed=1, piece=1000
    )
