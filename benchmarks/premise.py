"""Can a run tell, from its own safe set, whether the noisy finetune made the model less safe?
(issue 17: the paper's forgetting needs unsafe learning to undo.)

For finished `forgetfilter run` directories it scores the run's safe set under M0, M1 and M2 and
reports the mean NLL of its refusals and of its other answers (`refusals.is_refusal` on the
answer; no label is read), to compare with the refusal rates `refusal_stages.py` measures. If the
noisy finetune broke the alignment, M1 should find the safe refusals less likely than M0 did, and
M2 should find them likely again.

    python benchmarks/premise.py --runs /tmp/r/runs/harm-s0.05-mixed-seed0 --out /tmp/premise.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from forgetfilter import io
from forgetfilter.inference import response_nll
from forgetfilter.models import load_model
from forgetfilter.readers import read_examples
from forgetfilter.refusals import is_refusal


def safe_file(run: Path) -> Path:
    """The safe file a run read (`inputs.json`)."""
    inputs = io.read_json(run / "inputs.json")
    return Path(inputs["safe"]["path"])


def premise(run: Path, a: argparse.Namespace) -> dict:
    """Mean NLL of the run's safe refusals and other safe answers under M0, M1 and M2."""
    cfg = io.read_json(run / "config.json")["config"]
    safe, _ = read_examples(safe_file(run))
    refusal = np.array([is_refusal(e.response) for e in safe])
    out = {"n_refusals": int(refusal.sum()), "n_other": int((~refusal).sum())}
    m0 = cfg.get("screen_model") or cfg["model"]
    for name, path in (("m0", m0), ("m1", run / "m1"), ("m2", run / "m2")):
        model, tokenizer = load_model(str(path), merge=True)
        nll = response_nll(
            model, tokenizer, safe, batch_size=16, max_length=a.max_length, progress=False
        )
        out[name] = {
            "refusals": float(nll[refusal].mean()) if refusal.any() else None,
            "other": float(nll[~refusal].mean()) if (~refusal).any() else None,
        }
    for part in ("refusals", "other"):
        if out["m0"][part] is not None:
            out[f"{part}_m1_minus_m0"] = out["m1"][part] - out["m0"][part]
            out[f"{part}_m2_minus_m1"] = out["m2"][part] - out["m1"][part]
    print(run, json.dumps({k: v for k, v in out.items() if "minus" in k or k.startswith("n_")}))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="forgetfilter run directories")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--out", required=True, help="JSON file")
    a = p.parse_args()
    result = {"args": vars(a), "runs": {str(r): premise(Path(r), a) for r in a.runs}}
    io.write_json(Path(a.out), result)


if __name__ == "__main__":
    main()
