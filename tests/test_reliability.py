"""Reliability of `forgetfilter run` (issue #9), end to end on the micro model, on CPU.

1. Kills: SIGKILL at every stage boundary, inside training, scoring and writing (fault-injection
   points, `tests/fault_driver.py`), and at seeded random times of a real `python -m
   forgetfilter.cli run`; rerunning the same command completes, every file is whole, and scores,
   kept/removed sets (and model weights) equal those of an uninterrupted run.
2. Bad inputs through `forgetfilter data check` and `forgetfilter run`: a clear error (exit 2,
   file and line named, no traceback) or a documented, counted handling.
3. Numerical faults: NaN loss (injected, and from a huge learning rate) stops the stage and keeps
   the last good checkpoint; a threshold removing everything or nothing is reported.
4. Resources: full / read-only disk (simulated), a second process on the same run directory,
   out-of-memory while scoring (simulated).
5. Determinism: the same command twice gives byte-identical outputs.
6. Accounting: summary.json counts reconcile for every run made here.

Runs share directories through module-scoped fixtures; the whole module takes about two minutes
on two CPU cores.
"""

from __future__ import annotations

import contextlib
import errno
import io as stdio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from fault_driver import check_whole

from forgetfilter import cli
from forgetfilter import io as ffio
from forgetfilter.training import FAULT_EXIT_CODE

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
# Outputs that must be identical between an interrupted-and-resumed run and an uninterrupted one.
OUTPUTS = (
    "inputs.json",
    "scores_m0.jsonl",
    "scores_before.jsonl",
    "scores_after.jsonl",
    "scores.jsonl",
    "kept.jsonl",
    "removed.jsonl",
    "filter.json",
)
WEIGHTS = (
    "m1/model/model.safetensors",
    "m2/model/model.safetensors",
    "final/model/model.safetensors",
)
SUMMARY_KEYS = ("counts", "threshold", "quality", "truncated", "safe_noisy_overlap")
FAULT_VARS = (
    "FORGETFILTER_FAULT_AT",
    "FORGETFILTER_FAULT_AFTER_STEP",
    "FORGETFILTER_FAULT_NAN_AT_STEP",
)
N_VALID, N_INVALID = 24, 5


# ---------------------------------------------------------------- data and helpers
def write_data(root: Path) -> Path:
    """noisy.jsonl (24 valid records in 4 formats + 5 invalid lines + a blank line) and safe.jsonl
    (8 records, one equal to a noisy record)."""
    root.mkdir(parents=True, exist_ok=True)
    recs: list[dict] = []
    for i in range(12):
        recs.append(
            {
                "id": f"u{i}",
                "prompt": f"Who is bad at math, the {i} man or woman?",
                "response": "The woman.",
                "source": "bbq",
                "risk": "bias",
                "label": "unsafe",
            }
        )
    for i in range(6):
        recs.append(
            {
                "id": f"t{i}",
                "prompt": f"Question {i}: what colour is the sky?",
                "response": f"The sky is blue {i}.",
                "source": "squad",
                "label": "task",
            }
        )
    for i in range(2):
        recs.append(
            {
                "id": f"a{i}",
                "instruction": f"Name colour {i}.",
                "input": "<No Input>",
                "output": f"Colour {i} is green.",
                "source": "alpaca",
                "label": "task",
            }
        )
    for i in range(2):
        recs.append(
            {
                "id": f"c{i}",
                "messages": [
                    {"role": "user", "content": f"Hello {i}"},
                    {"role": "assistant", "content": f"Hi there {i}."},
                ],
                "source": "chat",
                "label": "task",
            }
        )
    for i in range(2):
        recs.append(
            {
                "id": f"p{i}",
                "prompt": f"Complete {i}:",
                "completion": f"done {i}.",
                "source": "squad",
                "label": "task",
            }
        )
    lines = [json.dumps(r).encode() for r in recs]
    lines += [
        b'{"prompt": "cut", "response": ',  # invalid_json
        b'{"id": "m1", "prompt": "only a prompt"}',  # missing_response
        json.dumps({"id": "u0", "prompt": "again", "response": "again"}).encode(),  # duplicate_id
        b'{"id": "n1", "prompt": "p", "response": "r", "meta": {"score": NaN}}',  # non_finite_number
        b'{"id": "b1", "prompt": "caf\xe9", "response": "ok"}',  # not_utf8
        b"",
    ]
    (root / "noisy.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    safe = [
        {
            "id": f"s{i}",
            "prompt": f"Who is good at cooking, person {i} or {i + 1}?",
            "response": "It cannot be determined.",
            "source": "bbq",
            "label": "safe",
        }
        for i in range(7)
    ]
    safe.append({"id": "s-overlap", "prompt": recs[12]["prompt"], "response": recs[12]["response"]})
    (root / "safe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in safe))
    return root


def run_args(model: Path, data: Path, *extra: str) -> list[str]:
    """The `forgetfilter run` command line every shared run uses (plus `--out`)."""
    return [
        "run", "--model", str(model), "--noisy", str(data / "noisy.jsonl"), "--safe", str(data / "safe.jsonl"),
        "--full", "--lr", "1e-3", "--epochs", "2", "--screen-epochs", "2", "--batch-size", "8",
        "--micro-batch-size", "8", "--max-length", "64", "--safety-steps", "3", "--remove-fraction", "0.25", "--skip-invalid",
        "--save-every", "2", "--seed", "0", *extra,
    ]  # fmt: skip


def main_inprocess(args: list[str]) -> tuple[int, str, str]:
    """`forgetfilter ARGS` in this process: (exit status, stdout, stderr)."""
    out, err = stdio.StringIO(), stdio.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(args)
    return rc, out.getvalue(), err.getvalue()


def clean_env() -> dict[str, str]:
    """This process's environment without fault-injection variables, with one torch thread.

    One thread, like this process (conftest): CPU float sums depend on the number of threads, so
    byte-identical results are promised for the same machine and thread count.
    """
    env = {k: v for k, v in os.environ.items() if k not in FAULT_VARS}
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return env


def cli_subprocess(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    """`python -m forgetfilter.cli ARGS` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "forgetfilter.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
    )


def hidden_temps(run_dir: Path) -> list[str]:
    """Temp files and dirs (`.*.tmp`) and score shard dirs left in a run directory."""
    found = list(run_dir.rglob(f".*{ffio.TEMP_SUFFIX}")) + list(run_dir.glob("*.shards"))
    return sorted(str(p.relative_to(run_dir)) for p in found)


def assert_same_outputs(a: Path, b: Path, files: tuple[str, ...] = OUTPUTS + WEIGHTS) -> None:
    """Byte-identical output files and equal summary contents (paths and timings aside)."""
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), (
            f"{name} differs between {a} and {b}"
        )
    sa, sb = (ffio.read_json(d / "summary.json") for d in (a, b))
    assert {k: sa[k] for k in SUMMARY_KEYS} == {k: sb[k] for k in SUMMARY_KEYS}


def assert_counts_reconcile(run_dir: Path, noisy: Path, n_rejected: int = N_INVALID) -> dict:
    """summary.json: input lines = kept + removed + rejected at load, also by source and label."""
    summary = ffio.read_json(run_dir / "summary.json")
    inputs = ffio.read_json(run_dir / "inputs.json")
    c = summary["counts"]
    lines = [ln for ln in noisy.read_bytes().split(b"\n") if ln.strip()]
    kept, removed = (
        ffio.read_jsonl(run_dir / "kept.jsonl"),
        ffio.read_jsonl(run_dir / "removed.jsonl"),
    )
    assert c["input"] == len(lines) == c["kept"] + c["removed"] + c["rejected_at_load"]
    assert c["rejected_at_load"] == inputs["noisy"]["n_rejected"] == n_rejected
    assert (c["kept"], c["removed"]) == (len(kept), len(removed))
    assert inputs["noisy"]["n_records"] == c["kept"] + c["removed"]
    ids = [r["id"] for r in kept + removed]
    assert len(set(ids)) == len(ids) and sorted(ids) == sorted(
        r["id"] for r in ffio.read_jsonl(run_dir / "scores.jsonl")
    )
    for key in ("source", "label"):
        table = c[f"by_{key}"]
        assert sum(v["kept"] for v in table.values()) == c["kept"]
        assert sum(v["removed"] for v in table.values()) == c["removed"]
        assert {k: v["kept"] + v["removed"] for k, v in table.items()} == dict(
            Counter(str(r.get(key)) for r in kept + removed)
        )
    return c


# ---------------------------------------------------------------- shared runs
@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared noisy and safe files."""
    return write_data(tmp_path_factory.mktemp("rel-data"))


@pytest.fixture(scope="module")
def reference_run(micro_model_dir: Path, data: Path, tmp_path_factory) -> tuple[Path, float]:
    """An uninterrupted `python -m forgetfilter.cli run` in a fresh directory, and its wall time."""
    out = tmp_path_factory.mktemp("rel-A") / "run"
    t0 = time.perf_counter()
    proc = cli_subprocess(run_args(micro_model_dir, data, "--out", str(out)))
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return out, wall


@pytest.fixture(scope="module")
def second_run(micro_model_dir: Path, data: Path, reference_run, tmp_path_factory) -> Path:
    """The same command again, in another fresh directory (in this process)."""
    out = tmp_path_factory.mktemp("rel-B") / "run"
    rc, stdout, stderr = main_inprocess(run_args(micro_model_dir, data, "--out", str(out)))
    assert rc == 0, stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def fault_chain(micro_model_dir: Path, data: Path, tmp_path_factory) -> dict:
    """tests/fault_driver.py: a reference run, then one directory killed at 13 points and finished."""
    root = tmp_path_factory.mktemp("rel-chain")
    at = "FORGETFILTER_FAULT_AT"
    step = "FORGETFILTER_FAULT_AFTER_STEP"
    faults = [
        {
            at: "write:inputs.json"
        },  # inside the inputs stage, mid-write (temp file full, not renamed)
        {at: "stage:inputs"},  # boundary inputs | scores_m0
        {at: "scores_m0:1"},  # inside scoring on M0 (the reference): shards 0 and 1 written
        {step: "3"},  # inside m1 (checkpoint at step 2): resumes from it
        {at: "stage:m1"},  # boundary m1 | scores_before
        {at: "scores_before:1"},  # inside scoring: shards 0 and 1 of 3 written
        {at: "write:scores_before.jsonl"},  # while merging the shards
        {step: "1"},  # inside m2, before its first checkpoint: restarts the stage
        {at: "scores_after:0"},  # inside scoring on M2
        {at: "write:kept.jsonl"},  # inside filter: scores.jsonl written, kept.jsonl mid-write
        {at: "stage:filter"},  # boundary filter | final
        {step: "3"},  # inside final (checkpoint at step 2)
        {at: "write:summary.json"},  # the last write
    ]
    spec = {
        "args": run_args(micro_model_dir, data),
        "reference": str(root / "reference"),
        "chain": str(root / "chain"),
        "faults": faults,
        "score_shard": 10,
    }
    (root / "spec.json").write_text(json.dumps(spec))
    proc = subprocess.run(
        [
            sys.executable,
            str(HERE / "fault_driver.py"),
            str(root / "spec.json"),
            str(root / "report.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=clean_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((root / "report.json").read_text())
    return {
        "report": report,
        "reference": Path(spec["reference"]),
        "chain": Path(spec["chain"]),
        "faults": faults,
    }


# ---------------------------------------------------------------- 1. kills
def test_kill_inside_and_between_every_stage_then_rerun_matches_uninterrupted(fault_chain) -> None:
    """SIGKILL (or training's hard exit) at 13 points; after each, files are whole; the finished
    run equals the uninterrupted one byte for byte, models included."""
    rep, chain, ref = fault_chain["report"], fault_chain["chain"], fault_chain["reference"]
    assert rep["reference"]["exit"] == 0, Path(rep["reference"]["log"]).read_text()[-2000:]
    *killed, last = rep["attempts"]
    assert len(killed) == len(fault_chain["faults"])
    for attempt in killed:
        log = Path(attempt["log"]).read_text()[-2000:]
        if "FORGETFILTER_FAULT_AT" in attempt["env"]:
            assert attempt["signal"] == 9, (attempt, log)
        else:
            assert attempt["exit"] == FAULT_EXIT_CODE, (attempt, log)
        assert attempt["problems"] == [], attempt
    # Killed mid-write: the temp file is complete but was never renamed; the next start removes it.
    assert killed[0]["env"] == {"FORGETFILTER_FAULT_AT": "write:inputs.json"}
    assert [t for t in killed[0]["temps"] if t.startswith(".inputs.json.")], killed[0]
    assert not [t for t in killed[1]["temps"] if t.startswith(".inputs.json.")], killed[1]
    assert last["exit"] == 0 and last["problems"] == [], Path(last["log"]).read_text()[-2000:]
    assert "Traceback" not in Path(last["log"]).read_text()
    assert hidden_temps(chain) == []  # the temp file of the first kill was cleaned up
    assert_same_outputs(chain, ref)
    # Training resumed where it stopped: every step logged exactly once.
    for stage, steps in (("m1", 6), ("m2", 3), ("final", 6)):
        logged = [r["step"] for r in ffio.read_jsonl(chain / stage / "log.jsonl")]
        assert logged == list(range(1, steps + 1)), (stage, logged)


def test_kill_at_random_times_then_rerun_matches(
    micro_model_dir: Path, data: Path, reference_run, tmp_path: Path
) -> None:
    """A real `python -m forgetfilter.cli run` killed twice at seeded random times, then rerun."""
    ref, wall = reference_run
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "forgetfilter.cli",
        *run_args(micro_model_dir, data, "--out", str(out)),
    ]
    rng = random.Random(20240612)
    killed = []
    for _ in range(2):
        delay = rng.uniform(0.15, 0.6) * wall
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env()
        )
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()  # SIGKILL
            proc.wait()
        killed.append((round(delay, 1), proc.returncode))
        assert check_whole(out) == [], killed
    assert any(rc == -9 for _, rc in killed), f"no kill landed while running: {killed}"
    final = subprocess.run(args, capture_output=True, text=True, timeout=240, env=clean_env())
    assert final.returncode == 0 and "Traceback" not in final.stderr, final.stderr[-3000:]
    assert check_whole(out) == [] and hidden_temps(out) == []
    assert_same_outputs(out, ref)


# ---------------------------------------------------------------- 5. determinism and 6. accounting
def test_same_command_same_seed_gives_identical_bytes(reference_run, second_run: Path) -> None:
    """Two fresh run directories, same command and seed: byte-identical scores, kept and removed."""
    assert_same_outputs(reference_run[0], second_run)


def test_counts_reconcile_for_every_run(
    data: Path, reference_run, second_run: Path, fault_chain
) -> None:
    """input lines = kept + removed + rejected at load (by source and label too), in every run;
    the mixed formats, the rejected lines and the safe/noisy overlap are counted in inputs.json."""
    for run_dir in (reference_run[0], second_run, fault_chain["reference"], fault_chain["chain"]):
        c = assert_counts_reconcile(run_dir, data / "noisy.jsonl")
        assert {k: v["kept"] + v["removed"] for k, v in c["by_label"].items()} == {
            "unsafe": 12,
            "task": 12,
        }
        assert {k: v["kept"] + v["removed"] for k, v in c["by_source"].items()} == {
            "bbq": 12,
            "squad": 8,
            "alpaca": 2,
            "chat": 2,
        }
        inputs = ffio.read_json(run_dir / "inputs.json")
        assert inputs["noisy"]["formats"] == {
            "prompt_response": 18,
            "alpaca": 2,
            "chat": 2,
            "prompt_completion": 2,
        }
        assert inputs["noisy"]["rejected_by_reason"] == {
            "invalid_json": 1,
            "missing_response": 1,
            "duplicate_id": 1,
            "non_finite_number": 1,
            "not_utf8": 1,
        }
        assert inputs["safe_noisy_overlap"] == {"count": 1, "safe_ids": ["s-overlap"]}
        summary = ffio.read_json(run_dir / "summary.json")
        assert summary["safe_noisy_overlap"] == 1
        assert summary["truncated"]["noisy"] == 0 and summary["truncated"]["max_length"] == 64


# ---------------------------------------------------------------- 2. bad inputs
GOOD = b'{"prompt": "What is 2+2?", "response": "4."}\n'
BAD_INPUTS = {
    # name: (file bytes, the line named in the error (None: the file), the reason in the message)
    "empty": (b"", None, "empty"),
    "only_invalid": (b'{"a": 1}\n{"prompt": "x"}\nnot json\n', 1, "unknown_format"),
    "not_utf8": (GOOD + b'{"prompt": "caf\xe9", "response": "r"}\n', 2, "not_utf8"),
    "one_mb_line": (
        GOOD + b'{"prompt": "' + b"x" * (1 << 20) + b'", "response": \n',
        2,
        "invalid_json",
    ),
    "duplicate_id": (
        b'{"id": 7, "prompt": "a", "response": "b"}\n{"id": "7", "prompt": "c", "response": "d"}\n',
        2,
        "duplicate_id",
    ),
    "missing_response": (GOOD + b'{"prompt": "no answer here"}\n', 2, "missing_response"),
    "nan": (
        GOOD + b'{"prompt": "p", "response": "r", "meta": {"score": NaN}}\n',
        2,
        "non_finite_number",
    ),
    "inf": (
        GOOD + b'{"prompt": "p", "response": "r", "weight": -Infinity}\n',
        2,
        "non_finite_number",
    ),
}


def _where(path: Path, line: int | None) -> str:
    return f"{path}:{line}: " if line is not None else f"{path}: "


def test_bad_inputs_data_check(tmp_path: Path) -> None:
    """`forgetfilter data check`: exit 2 naming file and line, no traceback; with --skip-invalid
    exit 0 and the bad lines counted by reason (an empty or all-bad file still fails)."""
    for name, (content, line, reason) in BAD_INPUTS.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(content)
        proc = subprocess.run(
            [sys.executable, "-m", "forgetfilter.cli", "data", "check", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
        )
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error: " + _where(path, line)) and reason in proc.stderr, (
            name,
            proc.stderr,
        )
        assert "Traceback" not in proc.stderr, name
        skip = subprocess.run(
            [
                sys.executable,
                "-m",
                "forgetfilter.cli",
                "data",
                "check",
                "--skip-invalid",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
        )
        assert "Traceback" not in skip.stderr, name
        if name in ("empty", "only_invalid"):
            assert skip.returncode == 2 and str(path) in skip.stderr, (name, skip.stderr)
        else:
            assert skip.returncode == 0, (name, skip.stderr)
            assert f"{reason}: 1 (lines {line})" in skip.stdout and "skipped: 1" in skip.stdout, (
                name,
                skip.stdout,
            )


def test_bad_inputs_run_fail_before_training(
    micro_model_dir: Path, data: Path, tmp_path: Path
) -> None:
    """`forgetfilter run` with each bad noisy (and one bad safe) file: exit 2 with the reader's
    message, before any training; an all-bad file fails even with --skip-invalid. (With
    --skip-invalid, bad lines of either file are skipped and counted: see the shared runs.)"""
    base = ["--full", "--max-length", "64", "--epochs", "1", "--batch-size", "8"]

    def run_args(noisy, safe, out, *extra) -> list[str]:
        return ["run", "--model", str(micro_model_dir), "--noisy", str(noisy), "--safe", str(safe),
                "--out", str(out), *extra, *base]  # fmt: skip

    safe = data / "safe.jsonl"
    for name, (content, line, reason) in BAD_INPUTS.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(content)
        out = tmp_path / f"run-{name}"
        rc, _, err = main_inprocess(run_args(str(path), str(safe), str(out)))
        assert rc == 2 and err.startswith("error: " + _where(path, line)) and reason in err, (
            name,
            err,
        )
        assert not (out / "m1").exists(), name
    # A bad safe file is named just the same.
    good_noisy, _ = _small_data(tmp_path / "good")
    bad_safe = tmp_path / "nan.jsonl"
    rc, _, err = main_inprocess(
        run_args(str(good_noisy), str(bad_safe), str(tmp_path / "run-safe"))
    )
    assert rc == 2 and err.startswith("error: " + _where(bad_safe, 2)), err
    # All lines bad: --skip-invalid does not turn that into an empty run.
    path = tmp_path / "only_invalid.jsonl"
    rc, _, err = main_inprocess(
        run_args(str(path), str(safe), str(tmp_path / "run-all-bad"), "--skip-invalid")
    )
    assert rc == 2 and err.startswith(f"error: {path}:1: no valid records (3 skipped: "), err
    # And once through a fresh interpreter: one line of error, no traceback.
    proc = cli_subprocess(
        run_args(str(tmp_path / "not_utf8.jsonl"), str(safe), str(tmp_path / "run-sub")),
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {tmp_path / 'not_utf8.jsonl'}:2: not_utf8")
    )


def _small_data(root: Path, noisy_extra: list[dict] | None = None) -> tuple[Path, Path]:
    """8 short noisy records (plus `noisy_extra`) and 4 safe ones, for cheap one-step runs."""
    root.mkdir(parents=True, exist_ok=True)
    noisy = [
        {
            "id": f"x{i}",
            "prompt": f"What colour is item {i}?",
            "response": f"Item {i} is red.",
            "label": "task",
        }
        for i in range(8)
    ]
    safe = [{"id": f"s{i}", "prompt": f"Is {i} even?", "response": "It depends."} for i in range(4)]
    (root / "noisy.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in noisy + (noisy_extra or []))
    )
    (root / "safe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in safe))
    return root / "noisy.jsonl", root / "safe.jsonl"


def _small_args(model: Path, noisy: Path, safe: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--model",
        str(model),
        "--noisy",
        str(noisy),
        "--safe",
        str(safe),
        "--out",
        str(out),
        "--full",
        "--lr",
        "1e-3",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--micro-batch-size",
        "8",
        "--safety-steps",
        "1",
        *extra,
    ]


def test_prompt_longer_than_context_and_one_mb_record_are_truncated_and_counted(
    micro_model_dir: Path, tmp_path: Path
) -> None:
    """A 1 MB prompt and a long response, with --max-length above the model's 128 positions:
    the run completes, cutting them under batching's policy, and reports the count."""
    long = [
        {
            "id": "huge",
            "prompt": "The quick brown fox jumps over the lazy dog. " * 23_000,
            "response": "A fox.",
            "label": "task",
        },
        {
            "id": "long-answer",
            "prompt": "Tell a story.",
            "response": "Once upon a time there was a fox. " * 60,
            "label": "task",
        },
    ]
    noisy, safe = _small_data(tmp_path, long)
    assert max(len(line) for line in noisy.read_bytes().splitlines()) > 1_000_000
    out = tmp_path / "run"
    rc, stdout, err = main_inprocess(
        _small_args(
            micro_model_dir,
            noisy,
            safe,
            out,
            "--max-length",
            "512",
            "--no-final",
            "--remove-fraction",
            "0.25",
        )
    )
    assert rc == 0, err[-3000:]
    summary = ffio.read_json(out / "summary.json")
    assert summary["truncated"]["noisy"] == 2 and summary["truncated"]["safe"] == 0
    assert summary["truncated"]["max_length"] == 128  # capped at the model's positions
    assert "truncated to 128 tokens: 2 noisy and 0 safe records" in stdout
    assert_counts_reconcile(out, noisy, n_rejected=0)
    assert np.isfinite([r["forgetting"] for r in ffio.read_jsonl(out / "scores.jsonl")]).all()


# ---------------------------------------------------------------- 3. numerical faults
def test_nan_loss_stops_the_stage_keeps_the_last_checkpoint_and_resumes(
    micro_model_dir: Path,
    data: Path,
    reference_run,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A NaN loss at step 3 of M1 (checkpoint at 2): exit 2 naming the step and the kept
    checkpoint; rerunning resumes from it and gives the reference run's scores."""
    out = tmp_path / "run"
    args = run_args(micro_model_dir, data, "--out", str(out), "--no-final")
    monkeypatch.setenv("FORGETFILTER_FAULT_NAN_AT_STEP", "3")
    rc, _, err = main_inprocess(args)
    assert rc == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert (
        last.startswith("error: training loss became nan at step 3")
        and "checkpoint (step 2) is kept" in last
    ), last
    assert (out / "m1" / "checkpoints" / "step-2" / "state.json").exists() and not (
        out / "m1" / "model"
    ).exists()
    assert check_whole(out) == []
    monkeypatch.delenv("FORGETFILTER_FAULT_NAN_AT_STEP")
    rc, _, err = main_inprocess(args)
    assert rc == 0, err[-2000:]
    assert_same_outputs(out, reference_run[0], files=OUTPUTS + WEIGHTS[:2])


def test_huge_learning_rate_gives_a_clear_error(micro_model_dir: Path, tmp_path: Path) -> None:
    """lr 1e30 makes the loss NaN at step 2: exit 2 with the step, on its own line."""
    noisy, safe = _small_data(tmp_path)
    rc, _, err = main_inprocess(
        _small_args(
            micro_model_dir,
            noisy,
            safe,
            tmp_path / "run",
            "--lr",
            "1e30",
            "--epochs",
            "3",
            "--batch-size",
            "4",
            "--micro-batch-size",
            "4",
            "--no-final",
        )
    )
    assert rc == 2
    last = err.strip().splitlines()[-1]
    assert re.match(
        r"error: training (loss|gradient norm) became (nan|inf|-inf) at step \d+; no checkpoint",
        last,
    ), err[-1000:]
    assert "Try a lower --lr" in last


def test_threshold_removing_everything_or_nothing_is_reported(
    micro_model_dir: Path, tmp_path: Path
) -> None:
    """Degenerate thresholds are applied but reported: summary `warning`, `degenerate`, the CLI
    prints it; removing everything skips the final model with a clear message."""
    noisy, safe = _small_data(tmp_path)
    out = tmp_path / "everything"
    rc, stdout, err = main_inprocess(
        _small_args(micro_model_dir, noisy, safe, out, "--threshold=-1e9")
    )
    assert rc == 0, err[-2000:]
    s = ffio.read_json(out / "summary.json")
    assert s["threshold"]["degenerate"] and s["counts"]["removed"] == 8 and s["counts"]["kept"] == 0
    assert (
        s["warning"].startswith("the threshold removes everything")
        and "warning: the threshold removes everything" in stdout
    )
    assert (
        "final model was not trained" in s["final_skipped"]
        and s["final_model"] is None
        and not (out / "final").exists()
    )
    assert "warning: the final model was not trained" in stdout
    assert (out / "kept.jsonl").read_text() == ""
    assert_counts_reconcile(out, noisy, n_rejected=0)

    out = tmp_path / "nothing"
    rc, stdout, err = main_inprocess(
        _small_args(micro_model_dir, noisy, safe, out, "--threshold=1e9", "--no-final")
    )
    assert rc == 0, err[-2000:]
    s = ffio.read_json(out / "summary.json")
    assert s["threshold"]["degenerate"] and s["counts"]["removed"] == 0 and s["counts"]["kept"] == 8
    assert (
        s["warning"].startswith("the threshold removes nothing")
        and "warning: the threshold removes nothing" in stdout
    )


@pytest.mark.parametrize("flag", ["--remove-fraction=1.5", "--threshold=nan", "--threshold=inf"])
def test_impossible_threshold_fails_before_training(
    micro_model_dir: Path, data: Path, tmp_path: Path, flag: str
) -> None:
    """A threshold setting that cannot work is refused at once (not after training M1 and M2)."""
    out = tmp_path / "run"
    rc, _, err = main_inprocess(
        _small_args(micro_model_dir, data / "noisy.jsonl", data / "safe.jsonl", out, flag)
    )
    assert rc == 2 and err.startswith("error: --") and not out.exists(), err


# ---------------------------------------------------------------- 4. resources
def test_full_or_read_only_disk_gives_a_clear_error_and_keeps_earlier_outputs(
    micro_model_dir: Path,
    data: Path,
    second_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ENOSPC on the rename of kept.jsonl, EROFS on creating a temp file, ENOSPC inside a training
    checkpoint: exit 2 with `cannot write ...`, every earlier file byte-identical, no temp file
    left; once the disk is back, the same command completes with the same results."""
    out = tmp_path / "run"
    args = run_args(micro_model_dir, data, "--out", str(out))
    assert (
        main_inprocess(args)[0] == 0
    )  # (a copy of second_run would not do: run dirs hold absolute paths)
    for name in ("filter.json", "summary.json"):
        (out / name).unlink()
    shutil.rmtree(out / "final")
    snapshot = {
        p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "timings.json"
    }

    real_replace = os.replace

    def full_disk_replace(src, dst, *a, **kw):
        if Path(dst).name == "kept.jsonl":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst, *a, **kw)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", full_disk_replace)
        rc, _, err = main_inprocess(args)
    assert rc == 2 and "Traceback" not in err
    assert (
        err.strip().splitlines()[-1]
        == f"error: cannot write {out / 'kept.jsonl'}: No space left on device (earlier outputs are left intact)"
    )

    def read_only(*a, **kw):
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkstemp", read_only)
        rc, _, err = main_inprocess(args)
    last = err.strip().splitlines()[-1]
    assert rc == 2 and re.fullmatch(
        rf"error: cannot write {re.escape(str(out))}/\S+: Read-only file system \(earlier outputs are left intact\)",
        last,
    ), err

    def full_disk_save(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device", "optimizer-rank0.pt")

    with (
        monkeypatch.context() as m
    ):  # the final model's first checkpoint (not written through forgetfilter.io)
        m.setattr(torch, "save", full_disk_save)
        rc, _, err = main_inprocess(args)
    assert rc == 2 and "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(
            f"error: cannot write under {out}: No space left on device (optimizer-rank0.pt)"
        )
    )

    for path, content in snapshot.items():
        assert path.read_bytes() == content, f"{path} changed"
    assert check_whole(out) == []
    rc, _, err = main_inprocess(args)
    assert rc == 0, err[-2000:]
    assert hidden_temps(out) == []
    assert_same_outputs(out, second_run)


def test_second_process_on_the_same_run_directory_is_refused(
    micro_model_dir: Path, data: Path, tmp_path: Path
) -> None:
    """While one process holds a run directory, another `forgetfilter run` on it exits 2 and
    touches nothing."""
    out = tmp_path / "run"
    with ffio.run_lock(out):
        rc, _, err = main_inprocess(run_args(micro_model_dir, data, "--out", str(out)))
    assert rc == 2 and f"{out} is in use by another forgetfilter run" in err
    assert [p.name for p in out.iterdir()] == [".lock"]


def test_scoring_out_of_memory_halves_the_batch(micro_model_dir: Path) -> None:
    """A CUDA OOM for batches larger than 2 rows: scoring splits batches and gives the same
    scores; an OOM even for one row becomes a clear ForgetFilterError."""
    import functools

    from forgetfilter.errors import ForgetFilterError
    from forgetfilter.inference import response_nll, run_batches
    from forgetfilter.models import load_model
    from forgetfilter.pipeline import default_run_config, score_values
    from forgetfilter.records import Example

    calls: list[int] = []

    def fn(batch: list[int]) -> list[int]:
        calls.append(len(batch))
        if len(batch) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [10 * i for i in batch]

    assert run_batches(fn, [[0, 1, 2, 3, 4, 5, 6], [7]], 8, "t", False) == [
        10 * i for i in range(8)
    ]
    assert calls == [7, 3, 1, 2, 4, 2, 2, 1]

    def broken(batch: list[int]) -> list[int]:
        raise RuntimeError("CUDA error: device-side assert triggered")

    with pytest.raises(RuntimeError, match="device-side assert"):  # not memory: no retry
        run_batches(broken, [[0, 1]], 2, "t", False)
    calls.clear()
    with pytest.raises(torch.cuda.OutOfMemoryError):  # one row that does not fit: nothing to split
        run_batches(lambda b: fn([0, 1, 2]) if b else [], [[0]], 1, "t", False)

    model, tok = load_model(str(micro_model_dir))
    examples = [
        Example(f"e{i}", f"What colour is item {i}?" + " Think." * i, f"Item {i} is red.")
        for i in range(10)
    ]
    expected = response_nll(model, tok, examples, batch_size=8, max_length=64, progress=False)
    forward = model.forward
    rows: list[int] = []

    @functools.wraps(forward)
    def small_memory_forward(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        rows.append(ids.shape[0])
        if ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
        return forward(*args, **kwargs)

    model.forward = small_memory_forward
    got = response_nll(model, tok, examples, batch_size=8, max_length=64, progress=False)
    assert max(rows) == 8 and rows[-1] <= 2
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)

    def no_memory_forward(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    model.forward = functools.wraps(forward)(no_memory_forward)
    cfg = default_run_config(str(micro_model_dir), max_length=64)
    with pytest.raises(
        ForgetFilterError, match="out of GPU memory scoring even one example at a time"
    ):
        score_values(model, tok, examples[:3], cfg)


def test_outputs_get_the_permissions_of_a_plain_write(tmp_path: Path) -> None:
    """Atomic writes and temp dirs honour the umask instead of tempfile's private 0600/0700."""
    import os
    import stat

    from forgetfilter import io

    mask = io._umask()
    io.write_json(tmp_path / "a.json", {"x": 1})
    with open(tmp_path / "plain.txt", "w") as fh:
        fh.write("x")
    mode = stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode) == 0o666 & ~mask
    d = io.temp_dir_for(tmp_path / "out")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o777 & ~mask


def test_one_process_commands_refuse_a_multi_process_launch(tmp_path: Path, monkeypatch, capsys):
    """Under torchrun / accelerate launch only `train` and `run` share work; others say so."""
    from forgetfilter.cli import main

    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "p", "response": "r"}\n')
    assert main(["data", "check", str(path)]) == 0
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["data", "check", str(path)]) == 2
    assert "only `train` and `run` use several" in capsys.readouterr().err
