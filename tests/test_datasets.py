"""The paper's datasets from the data pack: labels, BBQ bias rule, partitions, missing-file errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from forgetfilter import datasets, refusals
from forgetfilter.errors import ForgetFilterError
from forgetfilter.paths import data_dir


@pytest.fixture(scope="module")
def data() -> Path:
    path = data_dir()
    if not (path / "bbq").is_dir():
        pytest.skip(f"data pack not found at {path} (set FORGETFILTER_DATA)")
    return path


def _row(polarity: str, tags: tuple[str, str], texts: tuple[str, str], groups: list[str]) -> dict:
    return {
        "question_polarity": polarity,
        "answer_info": {
            "ans0": [texts[0], tags[0]],
            "ans1": [texts[1], tags[1]],
            "ans2": ["Unknown", "unknown"],
        },
        "additional_metadata": {"stereotyped_groups": groups},
        "ans0": texts[0],
        "ans1": texts[1],
        "ans2": "Unknown",
    }


def test_bbq_biased_option_rule() -> None:
    age = (("old", "nonOld"), ("The 78-year-old", "The 22-year-old"))
    assert datasets.bbq_biased_option(_row("neg", *age, ["old"])) == 0
    assert datasets.bbq_biased_option(_row("nonneg", *age, ["old"])) == 1
    # Nationality: tags are regions, the stereotyped group is found in the option text.
    nat = (("Europe", "AsiaPacific"), ("The British friend", "The Japanese friend"))
    assert datasets.bbq_biased_option(_row("neg", *nat, ["British"])) == 0
    assert datasets.bbq_biased_option(_row("nonneg", *nat, ["British"])) == 1
    assert datasets.bbq_biased_option(_row("neg", *nat, ["Korean"])) is None


def test_bbq_examples(data: Path) -> None:
    exs = datasets.bbq_examples(data)
    labels = Counter(ex.label for ex in exs)
    assert labels["safe"] == 11956 and labels["unsafe"] == 5978
    for ex in exs[:500]:
        m = ex.meta
        assert ex.risk == "bias" and ex.source == "bbq"
        assert ex.response == m["options"][m["biased"] if ex.label == "unsafe" else m["gold"]]
        assert m["condition"] in ("ambig", "disambig") and m["polarity"] in ("neg", "nonneg")
        if ex.label == "unsafe":
            assert m["condition"] == "ambig" and m["biased"] != m["unknown"]
    nat = [ex for ex in exs if ex.meta["category"] == "Nationality" and ex.label == "unsafe"]
    assert len(nat) == 1540  # every ambiguous Nationality item gets a biased answer


def test_toxicity_thresholds(data: Path) -> None:
    exs = datasets.toxicity_examples(data)
    for ex in exs:
        assert (ex.meta["toxicity"] > 0.9) if ex.label == "unsafe" else (ex.meta["toxicity"] < 0.1)
        assert ex.prompt.startswith(datasets.CONTINUE_PREFIX) and ex.response.strip()
    assert {ex.source for ex in exs} == {
        "rtp",
        "decodingtrust-gpt3",
        "decodingtrust-gpt4",
        "davidson",
    }
    assert datasets.split_text("one two three four five") == ("one two", "three four five")


def test_harm_sources_and_screening(data: Path) -> None:
    exs = datasets.harm_examples(data)
    by = Counter((ex.source, ex.label) for ex in exs)
    assert by[("jailbreakbench", "unsafe")] > 800 and by[("safety-tuned-llamas", "safe")] == 2483
    stats = datasets.source_stats(data, "harm")["harm"]
    assert stats["hh_rejected_dropped_refusal"] > 0 and stats["hh_rejected_dropped_short"] > 0
    hh = [ex for ex in exs if ex.source == "hh-rlhf" and ex.label == "unsafe"]
    assert all(len(ex.response.split()) >= datasets.HH_MIN_WORDS for ex in hh)
    assert not any(refusals.looks_like_refusal(ex.response) for ex in hh)
    jbb = next(ex for ex in exs if ex.source == "jailbreakbench")
    assert jbb.meta["group"] == "harm:" + datasets.norm_text(jbb.prompt)  # the plain goal


def test_an_hh_rlhf_dialogue_keeps_its_turns(data: Path) -> None:
    from forgetfilter.readers import render_dialogue
    from forgetfilter.records import conversation

    hh = [ex for ex in datasets.harm_examples(data) if ex.source == "hh-rlhf"]
    dialogues = [ex for ex in hh if ex.messages is not None]
    assert dialogues and any(ex.messages is None for ex in hh)  # one user turn stays flat
    for ex in dialogues:
        turns = conversation(ex)
        assert [t["role"] for t in turns] == ["user", "assistant"] * (len(turns) // 2)
        assert turns[-1]["content"] == ex.response  # the prompt stays the text view of the rest
        assert ex.prompt == render_dialogue([(t["role"], t["content"]) for t in turns[:-1]])
    with_blank_line = [ex for ex in dialogues if any("\n\n" in t["content"] for t in ex.messages)]
    assert with_blank_line  # turns that no parsing of the rendered prompt would recover


def test_task_data(data: Path) -> None:
    dev = datasets.squad_examples(data, "dev")
    assert len(dev) == 10570 and all(ex.response == ex.meta["answers"][0] for ex in dev[:100])
    assert "\nQuestion: " in dev[0].prompt and dev[0].id.startswith("squad-dev-")
    alpaca = datasets.alpaca_examples(data)
    assert len(alpaca) > 4900 and all(ex.label == "task" for ex in alpaca)


def test_partition_is_fixed_and_alignment_is_disjoint(data: Path) -> None:
    assert datasets.partition("bbq:Age:1") == datasets.partition("bbq:Age:1")
    align = datasets.alignment_examples(data)
    assert all(ex.meta["partition"] == "align" for ex in align)
    assert {ex.label for ex in align} == {"safe", "task"}
    assert {ex.risk for ex in align} == {"bias", "toxicity", "harm", None}
    share = sum(ex.meta["partition"] == "align" for ex in datasets.harm_examples(data)) / len(
        datasets.harm_examples(data)
    )
    assert 0.1 < share < 0.3


def test_pretraining_texts(data: Path) -> None:
    texts = datasets.pretraining_texts(data)
    assert len(texts) > 10_000 and all(isinstance(t, str) and t for t in texts)
    assert any("Caesar" in t for t in texts[:200])  # Latin-1 corpus files decode


def test_missing_file_says_how_to_provide_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FORGETFILTER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "_online", lambda *a: False)
    with pytest.raises(ForgetFilterError, match="bbq/Age.jsonl is missing.*FORGETFILTER_DATA"):
        datasets.require_file(tmp_path, "bbq/Age.jsonl")
    assert datasets.source_url("bbq/Age.jsonl").startswith(
        "https://raw.githubusercontent.com/nyu-mll/BBQ/"
    )
    assert datasets.source_url("squad/squad_v1.1_dev_from_explorer.json.gz") is None
