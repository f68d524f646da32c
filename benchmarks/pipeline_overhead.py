"""Wall time of a whole ForgetFilter run vs one plain finetune on the same noisy data and settings.

`forgetfilter.pipeline.run_forgetfilter` trains twice on the noisy data (M1 and the final model),
plus the safety finetune and three scoring passes (M0, M1, M2; M0 only with the loss signal), so its
floor is about (M1's share + kept fraction) x plain + safety + scoring (the final model trains on
the kept records only; M1 trains one epoch of a pretrained model's three, `screen_epochs`).
Measured side by side: plain, pipeline, plain twice more (the plain time is the fastest of the
three, as other processes only add time); the stage breakdown comes from the run's timings.json.

    python benchmarks/pipeline_overhead.py --quick
    python benchmarks/pipeline_overhead.py --model tiny --data runs/bias-data   # noisy.jsonl + safe.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import _common as C  # noqa: N812
import numpy as np

from forgetfilter import io
from forgetfilter.pipeline import (
    default_run_config,
    final_cfg,
    noisy_cfg,
    run_forgetfilter,
    screen_cfg,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument(
        "--data", default=None, help="dir with noisy.jsonl and safe.jsonl (default: synthetic)"
    )
    p.add_argument("--n", type=int, default=600, help="noisy records (synthetic, or the first N)")
    p.add_argument("--n-safe", type=int, default=150)
    p.add_argument(
        "--finetune",
        default=None,
        choices=["full", "lora"],
        help="default: the model's run defaults",
    )
    p.add_argument("--signal", default="loss", choices=["loss", "rouge"])
    p.add_argument("--epochs", type=float, default=None, help="default: the model's run defaults")
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument(
        "--keep",
        default=None,
        help="keep inputs and the run here (for signal_cost.py --run-dir DIR/run)",
    )
    p.add_argument("--quick", action="store_true", help="200 records, 1 epoch")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.n_safe, args.epochs = (
            min(args.n, 200),
            min(args.n_safe, 50),
            args.epochs or 1.0,
        )
    return args


def inputs(args, work: Path) -> tuple[Path, Path]:
    """Paths of the noisy and safe files (written under `work`)."""
    if args.data:
        noisy = C.read_records(Path(args.data) / "noisy.jsonl", args.n)
        safe = C.read_records(Path(args.data) / "safe.jsonl", args.n_safe)
    else:
        noisy = C.synthetic_records(args.n, seed=0)
        safe = [
            dataclasses.replace(ex, id=f"s{i}", label="safe")
            for i, ex in enumerate(C.synthetic_records(args.n_safe, seed=1, long_fraction=0.0))
        ]
    io.write_jsonl(work / "noisy.jsonl", [ex.to_dict() for ex in noisy])
    io.write_jsonl(work / "safe.jsonl", [ex.to_dict() for ex in safe])
    return work / "noisy.jsonl", work / "safe.jsonl"


def main(argv: list[str] | None = None) -> dict:
    """Print the plain-vs-pipeline table and the stage breakdown."""
    from forgetfilter.training import train

    args = parse_args(argv)
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ff-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        noisy_path, safe_path = inputs(args, work)
        full = None if args.finetune is None else args.finetune == "full"
        cfg = default_run_config(
            args.model,
            full=full,
            epochs=args.epochs,
            max_length=args.max_length,
            batch_size=args.batch_size,
            signal=args.signal,
        )
        noisy = C.read_records(noisy_path)
        tcfg = noisy_cfg(cfg)
        print(
            f"# pipeline overhead: model={args.model} noisy={len(noisy)} safe={args.n_safe} "
            f"signal={args.signal} epochs={tcfg.epochs} batch={tcfg.batch_size} max_length={tcfg.max_length} "
            f"finetune={tcfg.finetune}",
            flush=True,
        )

        def plain(k: int) -> float:
            t0 = time.perf_counter()
            train(args.model, noisy, work / f"plain{k}", tcfg, progress=False)
            return time.perf_counter() - t0

        plain_s = [plain(0)]
        t0 = time.perf_counter()
        run_forgetfilter(noisy_path, safe_path, work / "run", cfg)
        pipe_s = time.perf_counter() - t0
        plain_s.append(plain(1))
        plain_s.append(plain(2))
        timings = json.loads((work / "run" / "timings.json").read_text())
        kept = len(io.read_jsonl(work / "run" / "kept.jsonl"))
    finally:
        for name in ("plain0", "plain1", "plain2") if args.keep else ():
            shutil.rmtree(work / name, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    p = float(np.min(plain_s))  # the least disturbed run: other processes only ever add time
    keep_frac = kept / len(noisy)
    scorings = [k for k in ("scores_m0", "scores_before", "scores_after") if k in timings]
    # M1 trains `screen_epochs` (one epoch for a pretrained model), the plain finetune the
    # delivered model's length
    m1_frac = screen_cfg(cfg).epochs / final_cfg(cfg).epochs if not tcfg.max_steps else 1.0
    floor = (m1_frac + keep_frac) * p + sum(timings.get(k, 0) for k in ["m2", *scorings])
    rows = [
        {
            "what": "plain finetune (training.train)",
            "seconds": p,
            "runs": ",".join(f"{s:.1f}" for s in plain_s),
            "ratio_vs_plain": 1.0,
        },
        {"what": "run_forgetfilter (all stages)", "seconds": pipe_s, "ratio_vs_plain": pipe_s / p},
        {
            "what": f"floor: (M1 {m1_frac:.2f} + kept {keep_frac:.2f}) x plain + safety + "
            f"{len(scorings)} scorings",
            "seconds": floor,
            "ratio_vs_plain": floor / p,
        },
    ]
    print(C.table(rows))
    stage_rows = [
        {"stage": k, "seconds": v, "fraction": v / pipe_s, "vs_plain": v / p}
        for k, v in timings.items()
    ]
    print("\n# stages (timings.json)")
    print(C.table(stage_rows))
    print(
        f"\npipeline / plain = {pipe_s / p:.2f}x; overhead beyond the floor = {pipe_s / floor - 1:+.1%}"
    )
    out = {"args": vars(args), "rows": rows, "stages": stage_rows}
    C.save_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
