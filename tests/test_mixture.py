"""Noisy mixtures: exact composition, disjoint sets, eval contracts, byte-identical rebuilds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from forgetfilter.cli import main
from forgetfilter.errors import ConfigError, ForgetFilterError
from forgetfilter.io import read_jsonl
from forgetfilter.mixture import MixtureConfig, build_mixture, mixture_counts
from forgetfilter.paths import data_dir


@pytest.fixture(scope="module")
def data() -> Path:
    path = data_dir()
    if not (path / "bbq").is_dir():
        pytest.skip(f"data pack not found at {path} (set FORGETFILTER_DATA)")
    return path


@pytest.fixture(scope="module", params=["bias", "toxicity", "harm"])
def built(request, data: Path, tmp_path_factory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp(request.param)
    rc = main(["data", "build", "--risk", request.param, "--n", "1000", "--unsafe-ratio", "0.5",
               "--seed", "0", "--out", str(out), "--data-dir", str(data)])  # fmt: skip
    assert rc == 0
    return request.param, out


def _sets(out: Path, risk: str) -> dict[str, list[dict]]:
    names = [
        "noisy.jsonl",
        "safe.jsonl",
        f"eval/{risk}.jsonl",
        "eval/squad.jsonl",
        "eval/alpaca.jsonl",
    ]
    return {name: read_jsonl(out / name) for name in names}


def test_rounding_rule() -> None:
    assert mixture_counts(1000, 0.5) == {"unsafe": 500, "safe": 167, "squad": 167, "alpaca": 166}
    assert mixture_counts(1001, 0.5) == {"unsafe": 501, "safe": 167, "squad": 167, "alpaca": 166}
    assert mixture_counts(10, 0.25) == {"unsafe": 3, "safe": 3, "squad": 2, "alpaca": 2}
    assert sum(mixture_counts(997, 0.3).values()) == 997


def test_composition_is_exact(built: tuple[str, Path]) -> None:
    risk, out = built
    noisy = read_jsonl(out / "noisy.jsonl")
    by = Counter((r["source"], r["label"]) for r in noisy)
    labels = Counter(r["label"] for r in noisy)
    assert len(noisy) == 1000 and labels == {"unsafe": 500, "safe": 167, "task": 333}
    assert by[("squad", "task")] == 167 and by[("alpaca", "task")] == 166
    assert all(r["risk"] == risk for r in noisy if r["label"] != "task")
    assert len({r["id"] for r in noisy}) == 1000
    assert [r["label"] for r in noisy[:20]] != sorted(r["label"] for r in noisy[:20])  # shuffled


def test_sets_are_disjoint_and_experiment_only(built: tuple[str, Path]) -> None:
    risk, out = built
    sets = _sets(out, risk)
    risk_sets = {
        k: v for k, v in sets.items() if k in ("noisy.jsonl", "safe.jsonl", f"eval/{risk}.jsonl")
    }
    groups = {
        k: {r["meta"]["group"] for r in v if r["label"] != "task"} for k, v in risk_sets.items()
    }
    prompts = {k: {r["prompt"] for r in v if r["label"] != "task"} for k, v in risk_sets.items()}
    names = list(risk_sets)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not groups[a] & groups[b], (a, b)
            assert not prompts[a] & prompts[b], (a, b)
    assert all(r["meta"]["partition"] == "experiment" for rows in sets.values() for r in rows)
    if risk == "bias":  # groups are BBQ templates (category, question_index)
        assert all(r["meta"]["group"] == f"bbq:{r['meta']['category']}:{r['meta']['question_index']}"
                   for name in names for r in risk_sets[name] if r["label"] != "task")  # fmt: skip
    alpaca = {r["id"] for r in sets["noisy.jsonl"] if r["source"] == "alpaca"}
    assert not alpaca & {r["id"] for r in sets["eval/alpaca.jsonl"]}


def test_eval_contracts(built: tuple[str, Path]) -> None:
    risk, out = built
    sets = _sets(out, risk)
    assert all(len(rows) == 300 for name, rows in sets.items() if name.startswith("eval/"))
    assert all(
        r["meta"]["answers"] and r["response"] == r["meta"]["answers"][0]
        for r in sets["eval/squad.jsonl"]
    )
    assert all(r["prompt"] and r["response"] for r in sets["eval/alpaca.jsonl"])
    if risk == "bias":
        rows = sets["eval/bias.jsonl"]
        assert {r["meta"]["condition"] for r in rows} == {"ambig", "disambig"}
        keys = {
            "category",
            "condition",
            "polarity",
            "options",
            "gold",
            "unknown",
            "biased",
            "question_index",
        }
        for r in rows:
            m = r["meta"]
            assert (
                keys <= set(m)
                and len(m["options"]) == 3
                and r["response"] == m["options"][m["gold"]]
            )
    else:
        assert all(r["prompt"] and "response" in r for r in sets[f"eval/{risk}.jsonl"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"]["noisy.jsonl"]["n"] == 1000 and manifest["shortfall"] == {}


def test_same_seed_is_byte_identical(data: Path, tmp_path: Path) -> None:
    cfg = MixtureConfig("toxicity", n=200, n_safe=100, n_eval=50, seed=3)
    a = build_mixture(cfg, data, tmp_path / "a")
    b = build_mixture(cfg, data, tmp_path / "b")
    for name in a["files"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a/manifest.json").read_bytes() == (
        tmp_path / "b/manifest.json"
    ).read_bytes()
    assert a["files"]["noisy.jsonl"]["sha256"] == b["files"]["noisy.jsonl"]["sha256"]
    c = build_mixture(
        MixtureConfig("toxicity", n=200, n_safe=100, n_eval=50, seed=4), data, tmp_path / "c"
    )
    assert c["files"]["noisy.jsonl"]["sha256"] != a["files"]["noisy.jsonl"]["sha256"]
    assert (
        c["files"]["eval/toxicity.jsonl"]["sha256"] == a["files"]["eval/toxicity.jsonl"]["sha256"]
    )


def test_shortfall_fails_or_is_recorded(data: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(ForgetFilterError, match="noisy unsafe .harm.: wanted 5000"):
        build_mixture(MixtureConfig("harm", n=10000, n_safe=10, n_eval=10), data, tmp_path / "x")
    m = build_mixture(
        MixtureConfig("harm", n=10000, n_safe=10, n_eval=10, allow_fewer=True), data, tmp_path / "y"
    )
    assert m["shortfall"]["noisy unsafe (harm)"]["wanted"] == 5000
    rc = main(
        [
            "data",
            "build",
            "--risk",
            "bias",
            "--n",
            "10",
            "--unsafe-ratio",
            "2",
            "--out",
            str(tmp_path / "z"),
        ]
    )
    assert rc == 2 and "unsafe-ratio" in capsys.readouterr().err


def test_instruct_composition_and_helpful_answers_in_the_safety_set(
    data: Path, tmp_path: Path
) -> None:
    assert mixture_counts(1000, 0.05, "instruct") == {
        "unsafe": 50,
        "safe": 0,
        "squad": 190,
        "alpaca": 760,
    }
    cfg = MixtureConfig(
        "harm", 200, 0.05, n_safe=30, n_eval=5, composition="instruct", n_helpful=20
    )
    manifest = build_mixture(cfg, data, tmp_path)
    noisy, safe = read_jsonl(tmp_path / "noisy.jsonl"), read_jsonl(tmp_path / "safe.jsonl")
    assert Counter(r["label"] for r in noisy) == {"unsafe": 10, "task": 190}
    assert Counter((r["source"], r["label"]) for r in safe)[("alpaca", "task")] == 20
    assert len(safe) == 50 and sum(r["label"] == "safe" for r in safe) == 30
    texts = lambda rows: {(r["prompt"], r["response"]) for r in rows}  # noqa: E731
    evals = read_jsonl(tmp_path / "eval" / "alpaca.jsonl")
    assert not texts(safe) & texts(noisy) and not texts(safe) & texts(evals)
    assert manifest["config"]["composition"] == "instruct"
    default = build_mixture(MixtureConfig("harm", 20, n_safe=5, n_eval=2), data, tmp_path / "d")
    assert "composition" not in default["config"]  # older manifests keep their form


@pytest.mark.parametrize("composition", ["paper", "instruct"])
def test_trusted_sample_is_clean_exchangeable_and_in_no_other_file(
    data: Path, tmp_path: Path, composition: str
) -> None:
    base = dict(risk="harm", n=200, unsafe_ratio=0.1, n_safe=30, n_eval=5, composition=composition)
    without = build_mixture(MixtureConfig(**base), data, tmp_path / "a")
    assert "trusted.jsonl" not in without["files"] and not (tmp_path / "a/trusted.jsonl").exists()
    manifest = build_mixture(MixtureConfig(**base, n_trusted=60), data, tmp_path / "b")
    trusted = read_jsonl(tmp_path / "b/trusted.jsonl")

    def unsafe(d: Path) -> list[str]:
        return sorted(r["id"] for r in read_jsonl(d / "noisy.jsonl") if r["label"] == "unsafe")

    assert unsafe(tmp_path / "a") == unsafe(tmp_path / "b")  # the unsafe part is drawn as before
    assert len(trusted) == manifest["files"]["trusted.jsonl"]["n"] == 60
    assert not any(r["label"] == "unsafe" for r in trusted)
    want = mixture_counts(60, 0.0, composition)
    by_source = Counter("task" if r["label"] == "task" else "safe" for r in trusted)
    assert by_source["task"] == want["squad"] + want["alpaca"]
    assert by_source["safe"] == want["safe"]
    noisy = read_jsonl(tmp_path / "b/noisy.jsonl")
    others = [read_jsonl(tmp_path / "b/safe.jsonl")]
    others += [read_jsonl(p) for p in (tmp_path / "b/eval").glob("*.jsonl")]
    texts = lambda rows: {(r["prompt"], r["response"]) for r in rows}  # noqa: E731
    groups = lambda rows: {r["meta"]["group"] for r in rows if r["label"] != "task"}  # noqa: E731
    assert not texts(trusted) & texts(noisy)
    for rows in others:  # the safety and evaluation sets stay group-disjoint from it
        assert not texts(trusted) & texts(rows)
        assert not groups(trusted) & groups(rows)
    # one draw split at random: the noisy set's clean part is the rest of the same draw
    clean = [r for r in noisy if r["label"] != "unsafe"]
    assert {r["source"] for r in trusted} == {r["source"] for r in clean}
    if composition == "paper":
        assert groups(trusted) & groups(clean)  # drawn from the same requests
    assert manifest["config"]["n_trusted"] == 60 and "n_trusted" not in without["config"]


def test_unsafe_examples_from_named_sources_only(data: Path, tmp_path: Path, capsys) -> None:
    base = dict(risk="harm", n=200, unsafe_ratio=0.1, n_safe=10, n_eval=2, composition="instruct")
    default = build_mixture(MixtureConfig(**base), data, tmp_path / "a")
    assert default["files"]["noisy.jsonl"]["by_source_label"].get("jailbreakbench:unsafe") == 20
    assert "unsafe_sources" not in default["config"]  # older manifests keep their form
    manifest = build_mixture(
        MixtureConfig(**base, unsafe_sources=("hh-rlhf",)), data, tmp_path / "b"
    )
    noisy = read_jsonl(tmp_path / "b/noisy.jsonl")
    assert Counter(r["source"] for r in noisy if r["label"] == "unsafe") == {"hh-rlhf": 20}
    assert manifest["config"]["unsafe_sources"] == ["hh-rlhf"]
    safe = read_jsonl(tmp_path / "b/safe.jsonl")
    groups = lambda rows: {r["meta"]["group"] for r in rows if r["label"] != "task"}  # noqa: E731
    assert not groups(noisy) & groups(safe)
    rc = main(["data", "build", "--risk", "harm", "--n", "20", "--unsafe-sources", "nowhere",
               "--out", str(tmp_path / "c"), "--data-dir", str(data)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "nowhere" in err and "hh-rlhf" in err and "Traceback" not in err


def test_task_answers_matched_in_length_to_the_unsafe_ones(data: Path, tmp_path: Path) -> None:
    from forgetfilter.metrics import MATCH_RATIO, auroc

    base = dict(risk="harm", n=200, unsafe_ratio=0.1, n_safe=10, n_eval=2, composition="instruct")
    plain = build_mixture(MixtureConfig(**base), data, tmp_path / "a")
    manifest = build_mixture(
        MixtureConfig(**base, n_helpful=5, n_trusted=20, match_lengths=True), data, tmp_path / "b"
    )
    assert "match_lengths" not in plain["config"] and manifest["config"]["match_lengths"]
    noisy = read_jsonl(tmp_path / "b/noisy.jsonl")
    unsafe = [len(r["response"]) for r in noisy if r["label"] == "unsafe"]
    task = [len(r["response"]) for r in noisy if r["label"] == "task"]
    assert len(unsafe) == 20 and len(task) == 180  # the composition's counts, all filled
    # every task answer is within the ratio of some unsafe answer's length, and length no longer
    # separates the two (JailbreakBench's answers are several times Alpaca's in the plain draw)
    assert all(any(t / MATCH_RATIO <= u <= t * MATCH_RATIO for u in unsafe) for t in task)
    labels = [r["label"] == "unsafe" for r in noisy]
    lengths = [len(r["response"]) for r in noisy]
    rows = read_jsonl(tmp_path / "a/noisy.jsonl")
    assert auroc([r["label"] == "unsafe" for r in rows], [len(r["response"]) for r in rows]) > 0.9
    assert 0.4 < auroc(labels, lengths) < 0.6
    # the unsafe part is drawn as without matching; helpful and trusted stay out of the noisy set
    ids = lambda d: sorted(r["id"] for r in read_jsonl(d / "noisy.jsonl") if r["label"] == "unsafe")  # noqa: E731
    assert ids(tmp_path / "a") == ids(tmp_path / "b")
    trusted = read_jsonl(tmp_path / "b/trusted.jsonl")
    helpful = [r for r in read_jsonl(tmp_path / "b/safe.jsonl") if r["label"] == "task"]
    assert len(trusted) == 20 and len(helpful) == 5
    seen = {r["id"] for r in noisy}
    assert not seen & {r["id"] for r in trusted + helpful}
    again = build_mixture(
        MixtureConfig(**base, n_helpful=5, n_trusted=20, match_lengths=True), data, tmp_path / "c"
    )
    assert again["files"]["noisy.jsonl"]["sha256"] == manifest["files"]["noisy.jsonl"]["sha256"]
    with pytest.raises(ConfigError, match="unsafe examples"):  # nothing to match
        build_mixture(
            MixtureConfig(**base | {"unsafe_ratio": 0.0}, match_lengths=True), data, tmp_path
        )
    with pytest.raises(ForgetFilterError, match="length-matched"):  # too few answers that long
        build_mixture(MixtureConfig(**base | {"n": 1000}, match_lengths=True), data, tmp_path / "d")
