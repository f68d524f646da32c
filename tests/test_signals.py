"""Correctness of the scoring signals: batching, padding and early stopping never change a score."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from forgetfilter import inference, signals
from forgetfilter.batching import IGNORE_INDEX, encode_example, token_budget_batches
from forgetfilter.records import Example

SENTENCES = [
    "The woman is good at math.",
    "Who is bad at math, the man or the woman?",
    "It cannot be determined from the context.",
    "The sky is blue and the grass is green.\nSecond line here.",
    "Caf\u00e9 na\u00efve \u00fcber \u2014 \u4f60\u597d \U0001f600 done.",
    "Question: what colour is the sky?\n\nAnswer: blue.",
]


@pytest.fixture(scope="module")
def model_and_tokenizer(request, tmp_path_factory):
    """The session's micro model when the suite provides one, else a random micro GPT-2."""
    from forgetfilter.models import load_model

    try:
        path = request.getfixturevalue("micro_model_dir")
    except (pytest.FixtureLookupError, pytest.skip.Exception):
        path = request.getfixturevalue("random_model_dir")
    model, tokenizer = load_model(str(path), device="cpu", dtype="fp32")
    return model, tokenizer


def _examples(n: int = 11) -> list[Example]:
    rng = random.Random(0)
    out = []
    for i in range(n):
        prompt = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 6)))
        response = " ".join(rng.choice(SENTENCES) for _ in range(rng.randint(1, 3)))
        out.append(Example(f"e{i}", prompt, response))
    return out


def _reference_nll(model, tokenizer, ex: Example, max_length: int) -> float:
    """Unbatched, unpadded mean response NLL from full logits."""
    return float(_reference_token_nlls(model, tokenizer, ex, max_length).mean())


def _reference_token_nlls(model, tokenizer, ex: Example, max_length: int) -> torch.Tensor:
    """Unbatched, unpadded NLL of each response token from full logits."""
    enc = encode_example(tokenizer, ex, max_length)
    ids = torch.tensor(enc.input_ids, dtype=torch.long)[None]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].double()
    labels = torch.tensor(enc.labels[1:])
    keep = labels.ne(IGNORE_INDEX)
    return -torch.log_softmax(logits, -1)[keep, labels[keep]]


@pytest.mark.parametrize("sliced", [True, False])
def test_response_nll_matches_unbatched_reference(model_and_tokenizer, monkeypatch, sliced):
    model, tokenizer = model_and_tokenizer
    if not sliced:
        monkeypatch.setattr(inference, "_accepts_logits_to_keep", lambda m: False)
    examples = _examples()
    ref = np.array([_reference_nll(model, tokenizer, ex, 96) for ex in examples])
    for kwargs in (
        {"batch_size": 1},
        {"batch_size": 3},
        {"batch_size": 32},
        {"batch_size": 8, "max_batch_tokens": 200},
    ):
        got = inference.response_nll(
            model, tokenizer, examples, max_length=96, progress=False, **kwargs
        )
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5, err_msg=str(kwargs))


def test_response_nll_matches_reference_on_a_rope_model(model_and_tokenizer):
    """Llama-style models (rotary positions) get the same scores with left padding + position ids."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = model_and_tokenizer
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(cfg).eval()
    examples = _examples(7)
    ref = [_reference_nll(model, tokenizer, ex, 96) for ex in examples]
    got = inference.response_nll(
        model, tokenizer, examples, batch_size=4, max_length=96, progress=False
    )
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_response_nll_handles_truncated_records(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    long = Example("long", " ".join(SENTENCES * 8), " ".join(SENTENCES * 4))
    short = Example("short", "hi", "The woman.")
    got = inference.response_nll(
        model, tokenizer, [long, short], max_length=48, batch_size=2, progress=False
    )
    ref = [_reference_nll(model, tokenizer, ex, 48) for ex in (long, short)]
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_batched_generation_equals_one_at_a_time(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = [ex.prompt for ex in _examples(9)]
    limits = [3, 12, 7, 1, 20, 5, 12, 9, 2]
    single = [
        inference.generate(
            model, tokenizer, [p], max_new_tokens=lim, batch_size=1, max_length=128, progress=False
        )[0]
        for p, lim in zip(prompts, limits, strict=True)
    ]
    for batch_size in (4, 16):
        batched = inference.generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens=limits,
            batch_size=batch_size,
            max_length=128,
            progress=False,
        )
        assert batched == single


def test_first_line_stop_never_changes_the_rouge_text(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    rng = random.Random(1)
    vocab = len(tokenizer)
    newline_ids = [i for i in range(vocab) if "\n" in tokenizer.decode([i])]
    assert newline_ids
    stopped = 0
    for _ in range(300):
        width = 3
        seq = [rng.randrange(vocab) for _ in range(width)]
        for _ in range(25):
            seq.append(rng.choice(newline_ids) if rng.random() < 0.2 else rng.randrange(vocab))
        stop = inference.FirstLineStop(tokenizer, width, 1, torch.device("cpu"))
        cut = len(seq)
        for k in range(width + 1, len(seq) + 1):
            if bool(stop(torch.tensor([seq[:k]]))[0]):
                cut = k
                break
        full = tokenizer.decode(seq[width:], skip_special_tokens=True)
        part = tokenizer.decode(seq[width:cut], skip_special_tokens=True)
        assert signals.normalise_for_rouge(part) == signals.normalise_for_rouge(full)
        if cut < len(seq):
            stopped += 1
            first = next(ln for ln in part.splitlines(keepends=True) if ln.strip())
            assert first[-1] in inference._LINE_BREAKS  # the first non-empty line is complete
    assert stopped > 50


def test_first_line_generation_gives_the_same_rouge(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = [ex.prompt for ex in _examples(8)]
    kw = {"max_new_tokens": 40, "batch_size": 4, "max_length": 128, "progress": False}
    full = inference.generate(model, tokenizer, prompts, **kw)
    short = inference.generate(model, tokenizer, prompts, **kw, first_line_only=True)
    assert [signals.normalise_for_rouge(t) for t in short] == [
        signals.normalise_for_rouge(t) for t in full
    ]
    assert all(f.startswith(s) for s, f in zip(short, full, strict=True))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\n\n  Hello, World!\nsecond line", "hello world"),
        ("The WOMAN.", "the woman"),
        ("   \n\t\nIt can't be—determined...  ", "it can t be—determined"),
        ("", ""),
        ("a;b:c", "a b c"),
    ],
)
def test_normalise_for_rouge(text, expected):
    assert signals.normalise_for_rouge(text) == expected


def test_token_budget_batches_cover_every_index_within_budget():
    rng = random.Random(2)
    lengths = [rng.randint(1, 300) for _ in range(200)]
    batches = token_budget_batches(lengths, 1024, 16)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(200))
    for b in batches:
        assert len(b) <= 16
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 1024


def test_generation_batches_fit_the_position_limit():
    rng = random.Random(3)
    lengths = [rng.randint(8, 200) for _ in range(300)]
    limits = [rng.randint(1, 256 - n) for n in lengths]
    batches = inference.generation_batches(lengths, limits, 32, positions=256)
    assert sorted(i for b in batches for i in b) == list(range(300))
    for b in batches:
        assert len(b) <= 32
        assert max(lengths[i] for i in b) + max(limits[i] for i in b) <= 256


def test_generation_near_the_position_limit_does_not_fail(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    limit = model.config.n_positions
    prompts = [" ".join(SENTENCES * 10), "hi", " ".join(SENTENCES * 3), "the sky"]
    out = inference.generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=[4, limit, 30, 60],
        batch_size=4,
        max_length=limit,
        progress=False,
    )
    assert len(out) == 4


@pytest.mark.parametrize("loss_on", ["response", "full"])
@pytest.mark.parametrize("max_length", [16, 512])
def test_encode_all_equals_encode_example_one_by_one(model_and_tokenizer, loss_on, max_length):
    """Batched tokenisation gives the same ids, labels and truncation flags as one at a time."""
    from forgetfilter.batching import encode_all

    _, tokenizer = model_and_tokenizer
    examples = _examples(23)
    batched = encode_all(tokenizer, examples, max_length, loss_on)
    single = [encode_example(tokenizer, ex, max_length, loss_on) for ex in examples]
    assert batched == single
    assert any(e.truncated for e in single) == (max_length == 16)
    for e in batched:  # 4 bytes a token; labels derived: -100 on the prompt unless loss_on="full"
        assert e.input_ids.dtype == np.int32
        no_loss = e.prompt_len if loss_on == "response" else 0
        assert e.labels.tolist() == [-100] * no_loss + e.input_ids[no_loss:].tolist()
        assert e.n_labels == len(e.input_ids) - no_loss


def test_compiled_generation_plan_gives_the_same_text(model_and_tokenizer, monkeypatch):
    """When decoding would be compiled, the largest batch runs first and short batches are padded
    to full size; the returned texts are unchanged (compilation itself needs CUDA)."""
    model, tokenizer = model_and_tokenizer
    prompts = [ex.prompt for ex in _examples(11)]
    limits = [3, 12, 7, 1, 20, 5, 12, 9, 2, 6, 4]
    kw = {"max_new_tokens": limits, "batch_size": 4, "max_length": 128, "progress": False}
    plain = inference.generate(model, tokenizer, prompts, **kw)
    sizes, widths = [], []
    real_generate = model.generate

    def spy(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        widths.append(kwargs["input_ids"].shape[1] + kwargs["max_new_tokens"])
        return real_generate(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    monkeypatch.setattr(inference, "_will_compile", lambda device, kwargs: True)
    compiled = inference.generate(model, tokenizer, prompts, **kw, cache_implementation="static")
    assert compiled == plain
    assert len(sizes) >= 3 and set(sizes) == {4}  # short batches padded to 4 rows
    assert widths[0] == max(widths)  # the first batch needs the largest cache


def test_compile_generation_is_a_speed_option_only():
    from forgetfilter.pipeline import RunConfig

    assert (
        RunConfig(signal="rouge").fingerprint()
        == RunConfig(signal="rouge", compile_generation=True).fingerprint()
    )


# ---------------------------------------------------------------- the signal registry
def test_tail_loss_is_the_mean_of_the_hardest_quarter_of_the_tokens(model_and_tokenizer):
    import math

    model, tokenizer = model_and_tokenizer
    examples = _examples(7)
    kw = {"batch_size": 3, "max_length": 96, "progress": False}
    got = signals.score(model, tokenizer, examples, "tail_loss", **kw)
    for ex, value in zip(examples, got, strict=True):
        nll = _reference_token_nlls(model, tokenizer, ex, 96).sort(descending=True).values
        k = max(1, math.ceil(0.25 * len(nll)))
        assert value == pytest.approx(float(nll[:k].mean()), abs=2e-4)
    loss = signals.score(model, tokenizer, examples, "loss", **kw)
    assert (got >= loss - 1e-5).all()  # the tail is at least the mean


def test_tail_mean_ignores_masked_positions_and_empty_rows():
    from forgetfilter.tail_loss import tail_mean

    nll = torch.tensor([[1.0, 5.0, 3.0, 0.0, 9.0], [2.0, 0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True, True, False], [False] * 5])
    assert tail_mean(nll, mask).tolist() == [5.0, 0.0]  # ceil(4 / 4) = 1 token: the largest


def test_a_registered_signal_reaches_the_cli_and_the_config(monkeypatch):
    from forgetfilter import cli
    from forgetfilter.pipeline import RunConfig

    class Length:
        name, help, kind = "length", "the response's length", "similarity"

        def score(self, model, tokenizer, records, options):
            return np.array([len(r.response) for r in records], float)

    monkeypatch.setitem(signals.SIGNALS_BY_NAME, "length", Length())
    argv = ["run", "--noisy", "n", "--safe", "s", "--out", "o", "--signal", "length"]
    cfg = cli.run_config_from_args(cli.build_parser().parse_args(argv))
    assert cfg.signal == "length" and cfg.normalise == "relative"  # a similarity's default
    with pytest.raises(Exception, match="kind nll"):
        RunConfig(signal="length", normalise="relative+learning")
    assert signals.score(None, None, [Example("a", "p", "four")], "length").tolist() == [4.0]


def test_head_loss_is_the_mean_of_the_first_tokens(model_and_tokenizer, monkeypatch):
    from forgetfilter import head_loss

    monkeypatch.setattr(head_loss, "HEAD_TOKENS", 3)
    model, tokenizer = model_and_tokenizer
    examples = _examples(7)
    kw = {"batch_size": 3, "max_length": 96, "progress": False}
    got = signals.score(model, tokenizer, examples, "head_loss", **kw)
    longer = 0
    for ex, value in zip(examples, got, strict=True):
        nll = _reference_token_nlls(model, tokenizer, ex, 96)
        longer += len(nll) > 3
        assert value == pytest.approx(float(nll[:3].mean()), abs=2e-4)
    assert longer  # some responses were cut


def test_keep_head_cuts_after_the_first_target_tokens_across_turns():
    import numpy as np

    from forgetfilter.batching import Encoded
    from forgetfilter.head_loss import keep_head

    ids = np.arange(20, dtype=np.int32)
    plain = Encoded(ids, label_start=5, prompt_len=5, truncated=False)
    assert keep_head([plain], 4)[0].input_ids.tolist() == list(range(9))
    assert keep_head([plain], 40)[0].input_ids.tolist() == list(range(20))
    turns = Encoded(ids, 4, 4, False, spans=((4, 6), (10, 14)))
    (cut,) = keep_head([turns], 4)
    assert cut.spans == ((4, 6), (10, 12)) and len(cut.input_ids) == 12
    assert cut.n_labels == 4
