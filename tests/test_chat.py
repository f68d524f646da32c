"""The model's own format: records go through the tokenizer's chat template in every stage.

Parametrised over two tiny architectures (Llama, GPT-2) that carry a ChatML template.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from forgetfilter import batching, chat, inference, signals
from forgetfilter.errors import ConfigError
from forgetfilter.models import load_model
from forgetfilter.readers import message_text
from forgetfilter.records import Example, render_prompt

SYSTEM = {"role": "system", "content": "Be brief."}
TALK = [
    SYSTEM,
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Name?"},
    {"role": "assistant", "content": "Bot."},
]


@pytest.fixture(scope="module")
def loaded(chat_model_dir: Path):
    return load_model(str(chat_model_dir), device="cpu")


def _text(tok, ids) -> str:
    return tok.decode(list(ids), skip_special_tokens=False)


def _targets(tok, enc: batching.Encoded) -> list[str]:
    return [_text(tok, enc.input_ids[a:b]) for a, b in enc.spans]


def test_resolve_format(loaded, random_model_dir: Path) -> None:
    _, tok = loaded
    assert chat.resolve_format(tok, "auto") == "chat"
    assert chat.resolve_format(tok, "alpaca") == "alpaca"
    _, plain_tok = load_model(str(random_model_dir), device="cpu")
    assert chat.resolve_format(plain_tok, "auto") == "alpaca"
    with pytest.raises(ConfigError, match="no chat template"):
        chat.resolve_format(plain_tok, "chat")


def test_ids_equal_apply_chat_template(loaded) -> None:
    _, tok = loaded
    flat = Example("f", "What colour is the sky?", "Blue.")
    for ex in (Example("t", "", "Bot.", messages=TALK), flat):
        enc = batching.encode_all(tok, [ex], 256)[0]
        messages = (
            TALK
            if ex.messages
            else [
                {"role": "user", "content": flat.prompt},
                {"role": "assistant", "content": flat.response},
            ]
        )
        expected = tok.apply_chat_template(messages, tokenize=True)["input_ids"]
        assert list(enc.input_ids) == list(expected)
        assert not enc.truncated


def test_loss_mask_is_the_last_assistant_turn_or_all_of_them(loaded) -> None:
    _, tok = loaded
    ex = Example("t", "", "Bot.", messages=TALK)
    last = batching.encode_all(tok, [ex], 256)[0]
    assert _targets(tok, last) == ["Bot.<|im_end|>"]
    labelled = [i for i, v in enumerate(last.labels) if v != batching.IGNORE_INDEX]
    assert labelled == list(range(*last.spans[0])) and last.n_labels == len(labelled)
    every = batching.encode_all(tok, [ex], 256, turns="all")[0]
    assert _targets(tok, every) == ["Hello! How can I help?<|im_end|>", "Bot.<|im_end|>"]
    assert list(every.input_ids) == list(last.input_ids)
    full = batching.encode_all(tok, [ex], 256, loss_on="full")[0]
    assert full.spans is None and full.label_start == 0


def test_scoring_uses_the_training_mask(loaded) -> None:
    model, tok = loaded
    records = [
        Example("a", "", "Bot.", messages=TALK),
        Example("b", "Where is Paris?", "In France, of course."),
    ]
    for turns in ("last", "all"):
        got = inference.response_nll(model, tok, records, progress=False, turns=turns)
        for ex, value in zip(records, got, strict=True):
            enc = batching.encode_all(tok, [ex], 256, turns=turns)[0]
            ids = torch.tensor(enc.input_ids, dtype=torch.long)[None]
            labels = torch.tensor(enc.labels)[None]
            with torch.no_grad():
                logits = model(input_ids=ids).logits
            nll = torch.nn.functional.cross_entropy(
                logits[0, :-1], labels[0, 1:], ignore_index=batching.IGNORE_INDEX
            )
            assert value == pytest.approx(float(nll), abs=1e-4)


def test_generation_and_evaluation_use_the_generation_prompt(loaded, monkeypatch) -> None:
    model, tok = loaded
    ex = Example("t", "", "Bot.", messages=TALK)
    ids = batching.encode_prompt(tok, ex, 256)
    expected = tok.apply_chat_template(TALK[:-1], tokenize=True, add_generation_prompt=True)
    assert ids == list(expected["input_ids"])
    seen: list[str] = []
    real = inference.encode_prompt

    def spy(tokenizer, prompt, max_length, prompt_format="auto"):
        out = real(tokenizer, prompt, max_length, prompt_format)
        seen.append(_text(tokenizer, out))
        return out

    monkeypatch.setattr(inference, "encode_prompt", spy)
    signals.greedy_rouge1(model, tok, [ex], max_new_tokens=4, progress=False)
    assert seen[-1].endswith("<|im_start|>user\nName?<|im_end|>\n<|im_start|>assistant\n")
    from forgetfilter.evaluation import EvalConfig, _eval_alpaca, _Runner

    runner = _Runner(model, tok, EvalConfig(progress=False, self_correction=True))
    runner.cfg.self_correction_cues["alpaca"] = "Be fair."
    _eval_alpaca(runner, [Example("q", "Say hi.", "Hi.")])
    assert seen[-1].endswith(
        "<|im_start|>user\nSay hi.\nBe fair.<|im_end|>\n<|im_start|>assistant\n"
    )
    alpaca = batching.encode_prompt(tok, "Say hi.", 256, "alpaca")
    assert _text(tok, alpaca) == render_prompt("Say hi.")


def test_long_conversations_truncate_by_the_documented_rule(loaded) -> None:
    _, tok = loaded
    history = []
    for i in range(6):
        history += [
            {"role": "user", "content": f"Question {i} about the weather in Paris?"},
            {"role": "assistant", "content": f"Answer {i}: the weather in Paris is sunny."},
        ]
    final = [
        {"role": "user", "content": "Tell me about item 3. " * 20 + "What colour is it?"},
        {"role": "assistant", "content": "Item 3 is blue. " * 12},
    ]
    ex = Example("long", "", final[-1]["content"], messages=[SYSTEM, *history, *final])
    whole = len(batching.encode_all(tok, [ex], 4096)[0].input_ids)
    sizes = []
    for max_length in (whole - 30, 160, 96):
        enc = batching.encode_all(tok, [ex], max_length)[0]
        text = _text(tok, enc.input_ids)
        sizes.append(len(enc.input_ids))
        assert enc.truncated and len(enc.input_ids) <= max_length
        assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>")
        assert text.count("<|im_start|>") == text.count("<|im_end|>")  # every turn closed
        assert text.endswith("<|im_end|>\n") and "<|im_start|>assistant\n" in text
        assert _targets(tok, enc)[-1].endswith("<|im_end|>")
        assert "What colour is it?" in text  # the user's turn lost its beginning, not its end
    # the first cut dropped only the oldest history, keeping the final turns whole
    first = _text(tok, batching.encode_all(tok, [ex], whole - 30)[0].input_ids)
    assert "Question 0" not in first and "Question 5" in first
    assert final[0]["content"] in first and final[1]["content"] in first
    # at 96 tokens every exchange of history is gone and the response was cut at its end
    short = _text(tok, batching.encode_all(tok, [ex], 96)[0].input_ids)
    assert "Question" not in short and "Item 3 is blue." in short
    assert final[1]["content"] not in short
    with pytest.raises(ConfigError, match="too short for its system prompt"):
        long_system = [{"role": "system", "content": "Rules. " * 80}, *final]
        batching.encode_all(tok, [Example("s", "", "x", messages=long_system)], 64)


def test_a_template_that_drops_content_is_an_error(loaded) -> None:
    _, tok = loaded
    call = {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {}}}],
    }
    messages = [{"role": "user", "content": "Weather?"}, call]
    ex = Example("tool", "Weather?", message_text(call), messages=messages)
    with pytest.raises(ConfigError, match="drops the tool call 'get_weather'"):
        batching.encode_all(tok, [ex], 256)
    alpaca = batching.encode_all(tok, [ex], 256, prompt_format="alpaca")[0]
    assert "get_weather" in _text(tok, alpaca.input_ids)


def test_a_template_with_tool_support_renders_calls(loaded) -> None:
    _, tok = loaded
    template = tok.chat_template
    tok.chat_template = template.replace(
        "message['content'] + '<|im_end|>'",
        "message['content'] + (message['tool_calls'] | map(attribute='function') "
        "| map(attribute='name') | join(',') if message['tool_calls'] is defined else '') "
        "+ '<|im_end|>'",
    )
    try:
        call = {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {}}}
            ],
        }
        ex = Example("tool", "", "", messages=[{"role": "user", "content": "Weather?"}, call])
        enc = batching.encode_all(tok, [ex], 256)[0]
        assert _targets(tok, enc) == ["get_weather<|im_end|>"]
    finally:
        tok.chat_template = template


def test_training_runs_through_the_template(chat_model_dir: Path, tmp_path: Path) -> None:
    from forgetfilter import io
    from forgetfilter.training import TrainConfig, train

    records = [Example(f"r{i}", "", "Bot.", messages=TALK) for i in range(8)]
    cfg = TrainConfig(batch_size=4, max_steps=2, max_length=128, lr=1e-3)
    result = train(str(chat_model_dir), records, tmp_path / "out", cfg, progress=False)
    state = io.read_json(tmp_path / "out" / "train_state.json")
    assert state["prompt_format"] == "chat" and result.steps == 2
    one = batching.encode_all(load_model(str(chat_model_dir), device="cpu")[1], records[:1], 128)[0]
    assert result.tokens == 2 * 4 * len(one.input_ids)


def test_models_without_a_template_keep_the_alpaca_format(random_model_dir: Path) -> None:
    _, tok = load_model(str(random_model_dir), device="cpu")
    ex = Example("a", "Hi?", "Hello.")
    enc = batching.encode_all(tok, [ex], 128)[0]
    prompt = tok(render_prompt("Hi?"))["input_ids"]
    assert list(enc.input_ids[: len(prompt)]) == list(prompt) and enc.spans is None
    assert enc.label_start == len(prompt)
    assert np.array_equal(enc.input_ids[-1:], [tok.eos_token_id])
