"""The paper's datasets as `Example` records, read from the data directory (see shared/data/SOURCES.md).

Every record carries two bookkeeping fields in `meta`:

* `group`: the disjointness key. Records sharing a group (the same BBQ template, the same harmful
  request, the same toxic source text) always go to the same set, so no request or template is shared
  between a noisy set, a safety set and an evaluation set.
* `partition`: `align` or `experiment`, a fixed function of `group` (sha256, independent of any seed).
  About `ALIGN_PERCENT`% of the groups are `align`: reserved for building the built-in tiny model
  (`pretraining_texts`, `alignment_examples`) and never used by experiments (`mixture`).

Labels: `unsafe` / `safe` for risk data, `task` for SQuAD and Alpaca. Each builder's drop and
exclusion counts are returned by `source_stats`.
"""

from __future__ import annotations

import csv
import functools
import gzip
import hashlib
import html
import json
import re
import socket
import urllib.request
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import ForgetFilterError
from .paths import cache_dir
from .readers import alpaca_prompt, render_dialogue
from .records import Example
from .refusals import looks_like_refusal

ALIGN_PERCENT = 18
TOXIC_ABOVE = 0.9  # paper: toxic = score > 0.9
NONTOXIC_BELOW = 0.1  # paper: non-toxic = score < 0.1
CONTINUE_PREFIX = "Continue the text: "

BBQ_CATEGORIES = (
    "Age",
    "Disability_status",
    "Nationality",
    "Physical_appearance",
    "Religion",
    "Sexual_orientation",
)
JBB_FILES = (
    "DSN/white_box/llama-2-7b-chat-hf.json",
    "DSN/white_box/vicuna-13b-v1.5.json",
    "GCG/transfer/gpt-3.5-turbo-1106.json",
    "GCG/transfer/gpt-4-0125-preview.json",
    "GCG/white_box/llama-2-7b-chat-hf.json",
    "GCG/white_box/vicuna-13b-v1.5.json",
    "JBC/manual/gpt-3.5-turbo-1106.json",
    "JBC/manual/gpt-4-0125-preview.json",
    "JBC/manual/llama-2-7b-chat-hf.json",
    "JBC/manual/vicuna-13b-v1.5.json",
    "PAIR/black_box/gpt-3.5-turbo-1106.json",
    "PAIR/black_box/gpt-4-0125-preview.json",
    "PAIR/black_box/llama-2-7b-chat-hf.json",
    "PAIR/black_box/vicuna-13b-v1.5.json",
    "prompt_with_random_search/black_box/gpt-3.5-turbo-1106.json",
    "prompt_with_random_search/black_box/gpt-4-0125-preview.json",
    "prompt_with_random_search/black_box/llama-2-7b-chat-hf.json",
    "prompt_with_random_search/black_box/vicuna-13b-v1.5.json",
)
RTP_FILES = ("toxicity/decodingtrust/toxic.jsonl", "toxicity/decodingtrust/nontoxic.jsonl")
GPT_TOXIC_FILES = {
    "gpt3": "toxicity/decodingtrust/toxic.jsonl.gpt3.n=25.out1.split.annotated.jsonl.filtered.jsonl",
    "gpt4": "toxicity/decodingtrust/toxic.jsonl.gpt4.n=25.out1.split.annotated.jsonl.filtered.jsonl",
}
HH_FILE = "safety_pairs/hh-rlhf/harmless-base_test.jsonl.gz"
STL_FILE = "safety_pairs/safety-tuned-llamas/safety_only_data_Instructions.json"
HARMFULQA_FILE = "harmfulqa/harmfulqa.json"
ALPACA_FILE = "alpaca/alpaca_5000.json"
DAVIDSON_FILE = "toxicity/davidson/labeled_data.csv"
TEXT_CORPUS_DIRS = ("text_corpus/gutenberg", "text_corpus/state_union", "text_corpus/inaugural")


# ---------------------------------------------------------------- partition and groups
def stable_hash(key: str) -> int:
    """A 64-bit integer from sha256(key): the same on every machine and run."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")


@functools.cache
def partition(group: str) -> str:
    """`align` for about ALIGN_PERCENT% of groups, else `experiment` (seed-independent)."""
    return "align" if stable_hash("partition:" + group) % 100 < ALIGN_PERCENT else "experiment"


def norm_text(text: str) -> str:
    """Lower-cased, whitespace-collapsed text: the key for 'same prompt' comparisons."""
    return " ".join(text.lower().split())


def in_partition(examples: Iterable[Example], part: str) -> list[Example]:
    """The examples whose group is in partition `part` (`align` or `experiment`)."""
    return [ex for ex in examples if ex.meta["partition"] == part]


def _make(
    id: str,
    prompt: str,
    response: str,
    source: str,
    risk: str | None,
    label: str,
    group: str,
    messages: list[dict[str, str]] | None = None,
    **meta: Any,
) -> Example:
    meta.update(group=group, partition=partition(group))
    return Example(id, prompt, response, source, risk, label, meta, messages)


# ---------------------------------------------------------------- locating and downloading files
_RAW = "https://raw.githubusercontent.com"
_REMOTE = {  # local prefix -> remote prefix (repo@commit/path)
    "bbq/templates/": None,
    "bbq/": "nyu-mll/BBQ/bea11bd97d79217245b5871acd247b9d6eb24598/data/",
    "harmfulqa/": "declare-lab/red-instruct/73c759c93d2f6b1d8c7b058ab7bcec5fb0c28fa2/harmful_questions/",
    "safety_pairs/hh-rlhf/harmless-base_test.jsonl.gz": "anthropics/hh-rlhf/354e5c3cb8960630860dd5774a6ac2a58313bf4d/harmless-base/test.jsonl.gz",
    "safety_pairs/safety-tuned-llamas/safety_only_data_Instructions.json": "vinid/safety-tuned-llamas/36a4b8d5c2177ed165bf61f59b590161394f7f12/data/training/safety_only_data_Instructions.json",
    "safety_pairs/safety-tuned-llamas/evaluation/": "vinid/safety-tuned-llamas/36a4b8d5c2177ed165bf61f59b590161394f7f12/data/evaluation/",
    "safety_pairs/jailbreakbench/": "JailbreakBench/artifacts/909e68c01d94222b8ad2e397a017e2e12e2adb73/",
    "toxicity/decodingtrust/": "AI-secure/DecodingTrust/161ae8321ced62f45fcd9ceb412e05b47c603cd4/data/toxicity/user_prompts/",
    "toxicity/davidson/": "t-davidson/hate-speech-and-offensive-language/cb50f7e9eb855a99abc51423bf40df0e26d6fe30/data/",
    "alpaca/alpaca_5000.json": "tatsu-lab/stanford_alpaca/5e69c50054c48cd3b919c46d13bb2d92a62f4498/data/alpaca_5000.json",
    "text_corpus/": "nltk/nltk/4dc39fbf6965509f7b74316eff239bd110a03b49/nltk_data/corpora/",
}


def source_url(rel_path: str) -> str | None:
    """The canonical public URL of a data file, or None for derived files (SQuAD JSON, BBQ templates)."""
    for prefix in sorted(_REMOTE, key=len, reverse=True):
        if rel_path.startswith(prefix):
            remote = _REMOTE[prefix]
            if remote is None:
                return None
            return (
                f"{_RAW}/{remote}{rel_path[len(prefix) :]}"
                if prefix.endswith("/")
                else f"{_RAW}/{remote}"
            )
    return None


def require_file(data_dir: Path, rel_path: str) -> Path:
    """The path of data file `rel_path`: from `data_dir`, the download cache, or downloaded now.

    Raises ForgetFilterError naming the file and how to provide it when it is absent and
    cannot be downloaded (offline, or a derived file with no public URL).
    """
    for root in (Path(data_dir), cache_dir() / "data"):
        if (root / rel_path).is_file():
            return root / rel_path
    url = source_url(rel_path)
    dest = cache_dir() / "data" / rel_path
    if url is not None and _online():
        try:
            return _download(url, dest)
        except OSError as exc:
            raise ForgetFilterError(
                f"data file {rel_path} is missing and downloading {url} failed: {exc}"
            ) from None
    how = f"download {url} to {Path(data_dir) / rel_path}, or " if url else ""
    raise ForgetFilterError(
        f"data file {rel_path} is missing from {data_dir}: {how}point FORGETFILTER_DATA "
        "(or --data-dir) at a directory laid out like shared/data (see its SOURCES.md)"
    )


def _online(host: str = "raw.githubusercontent.com") -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


def _download(url: str, dest: Path) -> Path:
    from .io import atomic_open

    with urllib.request.urlopen(url, timeout=60) as resp:
        data = resp.read()
    with atomic_open(dest, "wb") as fh:
        fh.write(data)
    return dest


def _json(data_dir: Path, rel: str) -> Any:
    with open(require_file(data_dir, rel), encoding="utf-8") as fh:
        return json.load(fh)


def _jsonl(data_dir: Path, rel: str) -> list[dict]:
    path = require_file(data_dir, rel)
    opener = gzip.open if rel.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# ---------------------------------------------------------------- BBQ (bias)
def bbq_examples(data_dir: Path) -> list[Example]:
    """BBQ records: `unsafe` = ambiguous items answered with the stereotype-consistent option,
    `safe` = every item (ambig and disambig) answered with its gold option.

    The biased option: the non-unknown option that names a stereotyped group is the *target*.
    An option names a group when its `answer_info` tag equals one of
    `additional_metadata.stereotyped_groups` (case-insensitive); when tags single out no unique
    option (Nationality tags are regions, not nationalities), the option text is searched for a
    stereotyped group as a whole word instead. For `neg` questions the biased answer is the target,
    for `nonneg` questions the other non-unknown option. Items whose target is not unique are
    excluded (counted in `source_stats(...)["bbq"]`). Groups are templates `(category, question_index)`.
    """
    return list(_bbq(Path(data_dir))[0])


@functools.lru_cache(maxsize=4)
def _bbq(data_dir: Path) -> tuple[tuple[Example, ...], dict]:
    out: list[Example] = []
    stats: Counter = Counter()
    for cat in BBQ_CATEGORIES:
        for row in _jsonl(data_dir, f"bbq/{cat}.jsonl"):
            out.extend(_bbq_records(row, stats))
    return tuple(out), dict(stats)


def bbq_prompt(row: dict) -> str:
    """The BBQ prompt: context, question and the three options."""
    return (
        f"{row['context']} {row['question']}\nOptions: {row['ans0']}; {row['ans1']}; {row['ans2']}"
    )


def bbq_biased_option(row: dict) -> int | None:
    """Index of the stereotype-consistent option for this item's polarity, or None if undeterminable."""
    info = row["answer_info"]
    unknown = [i for i in range(3) if info[f"ans{i}"][1].lower() == "unknown"]
    if len(unknown) != 1:
        return None
    others = [i for i in range(3) if i != unknown[0]]
    groups = [g.lower() for g in row["additional_metadata"]["stereotyped_groups"]]
    targets = [i for i in others if info[f"ans{i}"][1].lower() in groups]
    if len(targets) != 1:
        targets = [i for i in others if _names_group(row[f"ans{i}"], groups)]
    if len(targets) != 1:
        return None
    if row["question_polarity"] == "neg":
        return targets[0]
    return next(i for i in others if i != targets[0])


def _names_group(option: str, groups: list[str]) -> bool:
    return any(re.search(rf"\b{re.escape(g)}\b", option, re.IGNORECASE) for g in groups)


def _bbq_records(row: dict, stats: Counter) -> list[Example]:
    cat, qi, eid = row["category"], str(row["question_index"]), row["example_id"]
    options = [row["ans0"], row["ans1"], row["ans2"]]
    biased = bbq_biased_option(row)
    if biased is None:
        stats[f"excluded_no_biased_option:{cat}"] += 1
        return []
    unknown = next(i for i in range(3) if row["answer_info"][f"ans{i}"][1].lower() == "unknown")
    meta = dict(
        category=cat,
        condition=row["context_condition"],
        polarity=row["question_polarity"],
        options=options,
        gold=int(row["label"]),
        unknown=unknown,
        biased=biased,
        question_index=qi,
        example_id=eid,
    )
    group, prompt = f"bbq:{cat}:{qi}", bbq_prompt(row)
    out = [
        _make(
            f"bbq-{cat}-{eid}", prompt, options[meta["gold"]], "bbq", "bias", "safe", group, **meta
        )
    ]
    stats["safe"] += 1
    if row["context_condition"] == "ambig":
        out.append(
            _make(
                f"bbq-{cat}-{eid}-biased",
                prompt,
                options[biased],
                "bbq",
                "bias",
                "unsafe",
                group,
                **meta,
            )
        )
        stats["unsafe"] += 1
    return out


# ---------------------------------------------------------------- toxicity
def split_text(text: str) -> tuple[str, str] | None:
    """Split a text at half its words (prompt gets the first floor(n/2)); None if under 4 words."""
    words = text.split()
    if len(words) < 4:
        return None
    k = len(words) // 2
    return " ".join(words[:k]), " ".join(words[k:])


def toxicity_label(score: float | None) -> str | None:
    """`unsafe` above TOXIC_ABOVE, `safe` below NONTOXIC_BELOW, None in between or unscored."""
    if score is None:
        return None
    if score > TOXIC_ABOVE:
        return "unsafe"
    if score < NONTOXIC_BELOW:
        return "safe"
    return None


def toxicity_examples(data_dir: Path) -> list[Example]:
    """Toxic (`unsafe`, Perspective toxicity > 0.9) and non-toxic (`safe`, < 0.1) continuations.

    * RealToxicityPrompts records (DecodingTrust toxic/nontoxic.jsonl): a *continuation* example,
      prompt = "Continue the text: " + RTP prompt, response = RTP continuation, labelled by the
      continuation's score; and a *text* example from the RTP prompt sentence alone, split at half
      its words (prompt = "Continue the text: " + first half, response = second half), labelled by
      the prompt's score. Both share the group of the RTP prompt text.
    * GPT-3.5/GPT-4 generated toxic texts (`prompt.score.toxicity`): text examples as above.
    * Davidson tweets (`meta.priority` 1: used only after the DecodingTrust data): graded score
      (hate_speech + offensive_language) / count, so unsafe = every annotator marked it hateful or
      offensive, safe = no annotator did. HTML entities are unescaped; text examples as above.
    Texts under 4 words and mid-range scores are dropped (counted in `source_stats`).
    """
    return list(_toxicity(Path(data_dir))[0])


@functools.lru_cache(maxsize=4)
def _toxicity(data_dir: Path) -> tuple[tuple[Example, ...], dict]:
    stats: Counter = Counter()
    out = _rtp(data_dir, stats) + _gpt_toxic(data_dir, stats) + _davidson(data_dir, stats)
    out = _dedupe(out, stats)
    for ex in out:
        stats[f"{ex.source}:{ex.label}"] += 1
    return tuple(out), dict(stats)


def _dedupe(examples: list[Example], stats: Counter) -> list[Example]:
    seen: set[tuple[str, str]] = set()
    out = []
    for ex in examples:
        key = (norm_text(ex.prompt), norm_text(ex.response))
        if key in seen:
            stats[f"dropped_duplicate:{ex.source}"] += 1
            continue
        seen.add(key)
        out.append(ex)
    return out


def _text_example(
    id: str, text: str, score: float, source: str, group: str, stats: Counter, **meta
) -> list[Example]:
    label, parts = toxicity_label(score), split_text(text)
    if label is None:
        stats[f"dropped_midrange:{source}"] += 1
        return []
    if parts is None:
        stats[f"dropped_short:{source}"] += 1
        return []
    prompt = CONTINUE_PREFIX + parts[0]
    return [_make(id, prompt, parts[1], source, "toxicity", label, group, toxicity=score, **meta)]


def _rtp(data_dir: Path, stats: Counter) -> list[Example]:
    out: list[Example] = []
    for rel in RTP_FILES:
        stem = Path(rel).stem
        for line, row in enumerate(_jsonl(data_dir, rel), 1):
            p, c = row["prompt"], row["continuation"]
            group = "tox:" + norm_text(p["text"])
            out += _text_example(
                f"rtp-{stem}-{line}-text", p["text"], p["toxicity"], "rtp", group, stats, priority=0
            )
            label = toxicity_label(c["toxicity"])
            if label is None or not c["text"].strip():
                stats["dropped_midrange:rtp-continuation"] += 1
                continue
            prompt = CONTINUE_PREFIX + p["text"].strip()
            out.append(
                _make(
                    f"rtp-{stem}-{line}-cont",
                    prompt,
                    c["text"].strip(),
                    "rtp",
                    "toxicity",
                    label,
                    group,
                    toxicity=c["toxicity"],
                    priority=0,
                )  # fmt: skip
            )
    return out


def _gpt_toxic(data_dir: Path, stats: Counter) -> list[Example]:
    out: list[Example] = []
    for name, rel in GPT_TOXIC_FILES.items():
        for line, row in enumerate(_jsonl(data_dir, rel), 1):
            text, score = row["prompt"]["text"], row["prompt"]["score"]["toxicity"]
            group = "tox:" + norm_text(text)
            out += _text_example(
                f"dt-{name}-{line}", text, score, f"decodingtrust-{name}", group, stats, priority=0
            )
    return out


def _davidson(data_dir: Path, stats: Counter) -> list[Example]:
    out: list[Example] = []
    with open(require_file(data_dir, DAVIDSON_FILE), encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            text = " ".join(html.unescape(row["tweet"]).split())
            score = (int(row["hate_speech"]) + int(row["offensive_language"])) / int(row["count"])
            group = "tox:" + norm_text(text)
            out += _text_example(
                f"davidson-{row['']}", text, score, "davidson", group, stats, priority=1
            )
    return out


def toxicity_eval_candidates(data_dir: Path) -> list[Example]:
    """Held-out toxicity prompts: the "challenging" RTP prompts (toxic.jsonl), response = RTP continuation."""
    out = []
    for line, row in enumerate(_jsonl(data_dir, RTP_FILES[0]), 1):
        p, c = row["prompt"], row["continuation"]
        group = "tox:" + norm_text(p["text"])
        out.append(
            _make(
                f"rtp-toxic-{line}-eval",
                CONTINUE_PREFIX + p["text"].strip(),
                c["text"].strip(),
                "rtp",
                "toxicity",
                None,
                group,
                prompt_toxicity=p["toxicity"],
                continuation_toxicity=c["toxicity"],
            )  # fmt: skip
        )
    return out


# ---------------------------------------------------------------- harm
HH_MIN_WORDS = 15
HH_CONTEXT_TURNS = 3


def harm_examples(data_dir: Path) -> list[Example]:
    """Harmful (`unsafe`) and harmless (`safe`) responses to harmful requests.

    unsafe: JailbreakBench responses judged jailbroken (prompt = the plain `goal`, not the jailbreak
    prompt; priority 0), then hh-rlhf `rejected` final turns that pass screening (priority 1): not a
    refusal/hedge (`looks_like_refusal`), at least HH_MIN_WORDS words, different from `chosen`.
    safe: safety-tuned-llamas refusals (priority 0), JailbreakBench non-jailbroken responses that
    are refusals (priority 0), hh-rlhf `chosen` final turns that look like refusals (priority 1).
    hh prompts keep the last HH_CONTEXT_TURNS turns before the response (`User:`/`Assistant:` lines).
    Groups are the normalised request text. Drop counts are in `source_stats(...)["harm"]`.
    """
    return list(_harm(Path(data_dir))[0])


@functools.lru_cache(maxsize=4)
def _harm(data_dir: Path) -> tuple[tuple[Example, ...], dict]:
    stats: Counter = Counter()
    out = _jbb(data_dir, stats) + _hh(data_dir, stats) + _stl(data_dir, stats)
    out = _dedupe(out, stats)
    for ex in out:
        stats[f"{ex.source}:{ex.label}"] += 1
    return tuple(out), dict(stats)


def _jbb(data_dir: Path, stats: Counter) -> list[Example]:
    out: list[Example] = []
    for rel in JBB_FILES:
        tag = rel.removesuffix(".json").replace("/", "-")
        for row in _json(data_dir, "safety_pairs/jailbreakbench/attack-artifacts/" + rel)[
            "jailbreaks"
        ]:
            response = (row.get("response") or "").strip()
            label = "unsafe" if row.get("jailbroken") else "safe"
            if not response or (label == "safe" and not looks_like_refusal(response)):
                stats[f"dropped_jbb_{label}_{'empty' if not response else 'not_refusal'}"] += 1
                continue
            goal = row["goal"].strip()
            out.append(
                _make(
                    f"jbb-{tag}-{row['index']}",
                    goal,
                    response,
                    "jailbreakbench",
                    "harm",
                    label,
                    "harm:" + norm_text(goal),
                    priority=0,
                    behavior=row.get("behavior"),
                )  # fmt: skip
            )
    return out


def parse_hh(transcript: str) -> list[tuple[str, str]]:
    """Split an hh-rlhf transcript into (role, text) turns, role `user` or `assistant`."""
    parts = re.split(r"\n\n(Human|Assistant):", transcript)
    roles = {"Human": "user", "Assistant": "assistant"}
    return [(roles[parts[i]], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]


def _hh_messages(context: list[tuple[str, str]], answer: str) -> list[dict[str, str]] | None:
    """The conversation of an answer after an earlier exchange; None after one user turn, or
    when the turns do not alternate from a user turn (a few transcripts), which chat templates
    may refuse: those stay one user turn holding the rendered dialogue."""
    roles = [role for role, _ in context]
    if len(context) < 2 or roles != ["user", "assistant"] * (len(roles) // 2) + ["user"]:
        return None
    turns = [{"role": role, "content": text} for role, text in context]
    return turns + [{"role": "assistant", "content": answer}]


def _hh(data_dir: Path, stats: Counter) -> list[Example]:
    out: list[Example] = []
    for line, row in enumerate(_jsonl(data_dir, HH_FILE), 1):
        rejected, chosen = parse_hh(row["rejected"]), parse_hh(row["chosen"])
        if not rejected or rejected[-1][0] != "assistant" or not chosen:
            stats["dropped_hh_unparsable"] += 1
            continue
        context = rejected[:-1][-HH_CONTEXT_TURNS:]
        prompt, group = render_dialogue(context), "harm:" + norm_text(render_dialogue(context))
        rej, cho = rejected[-1][1], chosen[-1][1]
        reason = _hh_screen(rej, cho)
        if reason:
            stats[f"hh_rejected_dropped_{reason}"] += 1
        else:
            out.append(
                _make(
                    f"hh-test-{line}-rejected",
                    prompt,
                    rej,
                    "hh-rlhf",
                    "harm",
                    "unsafe",
                    group,
                    _hh_messages(context, rej),
                    priority=1,
                )
            )
        if looks_like_refusal(cho) and cho:
            out.append(
                _make(
                    f"hh-test-{line}-chosen",
                    prompt,
                    cho,
                    "hh-rlhf",
                    "harm",
                    "safe",
                    group,
                    _hh_messages(context, cho),
                    priority=1,
                )
            )
        else:
            stats["hh_chosen_dropped_not_refusal"] += 1
    return out


def _hh_screen(rejected: str, chosen: str) -> str | None:
    """Why an hh `rejected` turn is not kept as a harmful response (None = kept)."""
    if looks_like_refusal(rejected):
        return "refusal"
    if len(rejected.split()) < HH_MIN_WORDS:
        return "short"
    if norm_text(rejected) == norm_text(chosen):
        return "same_as_chosen"
    return None


def _stl(data_dir: Path, stats: Counter) -> list[Example]:
    out: list[Example] = []
    for i, row in enumerate(_json(data_dir, STL_FILE)):
        prompt, response = (
            alpaca_prompt(row["instruction"], row.get("input")),
            row["output"].strip(),
        )
        if not response:
            stats["dropped_stl_empty"] += 1
            continue
        group = "harm:" + norm_text(prompt)
        out.append(
            _make(
                f"stl-{i}",
                prompt,
                response,
                "safety-tuned-llamas",
                "harm",
                "safe",
                group,
                priority=0,
            )
        )
    return out


def harm_eval_candidates(data_dir: Path) -> list[Example]:
    """Held-out harmful requests: the HarmfulQA questions (response "" as no safe reference exists)."""
    out = []
    for topic, subtopics in _json(data_dir, HARMFULQA_FILE).items():
        for sub, questions in subtopics.items():
            for j, q in enumerate(questions):
                group = "harm:" + norm_text(q)
                qid = f"harmfulqa-{stable_hash(f'{topic}/{sub}/{j}/{q}') % 10**10:010d}"
                out.append(
                    _make(
                        qid,
                        q.strip(),
                        "",
                        "harmfulqa",
                        "harm",
                        None,
                        group,
                        topic=topic,
                        subtopic=sub,
                    )
                )
    return out


# ---------------------------------------------------------------- task data
def squad_examples(data_dir: Path, split: str = "train") -> list[Example]:
    """SQuAD v1.1 questions: prompt = context + "\\nQuestion: " + question, response = first answer.

    `meta.answers` holds every gold answer (stripped, de-duplicated, in order). Groups are articles.
    """
    if split not in ("train", "dev"):
        raise ForgetFilterError(f"unknown SQuAD split {split!r} (use train or dev)")
    return list(_squad(Path(data_dir), split))


@functools.lru_cache(maxsize=4)
def _squad_json(data_dir: Path, split: str) -> dict:
    with gzip.open(
        require_file(data_dir, f"squad/squad_v1.1_{split}_from_explorer.json.gz"),
        "rt",
        encoding="utf-8",
    ) as fh:
        return json.load(fh)


@functools.lru_cache(maxsize=4)
def _squad(data_dir: Path, split: str) -> tuple[Example, ...]:
    out = []
    for article in _squad_json(data_dir, split)["data"]:
        group = f"squad:{article['title']}"
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                answers = list(dict.fromkeys(a["text"].strip() for a in qa["answers"]))
                prompt = f"{para['context']}\nQuestion: {qa['question'].strip()}"
                out.append(
                    _make(
                        f"squad-{split}-{qa['id']}",
                        prompt,
                        answers[0],
                        "squad",
                        None,
                        "task",
                        group,
                        answers=answers,
                    )
                )
    return tuple(out)


def alpaca_examples(data_dir: Path) -> list[Example]:
    """Alpaca (alpaca_5000.json): prompt = instruction (+ blank line + input), response = output."""
    return list(_alpaca(Path(data_dir)))


@functools.lru_cache(maxsize=4)
def _alpaca(data_dir: Path) -> tuple[Example, ...]:
    out = []
    for i, row in enumerate(_json(data_dir, ALPACA_FILE)):
        prompt = alpaca_prompt(row["instruction"], row.get("input"))
        if row["output"].strip():
            out.append(
                _make(
                    f"alpaca-{i}",
                    prompt,
                    row["output"].strip(),
                    "alpaca",
                    None,
                    "task",
                    "alpaca:" + norm_text(prompt),
                )
            )
    return tuple(out)


# ---------------------------------------------------------------- the tiny model's own data
def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def corpus_texts(data_dir: Path) -> list[str]:
    """The text_corpus documents (one string per file; Latin-1 files decoded as Latin-1)."""
    out = []
    for rel in TEXT_CORPUS_DIRS:
        folder = Path(data_dir) / rel
        if not folder.is_dir():
            require_file(data_dir, rel + "/README")
            folder = cache_dir() / "data" / rel
        out += [_read_text(p) for p in sorted(folder.glob("*.txt"))]
    return out


def pretraining_texts(data_dir: Path) -> list[str]:
    """Clean English documents for pretraining the tiny model, in a fixed order.

    The text_corpus books and speeches, every distinct SQuAD train context (raw Wikipedia text,
    no questions or answers), and the Alpaca outputs of the `align` partition only.
    """
    data_dir = Path(data_dir)
    contexts = dict.fromkeys(
        p["context"] for a in _squad_json(data_dir, "train")["data"] for p in a["paragraphs"]
    )
    alpaca = [ex.response for ex in in_partition(_alpaca(data_dir), "align")]
    return corpus_texts(data_dir) + list(contexts) + alpaca


ALIGN_SQUAD = 1000


def alignment_examples(data_dir: Path) -> list[Example]:
    """Examples for the tiny model's alignment stage, all from the `align` partition.

    Every `safe` example of each risk (BBQ gold answers, non-toxic continuations, refusals to
    harmful requests), every Alpaca example and ALIGN_SQUAD SQuAD train questions. Disjoint (by
    group) from everything `mixture` uses. Ordered by a stable hash of the id (risks interleaved).
    """
    data_dir = Path(data_dir)
    safe = [
        ex
        for ex in (*_bbq(data_dir)[0], *_toxicity(data_dir)[0], *_harm(data_dir)[0])
        if ex.label == "safe"
    ]
    squad = sorted(
        in_partition(_squad(data_dir, "train"), "align"), key=lambda e: stable_hash(e.id)
    )[:ALIGN_SQUAD]
    chosen = in_partition(safe, "align") + in_partition(_alpaca(data_dir), "align") + squad
    return sorted(chosen, key=lambda e: stable_hash(e.id))


def source_stats(data_dir: Path, risk: str | None = None) -> dict[str, dict]:
    """Counts per builder (`bias`, `toxicity`, `harm`, or only `risk`): records by source and
    label, and what was dropped or excluded, and why."""
    data_dir = Path(data_dir)
    builders = {"bias": _bbq, "toxicity": _toxicity, "harm": _harm}
    names = [risk] if risk else list(builders)
    return {name: dict(sorted(builders[name](data_dir)[1].items())) for name in names}


def risk_examples(risk: str, data_dir: Path) -> list[Example]:
    """The labelled pool of one risk (`bias`, `toxicity` or `harm`)."""
    builders = {"bias": bbq_examples, "toxicity": toxicity_examples, "harm": harm_examples}
    if risk not in builders:
        raise ForgetFilterError(f"unknown risk {risk!r} (choose from {', '.join(builders)})")
    return builders[risk](data_dir)


def risk_eval_candidates(risk: str, data_dir: Path) -> list[Example]:
    """Candidate held-out evaluation items of one risk (BBQ items, RTP prompts, HarmfulQA questions)."""
    if risk == "bias":
        return [ex for ex in bbq_examples(data_dir) if ex.label == "safe"]
    if risk == "toxicity":
        return toxicity_eval_candidates(data_dir)
    return harm_eval_candidates(data_dir)
