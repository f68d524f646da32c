"""Offline toxicity and harmfulness classifiers, cached, with a measured held-out AUROC.

`get_scorer("toxicity")` returns Detoxify('original') when the `detoxify` package is installed and its
weights load offline; otherwise (the usual case here) a scikit-learn classifier trained reproducibly on
the data pack: TF-IDF word 1–2-grams + char_wb 2–5-grams, then class-balanced logistic regression.
`get_scorer("harm")` trains the same kind of model on harmful vs safe *responses*; a Hugging Face guard
model id (e.g. `meta-llama/Llama-Guard-3-1B`) can be used instead via `GuardScorer`.

Training data (files under `data_dir()`, see `shared/data/SOURCES.md`):

* toxicity — toxic: Davidson tweets of class 0/1 (hate speech / offensive; subsampled), RealToxicityPrompts
  prompt and continuation texts (DecodingTrust) with Perspective toxicity > 0.5, GPT-3.5/4 toxic
  sentences; non-toxic: Davidson class 2, RealToxicityPrompts texts with toxicity ≤ 0.5, and Alpaca
  reference outputs (clean assistant-style prose, so that "GPT style" is not learned as toxic).
* harm — harmful: JailbreakBench responses judged jailbroken, and hh-rlhf `rejected` final turns from
  pairs whose `chosen` turn refuses and whose `rejected` turn does not (the screen); safe: those
  `chosen` refusals, safety-tuned-llamas safe answers to harmful requests, JailbreakBench refusals, and
  Alpaca reference outputs (benign helpful prose, so that "not a refusal" is not learned as harmful).

The held-out split is grouped (one group per request / source text, so near-duplicate responses to one
JailbreakBench goal never straddle train and test) and stratified (`StratifiedGroupKFold`, fixed seed,
first of 5 folds = 20 % test). The fitted model and a JSON card (name, counts, AUROC, seconds) are cached
as `cache_dir()/classifiers/<kind>-<hash of data files + config>.{joblib,json}`, written atomically.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from . import io, paths
from .errors import ConfigError, InputError
from .refusals import is_refusal

CLASSIFIER_VERSION = 1
KINDS = ("toxicity", "harm")
# The training sources of each kind (`LabelledText.source`), which `holdout_sources` may name.
SOURCES = {
    "toxicity": ("davidson", "rtp", "gpt", "alpaca"),
    "harm": ("jailbreakbench", "hh-rlhf", "safety-tuned-llamas", "alpaca"),
}


# ---------------------------------------------------------------- scorer interface
class Scorer(Protocol):
    """Scores texts with a probability of being toxic / harmful."""

    name: str
    auroc: float | None

    def score(self, texts: Sequence[str], prompts: Sequence[str] | None = None) -> np.ndarray:
        """Probabilities in [0, 1], one per text (`prompts`: the requests, used by guard models)."""
        ...


@dataclass(frozen=True)
class ClassifierConfig:
    """How the scikit-learn classifier is trained.

    Attributes:
        seed: seed for subsampling and the train/test split.
        n_folds: the test split is the first fold of a `StratifiedGroupKFold` with this many folds.
        max_train: cap on training examples (seeded subsample), e.g. for fast tests; None = all.
        max_per_source: cap per (source, label) pool before the split, to keep sources balanced.
        c: inverse regularisation strength of the logistic regression.
        word_ngrams / char_ngrams: n-gram ranges of the two TF-IDF views.
        max_features: vocabulary cap of each TF-IDF view.
        holdout_sources: training sources left out entirely (`SOURCES`), to measure the
            classifier on a kind of data it has never seen.
    """

    seed: int = 0
    n_folds: int = 5
    max_train: int | None = None
    max_per_source: int = 5000
    c: float = 4.0
    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (2, 5)
    max_features: int = 200_000
    holdout_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class LabelledText:
    """One training text: `label` 1 = toxic/harmful, `group` keeps related texts on one split side."""

    text: str
    label: int
    source: str
    group: str


class SklearnScorer:
    """A fitted scikit-learn text classifier with its held-out AUROC."""

    def __init__(self, name: str, pipeline: Any, card: dict[str, Any]):
        self.name = name
        self.pipeline = pipeline
        self.card = card
        self.auroc: float | None = card.get("auroc")

    def score(self, texts: Sequence[str], prompts: Sequence[str] | None = None) -> np.ndarray:
        """P(toxic/harmful) per text; `prompts` is ignored (response-only model)."""
        if len(texts) == 0:
            return np.zeros(0, dtype=float)
        return self.pipeline.predict_proba([t or "" for t in texts])[:, 1].astype(float)


class DetoxifyScorer:
    """Detoxify('original') toxicity (Hanu & Unitary, 2020), used when installed and loadable offline."""

    def __init__(self, model: Any):
        self.model = model
        self.name = "detoxify-original"
        self.auroc: float | None = None  # not measured on this project's split

    def score(self, texts: Sequence[str], prompts: Sequence[str] | None = None) -> np.ndarray:
        """Detoxify `toxicity` probability per text."""
        if len(texts) == 0:
            return np.zeros(0, dtype=float)
        return np.asarray(self.model.predict(list(texts))["toxicity"], dtype=float)


class GuardScorer:
    """A Hugging Face guard model (Llama Guard style) as a harm scorer.

    The request/response pair is rendered with the model's chat template; the score is the
    probability of the "unsafe" verdict relative to "safe" at the first verdict token.
    """

    def __init__(self, model_id: str, device: str | None = None):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:  # pragma: no cover - transformers is a dependency
            raise ConfigError(f"guard model {model_id!r} needs transformers: {exc}") from None
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_id)
            self.model = AutoModelForCausalLM.from_pretrained(model_id)
        except Exception as exc:
            raise ConfigError(
                f"cannot load guard model {model_id!r} (not cached locally and no hub access?): {exc}"
            ) from None
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self.name = model_id
        self.auroc: float | None = None
        self._safe_id = self._first_token("safe")
        self._unsafe_id = self._first_token("unsafe")

    def _first_token(self, word: str) -> int:
        return self.tokenizer.encode(word, add_special_tokens=False)[0]

    def _render(self, prompt: str, response: str) -> str:
        chat = [
            {"role": "user", "content": [{"type": "text", "text": prompt}]},
            {"role": "assistant", "content": [{"type": "text", "text": response}]},
        ]
        try:
            text = self.tokenizer.apply_chat_template(chat, tokenize=False)
        except Exception:
            plain = [{"role": m["role"], "content": m["content"][0]["text"]} for m in chat]
            text = self.tokenizer.apply_chat_template(plain, tokenize=False)
        return text + "\n\n"

    def score(self, texts: Sequence[str], prompts: Sequence[str] | None = None) -> np.ndarray:
        """P(unsafe) per response (with its request when `prompts` is given)."""
        import torch

        from .devices import attention_backends

        prompts = prompts if prompts is not None else [""] * len(texts)
        out = []
        for prompt, text in zip(prompts, texts, strict=True):
            ids = self.tokenizer(self._render(prompt, text), return_tensors="pt").to(self.device)
            with torch.no_grad(), attention_backends(self.device):
                logits = self.model(**ids).logits[0, -1]
            pair = torch.stack([logits[self._safe_id], logits[self._unsafe_id]]).float()
            out.append(float(torch.softmax(pair, dim=0)[1]))
        return np.asarray(out, dtype=float)


# ---------------------------------------------------------------- data loading
def _read_jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _require(path: Path) -> Path:
    if not path.exists():
        raise InputError(
            "classifier training file is missing (see shared/data/SOURCES.md)", str(path)
        )
    return path


def _davidson(root: Path) -> list[LabelledText]:
    path = _require(root / "toxicity" / "davidson" / "labeled_data.csv")
    out = []
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            label = 0 if row["class"] == "2" else 1
            out.append(LabelledText(row["tweet"], label, "davidson", row["tweet"]))
    return out


def _rtp(root: Path) -> list[LabelledText]:
    out = []
    for name in ("toxic.jsonl", "nontoxic.jsonl"):
        for i, rec in enumerate(_read_jsonl(_require(root / "toxicity" / "decodingtrust" / name))):
            for part in ("prompt", "continuation"):
                d = rec.get(part) or {}
                if d.get("toxicity") is None or not d.get("text", "").strip():
                    continue
                label = int(d["toxicity"] > 0.5)
                out.append(LabelledText(d["text"].strip(), label, "rtp", f"{name}:{i}"))
    return out


def _gpt_toxic(root: Path) -> list[LabelledText]:
    out = []
    for path in sorted((root / "toxicity" / "decodingtrust").glob("toxic.jsonl.gpt*.jsonl")):
        for rec in _read_jsonl(path):
            p = rec.get("prompt") or {}
            score = (p.get("score") or {}).get("toxicity")
            if score is None or not p.get("text", "").strip():
                continue
            out.append(LabelledText(p["text"].strip(), int(score > 0.5), "gpt", p["text"]))
    return out


def _alpaca_outputs(root: Path, n: int, seed: int) -> list[LabelledText]:
    path = root / "alpaca" / "alpaca_5000.json"
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        recs = json.load(fh)
    texts = [r["output"].strip() for r in recs if r.get("output", "").strip()]
    random.Random(seed).shuffle(texts)
    return [LabelledText(t, 0, "alpaca", t) for t in texts[:n]]


def _final_turns(transcript: str) -> tuple[str, str]:
    """(first human turn, final assistant turn) of an hh-rlhf transcript (`datasets.parse_hh`)."""
    from .datasets import parse_hh

    turns = parse_hh(transcript)
    first = next((text for role, text in turns if role == "user"), "")
    return first, turns[-1][1] if turns and turns[-1][0] == "assistant" else ""


def _hh_rlhf(root: Path) -> list[LabelledText]:
    path = _require(root / "safety_pairs" / "hh-rlhf" / "harmless-base_test.jsonl.gz")
    out = []
    for rec in _read_jsonl(path):
        human, chosen = _final_turns(rec["chosen"])
        _, rejected = _final_turns(rec["rejected"])
        if not chosen or not rejected or chosen == rejected:
            continue
        if is_refusal(chosen) and not is_refusal(rejected):
            out.append(LabelledText(rejected, 1, "hh-rlhf", human))
            out.append(LabelledText(chosen, 0, "hh-rlhf", human))
    return out


def _jailbreakbench(root: Path) -> list[LabelledText]:
    base = root / "safety_pairs" / "jailbreakbench" / "attack-artifacts"
    if not base.exists():
        raise InputError(
            "classifier training folder is missing (see shared/data/SOURCES.md)", str(base)
        )
    out = []
    for path in sorted(base.rglob("*.json")):
        if path.name == "attack-info.json":
            continue
        with open(path, encoding="utf-8") as fh:
            recs = json.load(fh).get("jailbreaks", [])
        for rec in recs:
            resp = (rec.get("response") or "").strip()
            if not resp:
                continue
            if rec.get("jailbroken"):
                out.append(LabelledText(resp, 1, "jailbreakbench", rec["goal"]))
            elif is_refusal(resp):
                out.append(LabelledText(resp, 0, "jailbreakbench", rec["goal"]))
    return out


def _safety_llamas(root: Path) -> list[LabelledText]:
    path = _require(
        root / "safety_pairs" / "safety-tuned-llamas" / "safety_only_data_Instructions.json"
    )
    with open(path, encoding="utf-8") as fh:
        recs = json.load(fh)
    return [
        LabelledText(r["output"].strip(), 0, "safety-tuned-llamas", r["instruction"])
        for r in recs
        if r.get("output", "").strip()
    ]


def load_training_texts(
    kind: str, data_dir: str | Path | None, cfg: ClassifierConfig
) -> list[LabelledText]:
    """The labelled texts for `kind`, capped per (source, label) and de-duplicated (conflicts dropped)."""
    root = paths.data_dir(data_dir)
    if kind == "toxicity":
        rows = (
            _davidson(root) + _rtp(root) + _gpt_toxic(root) + _alpaca_outputs(root, 2000, cfg.seed)
        )
    elif kind == "harm":
        rows = _jailbreakbench(root) + _hh_rlhf(root) + _safety_llamas(root)
        rows += _alpaca_outputs(root, 1500, cfg.seed)
    else:
        raise ConfigError(f"unknown classifier kind {kind!r} (choose from {', '.join(KINDS)})")
    unknown = sorted(set(cfg.holdout_sources) - set(SOURCES[kind]))
    if unknown:
        raise ConfigError(
            f"holdout_sources: no {kind} training source {', '.join(unknown)} "
            f"(choose from {', '.join(SOURCES[kind])})"
        )
    rows = [r for r in rows if r.source not in cfg.holdout_sources]
    return _cap_per_source(_dedupe(rows), cfg.max_per_source, cfg.seed)


def _dedupe(rows: list[LabelledText]) -> list[LabelledText]:
    labels: dict[str, set[int]] = {}
    for r in rows:
        labels.setdefault(r.text, set()).add(r.label)
    seen: set[str] = set()
    out = []
    for r in rows:
        if len(labels[r.text]) == 1 and r.text not in seen:
            seen.add(r.text)
            out.append(r)
    return out


def _cap_per_source(rows: list[LabelledText], cap: int, seed: int) -> list[LabelledText]:
    pools: dict[tuple[str, int], list[LabelledText]] = {}
    for r in rows:
        pools.setdefault((r.source, r.label), []).append(r)
    out = []
    for key in sorted(pools):
        pool = pools[key]
        if len(pool) > cap:
            pool = random.Random(f"{seed}:{key}").sample(pool, cap)
        out.extend(pool)
    return out


# ---------------------------------------------------------------- training
def split_indices(
    rows: Sequence[LabelledText], cfg: ClassifierConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: grouped, stratified, seeded; test = the first of `n_folds` folds."""
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.array([r.label for r in rows])
    groups = np.array([hashlib.sha1(f"{r.source}:{r.group}".encode()).hexdigest() for r in rows])
    folds = StratifiedGroupKFold(n_splits=cfg.n_folds, shuffle=True, random_state=cfg.seed)
    train, test = next(folds.split(np.zeros(len(rows)), y, groups))
    if cfg.max_train is not None and len(train) > cfg.max_train:
        train = np.sort(np.random.default_rng(cfg.seed).choice(train, cfg.max_train, replace=False))
    return train, test


def build_pipeline(cfg: ClassifierConfig) -> Any:
    """TF-IDF (word + char_wb n-grams, sublinear tf) → class-balanced logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    common = {
        "sublinear_tf": True,
        "min_df": 2,
        "max_features": cfg.max_features,
        "lowercase": True,
    }
    features = FeatureUnion(
        [
            ("word", TfidfVectorizer(analyzer="word", ngram_range=cfg.word_ngrams, **common)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=cfg.char_ngrams, **common)),
        ]
    )
    clf = LogisticRegression(
        C=cfg.c, class_weight="balanced", max_iter=2000, solver="liblinear", random_state=cfg.seed
    )
    return Pipeline([("features", features), ("clf", clf)])


def train_classifier(
    kind: str,
    data_dir: str | Path | None = None,
    cfg: ClassifierConfig | None = None,
    exclude: Sequence[str] = (),
) -> SklearnScorer:
    """Train (no cache) and measure held-out AUROC overall and per source.

    Training texts that contain any of `exclude` (see `drop_overlap`) are left out, e.g. the
    responses a classifier filter is about to judge.
    """
    from .metrics import auroc

    cfg = cfg or ClassifierConfig()
    start = time.perf_counter()
    rows = load_training_texts(kind, data_dir, cfg)
    n_loaded = len(rows)
    rows = drop_overlap(rows, exclude)
    train, test = split_indices(rows, cfg)
    pipe = build_pipeline(cfg)
    pipe.fit([rows[i].text for i in train], [rows[i].label for i in train])
    probs = pipe.predict_proba([rows[i].text for i in test])[:, 1]
    labels = [rows[i].label for i in test]
    per_source = {}
    for src in sorted({rows[i].source for i in test}):
        sel = [j for j, i in enumerate(test) if rows[i].source == src]
        per_source[src] = {
            "n_test": len(sel),
            "n_positive": int(sum(labels[j] for j in sel)),
            "auroc": auroc([labels[j] for j in sel], probs[sel]),
        }
    card = {
        "kind": kind,
        "name": f"tfidf-logreg-{kind}",
        "config": asdict(cfg),
        "n_train": len(train),
        "n_test": len(test),
        "n_train_positive": int(sum(rows[i].label for i in train)),
        "n_test_positive": int(sum(labels)),
        "auroc": auroc(labels, probs),
        "per_source": per_source,
        "train_seconds": round(time.perf_counter() - start, 2),
        "version": CLASSIFIER_VERSION,
    }
    if exclude:
        card["n_excluded_texts"] = n_loaded - len(rows)
    return SklearnScorer(card["name"], pipe, card)


MIN_OVERLAP_CHARS = 20


def drop_overlap(rows: list[LabelledText], texts: Sequence[str]) -> list[LabelledText]:
    """`rows` without those whose text contains one of `texts` (stripped; texts shorter than
    MIN_OVERLAP_CHARS must match a whole row exactly, so short answers do not knock out rows)."""
    long = [t.strip() for t in texts if len(t.strip()) >= MIN_OVERLAP_CHARS]
    short = {t.strip() for t in texts if 0 < len(t.strip()) < MIN_OVERLAP_CHARS}
    return [r for r in rows if r.text.strip() not in short and not any(t in r.text for t in long)]


# ---------------------------------------------------------------- cache and entry point
_DATA_FILES = {
    "toxicity": (
        "toxicity/davidson/labeled_data.csv",
        "toxicity/decodingtrust/toxic.jsonl",
        "toxicity/decodingtrust/nontoxic.jsonl",
        "toxicity/decodingtrust/toxic.jsonl.gpt3.n=25.out1.split.annotated.jsonl.filtered.jsonl",
        "toxicity/decodingtrust/toxic.jsonl.gpt4.n=25.out1.split.annotated.jsonl.filtered.jsonl",
        "alpaca/alpaca_5000.json",
    ),
    "harm": (
        "safety_pairs/hh-rlhf/harmless-base_test.jsonl.gz",
        "safety_pairs/safety-tuned-llamas/safety_only_data_Instructions.json",
        "alpaca/alpaca_5000.json",
    ),
}


def _fingerprint(kind: str, root: Path, cfg: ClassifierConfig) -> str:
    """Hash of the training files' bytes, the config and the code version."""
    config = asdict(cfg)
    if not config["holdout_sources"]:  # caches made before the field existed stay valid
        del config["holdout_sources"]
    h = hashlib.sha256(f"{kind}:{CLASSIFIER_VERSION}:{io.dumps(config)}".encode())
    files = [root / f for f in _DATA_FILES[kind]]
    if kind == "harm":
        base = root / "safety_pairs" / "jailbreakbench" / "attack-artifacts"
        files += sorted(base.rglob("*.json")) if base.exists() else []
    for path in files:
        h.update(str(path.relative_to(root)).encode())
        if path.exists():
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def _texts_hash(texts: Sequence[str]) -> str:
    return hashlib.sha256(io.dumps(sorted(set(texts))).encode()).hexdigest()[:12]


def cached_classifier(
    kind: str,
    data_dir: str | Path | None = None,
    cfg: ClassifierConfig | None = None,
    exclude: Sequence[str] = (),
) -> SklearnScorer:
    """Load the cached classifier for (data, config, exclusions) or train and cache it atomically."""
    import joblib

    cfg = cfg or ClassifierConfig()
    root = paths.data_dir(data_dir)
    if kind not in KINDS:
        raise ConfigError(f"unknown classifier kind {kind!r} (choose from {', '.join(KINDS)})")
    key = _fingerprint(kind, root, cfg) + (f"-x{_texts_hash(exclude)}" if exclude else "")
    stem = paths.cache_dir() / "classifiers" / f"{kind}-{key}"
    model_path, card_path = stem.with_suffix(".joblib"), stem.with_suffix(".json")
    if model_path.exists() and card_path.exists():
        try:
            card = io.read_json(card_path)
            return SklearnScorer(card["name"], joblib.load(model_path), card)
        except Exception:  # a corrupt cache entry is retrained below
            pass
    scorer = train_classifier(kind, root, cfg, exclude)
    with io.atomic_open(model_path, "wb") as fh:
        joblib.dump(scorer.pipeline, fh)
    io.write_json(card_path, scorer.card)
    return scorer


def _try_detoxify() -> DetoxifyScorer | None:
    try:
        from detoxify import Detoxify
    except Exception:
        return None
    try:
        return DetoxifyScorer(Detoxify("original", device="cpu"))
    except Exception:  # weights not cached and no network
        return None


_MEMO: dict[tuple, Scorer] = {}


def get_scorer(
    kind: str,
    data_dir: str | Path | None = None,
    *,
    model_id: str | None = None,
    max_train: int | None = None,
    use_detoxify: bool = True,
    exclude: Sequence[str] = (),
    holdout_sources: Sequence[str] = (),
) -> Scorer:
    """A toxicity or harm scorer (memoised per process).

    Args:
        kind: "toxicity" or "harm".
        data_dir: data pack root (default `paths.data_dir()`).
        model_id: for "harm", a Hugging Face guard model id to use instead of the trained classifier.
        max_train: a quick classifier for tests: at most this many training examples, and the
            per-(source, label) pools capped at the same number (so the test split shrinks too).
        use_detoxify: for "toxicity", try Detoxify('original') first.
        exclude: texts the trained classifier must not have seen (training texts containing one
            are dropped, see `drop_overlap`); a pretrained scorer (Detoxify, a guard model) is
            used as it is.
        holdout_sources: training sources the trained classifier leaves out (`SOURCES`), to
            measure it on a source it has not seen; Detoxify is not used then.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown scorer kind {kind!r} (choose from {', '.join(KINDS)})")
    key = (
        kind,
        str(paths.data_dir(data_dir)),
        model_id,
        max_train,
        use_detoxify,
        str(paths.cache_dir()),
        _texts_hash(exclude) if exclude else None,
        tuple(holdout_sources),
    )
    if key not in _MEMO:
        _MEMO[key] = _make_scorer(
            kind, data_dir, model_id, max_train, use_detoxify, exclude, tuple(holdout_sources)
        )
    return _MEMO[key]


def _make_scorer(
    kind: str,
    data_dir: str | Path | None,
    model_id: str | None,
    max_train: int | None,
    use_detoxify: bool,
    exclude: Sequence[str] = (),
    holdout_sources: tuple[str, ...] = (),
) -> Scorer:
    if model_id:
        if kind != "harm":
            raise ConfigError("a guard model id is only supported for the harm scorer")
        return GuardScorer(model_id)
    if kind == "toxicity" and use_detoxify and not holdout_sources:
        detox = _try_detoxify()
        if detox is not None:
            return detox
    cfg = ClassifierConfig(holdout_sources=holdout_sources)
    if max_train is not None:
        cfg = replace(cfg, max_train=max_train, max_per_source=min(cfg.max_per_source, max_train))
    return cached_classifier(kind, data_dir, cfg, exclude)
