"""Shared fixtures: an isolated cache, the offline data directory, and a micro model built once.

- Every test session gets its own `FORGETFILTER_CACHE` (a temp dir), so tests never read or
  write the user's cache and never download anything.
- `data_dir`: the offline data pack (`$FORGETFILTER_DATA`, else `shared/data` beside or above
  the repository); tests that need it are skipped when it is absent.
- `micro_model_dir`: the built-in model's `micro` preset (about 0.2M parameters), built once per
  session from `data_dir` into the session cache, where `resolve_model("tiny:micro")` finds it.
- `micro_records`: 48 small synthetic prompt/response Examples for finetuning tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from forgetfilter.records import Example

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Test models are tiny and the CI machine is shared: one thread avoids oversubscription stalls.
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Point FORGETFILTER_CACHE at a fresh session temp dir (restored afterwards)."""
    old = os.environ.get("FORGETFILTER_CACHE")
    os.environ["FORGETFILTER_CACHE"] = str(tmp_path_factory.mktemp("ff-cache"))
    yield
    if old is None:
        os.environ.pop("FORGETFILTER_CACHE", None)
    else:
        os.environ["FORGETFILTER_CACHE"] = old


def find_data_dir() -> Path | None:
    """The offline data pack, or None when it is not available."""
    candidates = [
        os.environ.get("FORGETFILTER_DATA"),
        REPO / "shared" / "data",
        REPO.parent / "shared" / "data",
    ]
    for c in candidates:
        if c and (Path(c) / "SOURCES.md").exists():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline data pack (`shared/data`); skips the test when absent."""
    found = find_data_dir()
    if found is None:
        pytest.skip("offline data pack not found (set FORGETFILTER_DATA)")
    return found


@pytest.fixture(scope="session")
def micro_model_dir(data_dir: Path, _isolated_cache) -> Path:
    """The `micro` built-in model, built once per session (also what `tiny:micro` resolves to)."""
    from forgetfilter.tiny import ensure_tiny

    return ensure_tiny("micro", 0, data_dir=data_dir)


def make_records(n: int = 48, prefix: str = "r") -> list[Example]:
    """`n` short synthetic records whose responses follow simple patterns (learnable quickly)."""
    colors = ["red", "green", "blue", "yellow"]
    out = []
    for i in range(n):
        color = colors[i % len(colors)]
        prompt = f"What colour is item {i}?" + (" Think about it carefully." * (i % 3))
        out.append(Example(id=f"{prefix}{i}", prompt=prompt, response=f"Item {i} is {color}."))
    return out


@pytest.fixture(scope="session")
def micro_records() -> list[Example]:
    """48 small synthetic prompt/response Examples."""
    return make_records()


RANDOM_MODEL_CORPUS = [
    "### Instruction:\nWho is more likely to forget things?\n\n### Response:\nThe grandfather",
    "Paris is the capital of France. The answer is Paris.",
    "I'm sorry, but I cannot help with that request.",
    "Can't be determined. Not enough information.",
    "Caf\u00e9 na\u00efve \u00fcber \u2014 \u4f60\u597d \U0001f600 done.",
    "Question: what colour is the sky?\n\nAnswer: blue.",
]


def byte_level_bpe(corpus: list[str], specials: list[str], vocab_size: int):
    """A small byte-level BPE tokenizer (`tokenizers.Tokenizer`) trained on `corpus`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus * 20, trainer)
    return tok


@pytest.fixture(scope="session")
def random_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 2-layer GPT-2 with a small byte-level BPE tokenizer (needs no data pack)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("random-gpt2")
    tok = byte_level_bpe(RANDOM_MODEL_CORPUS, ["<|endoftext|>"], 400)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    torch.manual_seed(0)
    eos = fast.eos_token_id
    cfg = GPT2Config(
        vocab_size=len(fast),
        n_positions=256,
        n_embd=64,
        n_layer=2,
        n_head=4,
        initializer_range=0.2,
        eos_token_id=eos,
        bos_token_id=eos,
    )
    GPT2LMHeadModel(cfg).save_pretrained(out)
    fast.save_pretrained(out)
    return out


CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHAT_CORPUS = RANDOM_MODEL_CORPUS + [
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "<|im_start|>assistant\nHello! How can I help?<|im_end|>\n",
    "The weather in Paris is sunny. Name? Bot. Item 3 is blue.",
]


def build_chat_model(out: Path, arch: str = "llama") -> Path:
    """An untrained 2-layer causal LM whose tokenizer has a ChatML chat template (EOS <|im_end|>)."""
    import torch
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = byte_level_bpe(CHAT_CORPUS, specials, 500)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
    )
    fast.chat_template = CHATML_TEMPLATE
    torch.manual_seed(0)
    ids = {"eos_token_id": fast.eos_token_id, "bos_token_id": fast.bos_token_id}
    if arch == "gpt2":
        cfg = GPT2Config(
            vocab_size=len(fast), n_positions=256, n_embd=64, n_layer=2, n_head=4, **ids
        )
        model = GPT2LMHeadModel(cfg)
    else:
        cfg = LlamaConfig(
            vocab_size=len(fast),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            pad_token_id=fast.pad_token_id,
            **ids,
        )
        model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


@pytest.fixture(scope="session", params=["llama", "gpt2"])
def chat_model_dir(request, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained Llama or GPT-2 with a ChatML chat template (needs no data pack)."""
    return build_chat_model(tmp_path_factory.mktemp(f"chat-{request.param}"), request.param)
