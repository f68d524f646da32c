"""Fault-injection driver for tests/test_reliability.py: kill `forgetfilter run` at chosen points.

Usage::

    python tests/fault_driver.py SPEC.json REPORT.json

SPEC is a JSON object:

- `args`: the `forgetfilter` command line without `--out` (e.g. `["run", "--model", ...]`).
- `reference`: a run directory for one uninterrupted run (or null).
- `chain`: the run directory that is killed again and again, then completed.
- `faults`: a list of environment settings, one per killed attempt, e.g.
  `{"FORGETFILTER_FAULT_AT": "stage:m1"}` or `{"FORGETFILTER_FAULT_AFTER_STEP": "3"}`.
- `score_shard`: optional `pipeline.SCORE_SHARD` override (small shards: several per stage).

Each attempt is a child process forked from this one after the heavy imports (so a kill costs
less than a fresh interpreter), running `forgetfilter.cli.main(args)` with the fault set. The
child dies by SIGKILL (`io.fault_point`) or by training's hard exit; after each death the driver
checks that every file in the run directory is whole (`check_whole`). The last attempt runs with
no fault and must succeed. REPORT lists, per attempt: the fault, how the child ended, and the
problems found, and the hidden temp files left. Children write their output to `<chain>.logs/NN.log`.

The parent never runs torch code itself, so forking after importing torch is safe.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

FAULT_VARS = (
    "FORGETFILTER_FAULT_AT",
    "FORGETFILTER_FAULT_AFTER_STEP",
    "FORGETFILTER_FAULT_NAN_AT_STEP",
)


def check_whole(run_dir: str | Path) -> list[str]:
    """Problems with the visible files of a run directory: JSON/JSONL that does not parse, a
    JSONL file whose last line is cut, a safetensors file that does not open. Hidden temp files
    (`.*.tmp`) and `.lock` are ignored: they are never read as outputs."""
    problems: list[str] = []
    for path in sorted(Path(run_dir).rglob("*")):
        rel = path.relative_to(run_dir)
        if path.is_dir() or any(part.startswith(".") for part in rel.parts):
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.suffix == ".jsonl":
                text = path.read_text(encoding="utf-8")
                if text and not text.endswith("\n"):
                    problems.append(f"{rel}: last line is cut")
                for line in text.splitlines():
                    json.loads(line)
            elif path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), "pt") as fh:
                    list(fh.keys())
        except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
            problems.append(f"{rel}: {type(exc).__name__}: {exc}")
    return problems


def _preimport() -> None:
    """Import what a run needs, so forked children start warm (no torch computation here)."""
    import accelerate  # noqa: F401
    import safetensors.torch  # noqa: F401
    import transformers  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel  # noqa: F401

    from forgetfilter import cli, metrics, models, pipeline, readers, signals, thresholds, training  # noqa: F401


def _attempt(args: list[str], out: str, env: dict[str, str], log: Path) -> dict:
    """Fork a child that runs the CLI with `env` set; return how it ended."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child
        rc = 1
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            for var in FAULT_VARS:
                os.environ.pop(var, None)
            os.environ.update(env)
            from forgetfilter import cli

            rc = cli.main([*args, "--out", out])
        except BaseException:  # noqa: BLE001 - report, then leave without cleanup
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    _, status = os.waitpid(pid, 0)
    signal = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    return {"env": env, "signal": signal, "exit": code, "log": str(log)}


def main(spec_path: str, report_path: str) -> int:
    """Run the reference and the killed chain described by SPEC; write REPORT."""
    spec = json.loads(Path(spec_path).read_text())
    _preimport()
    from forgetfilter import pipeline

    if spec.get("score_shard"):
        pipeline.SCORE_SHARD = int(spec["score_shard"])
    chain = spec["chain"]
    logs = Path(chain + ".logs")
    logs.mkdir(parents=True, exist_ok=True)
    report: dict = {"attempts": []}
    if spec.get("reference"):
        report["reference"] = _attempt(spec["args"], spec["reference"], {}, logs / "reference.log")
    for i, env in enumerate([*spec["faults"], {}]):
        result = _attempt(spec["args"], chain, env, logs / f"{i:02d}.log")
        result["problems"] = check_whole(chain)
        result["temps"] = sorted(str(p.relative_to(chain)) for p in Path(chain).rglob(".*.tmp"))
        report["attempts"].append(result)
        Path(report_path).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
