"""GPU throughput of training, scoring and generation on random-initialised models (bf16).

For each model shape (default: a GPT-2-small shape, 124M, and a ~1B Llama shape), measured side by
side in one process on the same synthetic variable-length records and a byte-level BPE tokenizer
trained on the fly (no weights, data or hub needed):

- training: real tokens/s of `forgetfilter.training.train` (length-grouped batches) vs a plain HF
  `Trainer` (random sampler, DataCollatorForSeq2Seq padding), LoRA r=8 (and full finetuning for
  GPT-2-small), same micro batch, accumulation, lr, max_length and bf16 autocast; the Trainer also
  without cuDNN attention, ours again after it (A-B-A) and ours with cuDNN attention allowed;
- scoring: real tokens/s of `inference.response_nll` (sorted, sliced logits; with cuDNN attention
  allowed; larger batches; token-budget batches) vs a plain unsorted loop with full float32 logits,
  each run twice (first and best time);
- signal cost: the loss signal (two batch sizes) vs the rouge signal on the same 512 records;
- generation: new tokens/s of `inference.generate` (dynamic cache with and without cuDNN attention;
  static cache; static cache + torch.compile on CUDA) vs plain `model.generate`, at batch 64;
- pipeline overhead: `forgetfilter run` against one plain finetune (benchmarks/pipeline_overhead.py);
- model FLOP utilisation: 6·N·tokens (training) or 2·N·tokens (forward) over the chip's dense bf16
  rate (`--peak-tflops`, default 989 for H200), N = parameters in matrix products.

Every section is guarded: an error or a lack of time is recorded and the script goes on. Results
are printed as tables and written as JSON to `--out` after every section.

    python benchmarks/gpu.py --out results.json              # on the GPU
    python benchmarks/gpu.py --quick --device cpu             # toy sizes, a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import _common as C  # noqa: N812  (benchmarks/ is on sys.path when run as a script)
import torch

from forgetfilter import inference, signals  # noqa: E402
from forgetfilter.batching import encode_example, length_grouped_batches  # noqa: E402
from forgetfilter.devices import CUDNN_SDPA_ENV, attention_backends  # noqa: E402

T0 = time.perf_counter()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (sizes, device, time budget)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="toy shapes and sizes (CPU smoke test)")
    p.add_argument(
        "--shapes", default=None, help="comma list of gpt2-small, llama-1b, toy, toy-llama"
    )
    p.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--records", type=int, default=2048, help="synthetic records (scoring uses all)")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--train-steps", type=int, default=30)
    p.add_argument(
        "--warmup-steps", type=int, default=5, help="steps excluded from training throughput"
    )
    p.add_argument("--micro-batch", type=int, default=16)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--score-batch", type=int, default=32)
    p.add_argument(
        "--score-tokens", type=int, default=32768, help="token budget of the token-budget variant"
    )
    p.add_argument("--big-score-batch", type=int, default=128, help="second loss-signal batch")
    p.add_argument(
        "--authors-records", type=int, default=128, help="records of the 500-token rouge section"
    )
    p.add_argument(
        "--pipeline-records", type=int, default=1024, help="noisy records of the pipeline section"
    )
    p.add_argument("--gen-prompts", type=int, default=128)
    p.add_argument("--gen-batch", type=int, default=64)
    p.add_argument("--gen-new-tokens", type=int, default=128)
    p.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="measure static cache + torch.compile decoding (auto: on CUDA, first shape only)",
    )
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the chip")
    p.add_argument(
        "--deadline-s", type=float, default=330.0, help="skip sections that would end later"
    )
    p.add_argument("--out", default="gpu_results.json")
    p.add_argument(
        "--workdir", default=None, help="scratch dir for model copies (default: a temp dir)"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.shapes = args.shapes or "toy,toy-llama"
        args.records, args.train_steps, args.warmup_steps = 96, 5, 1
        args.micro_batch, args.grad_accum, args.score_batch, args.score_tokens = 4, 2, 8, 2048
        args.big_score_batch, args.authors_records = 16, 16
        args.gen_prompts, args.gen_batch, args.gen_new_tokens, args.max_length = 16, 8, 12, 256
    args.shapes = (args.shapes or "gpt2-small,llama-1b").split(",")
    return args


class Bench:
    """Holds results, writes them after each section, and enforces the deadline."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.results: dict[str, Any] = {"env": env_info(args), "args": vars(args), "sections": []}

    def left(self) -> float:
        return self.args.deadline_s - (time.perf_counter() - T0)

    def section(self, name: str, need_s: float, fn) -> Any:
        """Run `fn` unless fewer than `need_s` seconds are left; record rows or the error."""
        entry: dict[str, Any] = {"name": name, "started_s": round(time.perf_counter() - T0, 1)}
        if self.left() < need_s:
            entry["skipped"] = f"{self.left():.0f}s left, needs ~{need_s:.0f}s"
            print(f"\n## {name}: SKIPPED ({entry['skipped']})", flush=True)
            self.add(entry)
            return None
        print(f"\n## {name}  (t={entry['started_s']}s)", flush=True)
        try:
            rows = fn()
            entry["rows"] = rows
            print(C.table(rows), flush=True)
        except Exception as exc:  # one broken section must not lose the rest of a one-shot run
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc(limit=8)
            print(f"ERROR {entry['error']}\n{entry['traceback']}", flush=True)
            rows = None
        entry["seconds"] = round(time.perf_counter() - T0 - entry["started_s"], 1)
        if self.args.device.startswith("cuda"):
            entry["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            torch.cuda.reset_peak_memory_stats()
        self.add(entry)
        return rows

    def add(self, entry: dict) -> None:
        self.results["sections"].append(entry)
        self.results["total_s"] = round(time.perf_counter() - T0, 1)
        Path(self.args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(self.args.out).write_text(json.dumps(self.results, indent=1, default=str))


def env_info(args: argparse.Namespace) -> dict[str, Any]:
    """Versions and the device name."""
    import transformers

    info = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import rouge_score  # noqa: F401

        info["rouge_score"] = True
    except ImportError:
        info["rouge_score"] = False
    return info


@contextlib.contextmanager
def cudnn_sdpa(enabled: bool, device: str):
    """Run with PyTorch's own attention choice (cuDNN allowed) or with cuDNN attention left out.

    `enabled=True` sets FORGETFILTER_CUDNN_SDPA=1 so our code keeps PyTorch's choice too; False
    also wraps plain (non-forgetfilter) code, such as the HF Trainer, in `attention_backends`.
    """
    saved = os.environ.pop(CUDNN_SDPA_ENV, None)
    if enabled:
        os.environ[CUDNN_SDPA_ENV] = "1"
    try:
        with contextlib.nullcontext() if enabled else attention_backends(device):
            yield
    finally:
        os.environ.pop(CUDNN_SDPA_ENV, None)
        if saved is not None:
            os.environ[CUDNN_SDPA_ENV] = saved


def mfu(flops: float, seconds: float, peak_tflops: float) -> float:
    """Achieved fraction of the peak dense rate."""
    return flops / seconds / (peak_tflops * 1e12)


# ---------------------------------------------------------------- sections
def scoring_rows(b: Bench, model, tok, records, n_params: int) -> list[dict]:
    """response_nll variants vs the plain loop, each run twice in turn (first and best time).

    The plain loop runs with PyTorch's own attention choice; ours without cuDNN attention (the
    default), with it, and at larger batches. "first" includes per-shape set-up costs (cuDNN
    builds a plan per new shape), which a pipeline scoring pass pays once per shape.
    """
    a, dev = b.args, b.args.device
    kw = {"batch_size": a.score_batch, "max_length": a.max_length, "progress": False}
    real = sum(len(encode_example(tok, ex, a.max_length).input_ids) for ex in records)
    plain = "plain unsorted, full logits (torch attention choice)"

    def ours(cudnn: bool = False, **extra):
        def run():
            with cudnn_sdpa(cudnn, dev):
                return inference.response_nll(model, tok, records, **{**kw, **extra})

        return run

    def plain_loop():
        return C.plain_nll(model, tok, records, a.score_batch, a.max_length)

    variants = {
        plain: plain_loop,
        f"ours sorted, sliced, batch {a.score_batch}": ours(),
        f"ours sorted, sliced, batch {a.score_batch}, cuDNN attention on": ours(cudnn=True),
        "ours sorted, sliced, batch 64": ours(batch_size=64),
        "ours sorted, sliced, batch 128": ours(batch_size=128),
        f"ours token budget {a.score_tokens}": ours(
            batch_size=1024, max_batch_tokens=a.score_tokens
        ),
    }
    with cudnn_sdpa(False, dev):  # warm-up without creating cuDNN plans
        C.timed(lambda: inference.response_nll(model, tok, records[: 4 * a.score_batch], **kw), dev)
    times: dict[str, list[float]] = {k: [] for k in variants}
    values = {}
    for _round in range(2):
        for name, fn in variants.items():
            if b.left() < 15:
                break
            s, v = C.timed(fn, dev)
            times[name].append(s)
            values[name] = v
    ref = values[plain]
    base = min(times[plain])
    rows = []
    for name, ts in times.items():
        if not ts:
            continue
        s = min(ts)
        rows.append(
            {
                "variant": name,
                "first_s": ts[0],
                "best_s": s,
                "real_tok_per_s": real / s,
                "speedup_best": base / s,
                "speedup_first": times[plain][0] / ts[0],
                "mfu_2N": mfu(2 * n_params * real, s, a.peak_tflops),
                "max_abs_diff": float(abs(values[name] - ref).max()),
            }
        )
    return rows


def _with_cudnn(device: str, fn):
    with cudnn_sdpa(True, device):
        return fn()


def generation_rows(b: Bench, model, tok, prompts, n_params: int, compile_: bool) -> list[dict]:
    """new tokens/s of plain model.generate vs inference.generate (dynamic / static / static+compile)."""
    a, dev = b.args, b.args.device
    n_new = a.gen_new_tokens
    kw = {
        "max_new_tokens": n_new,
        "batch_size": a.gen_batch,
        "max_length": a.max_length,
        "progress": False,
    }
    variants = {
        "plain model.generate": lambda: C.plain_generate(
            model, tok, prompts, a.gen_batch, n_new, a.max_length
        ),
        "ours dynamic cache": lambda: inference.generate(
            model, tok, prompts, **kw, cache_implementation="dynamic"
        ),
        "ours dynamic cache, cuDNN attention on": lambda: _with_cudnn(
            dev,
            lambda: inference.generate(model, tok, prompts, **kw, cache_implementation="dynamic"),
        ),
        "ours static cache": lambda: inference.generate(
            model, tok, prompts, **kw, cache_implementation="static", disable_compile=True
        ),
    }
    if compile_:  # only the static-cache variants beside the baseline
        for name in ("ours dynamic cache", "ours dynamic cache, cuDNN attention on"):
            del variants[name]
        variants["ours static + compile (incl. compile)"] = lambda: inference.generate(
            model, tok, prompts, **kw, cache_implementation="static"
        )
        variants["ours static + compile (warm)"] = variants["ours static + compile (incl. compile)"]
    inference.generate(model, tok, prompts[: a.gen_batch], **{**kw, "max_new_tokens": 4})  # warm-up
    order = [*variants, "plain model.generate"] if not compile_ else [*variants]
    times: dict[str, list[float]] = {k: [] for k in variants}
    outs = {}
    for name in order:
        if b.left() < 20:
            break
        s, out = C.timed(variants[name], dev)
        times[name].append(s)
        outs[name] = out
    new_tokens = (
        len(prompts) * n_new
    )  # random weights almost never emit EOS: every row runs n_new steps
    base = min(times["plain model.generate"])
    rows = []
    for name, ts in times.items():
        if not ts:
            continue
        s = min(ts)
        same = sum(x == y for x, y in zip(outs[name], outs["plain model.generate"], strict=True))
        rows.append(
            {
                "variant": name,
                "seconds": s,
                "new_tok_per_s": new_tokens / s,
                "speedup": base / s,
                "mfu_2N": mfu(2 * n_params * new_tokens, s, a.peak_tflops),
                "same_text_as_plain": f"{same}/{len(prompts)}",
            }
        )
    return rows


def signal_cost_rows(b: Bench, model, tok, records, n: int) -> list[dict]:
    """Seconds of the loss signal vs the rouge signal (target+8 budgets) on the same records.

    The rouge row is `signals.greedy_rouge1` when rouge-score is installed, else the generation it
    runs (`inference.generate` with the same budgets and early stop), which is nearly all its cost.
    Random weights rarely emit EOS or a newline, so every row decodes its whole budget: an upper
    bound of a trained model's cost at the same budgets.
    """
    a, dev = b.args, b.args.device
    recs = records[: min(len(records), 512)]
    kw = {"batch_size": a.score_batch, "max_length": a.max_length, "progress": False}
    gkw = {**kw, "batch_size": a.gen_batch}
    limits = inference.target_lengths(tok, recs)
    if b.results["env"]["rouge_score"]:
        rouge = lambda: signals.greedy_rouge1(model, tok, recs, **gkw)  # noqa: E731
        label = f"rouge: greedy_rouge1 (target+8, batch {a.gen_batch})"
    else:

        def rouge():
            return inference.generate(
                model,
                tok,
                [ex.prompt for ex in recs],
                max_new_tokens=limits,
                first_line_only=True,
                **gkw,
            )

        label = f"rouge generation only (no rouge-score; target+8, batch {a.gen_batch})"
    loss = lambda: inference.response_nll(model, tok, recs, **kw)  # noqa: E731
    big = f"loss, batch {a.big_score_batch}"
    loss_big = lambda: inference.response_nll(  # noqa: E731
        model, tok, recs, **{**kw, "batch_size": a.big_score_batch}
    )
    first = f"loss, batch {a.score_batch}"
    times: dict[str, list[float]] = {first: [], big: [], label: []}
    order = ((first, loss), (big, loss_big), (label, rouge), (first, loss), (big, loss_big))
    for name, fn in order:
        times[name].append(C.timed(fn, dev)[0])
    rouge_s = min(times[label])
    return [
        {
            "signal": k,
            "records": len(recs),
            "seconds_first": v[0],
            "seconds": min(v),
            "rouge_over_this": rouge_s / min(v),
            "gen_budget_tokens": sum(limits) if k == label else None,
        }
        for k, v in times.items()
    ]


def shard_rows(b: Bench, model, tok, records) -> list[dict]:
    """Pipeline scoring shards cut in input order vs by text length (`score_shards.py`), A-B-A-B."""
    import score_shards as S  # noqa: N812

    from forgetfilter.batching import encode_all
    from forgetfilter.pipeline import default_run_config, shard_positions

    a, dev = b.args, b.args.device
    lengths = [len(e.input_ids) for e in encode_all(tok, records, a.max_length)]
    layouts = {
        "input order": S.shards(list(range(len(records)))),
        "by length": shard_positions(records),
    }
    rows = []
    for batch in (a.score_batch, a.big_score_batch):
        cfg = default_run_config("model", max_length=a.max_length)
        cfg.score_batch_size = batch
        times: dict[str, list[float]] = {k: [] for k in layouts}
        for name in list(layouts) * 2:
            times[name].append(
                C.timed(lambda n=name, c=cfg: S.score(model, tok, records, layouts[n], c), dev)[0]
            )
        for name, layout in layouts.items():
            rows.append({
                "shards": name, "batch": batch, "records": len(records),
                "padding": S.padding(lengths, layout, batch), "best_s": min(times[name]),
                "speedup": min(times["input order"]) / min(times[name]),
            })  # fmt: skip
    return rows


def authors_budget_rows(b: Bench, model, tok, records) -> list[dict]:
    """Loss signal vs rouge at our budgets (target+8) and at the authors' cap (500 new tokens).

    Same `--authors-records` records for all three rows. Random weights decode the whole budget, so
    the 500-token row is the upper bound of the authors' setting, as the target+8 row is of ours.
    """
    a, dev = b.args, b.args.device
    recs = records[: a.authors_records]
    kw = {"batch_size": a.score_batch, "max_length": a.max_length, "progress": False}
    gkw = {**kw, "batch_size": a.gen_batch}
    runs = {
        "loss": lambda: inference.response_nll(model, tok, recs, **kw),
        "rouge, target+8": lambda: signals.greedy_rouge1(model, tok, recs, **gkw),
        f"rouge, {inference.MAX_NEW_TOKENS_CAP} new tokens": lambda: signals.greedy_rouge1(
            model, tok, recs, max_new_tokens=inference.MAX_NEW_TOKENS_CAP, **gkw
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for name in [*runs, "loss"]:  # loss, the two rouge rows, loss again
        times[name].append(C.timed(runs[name], dev)[0])
    loss_s = min(times["loss"])
    return [
        {"signal": k, "records": len(recs), "seconds": min(v), "ratio_vs_loss": min(v) / loss_s}
        for k, v in times.items()
    ]


def compiled_rouge_rows(b: Bench, model, tok, records) -> list[dict]:
    """The rouge signal (target+8 budgets) with and without compiled decoding, on 512 records.

    Its batches change shape (prompt width, budget, last batch size), so this counts the graphs
    torch.compile made and times a first and a second compiled pass against the default.
    """
    from torch._dynamo.utils import counters

    a, dev = b.args, b.args.device
    recs = records[:512]
    kw = {"batch_size": a.gen_batch, "max_length": a.max_length, "progress": False}
    default = lambda: signals.greedy_rouge1(model, tok, recs, **kw)  # noqa: E731
    compiled = lambda: signals.greedy_rouge1(  # noqa: E731
        model, tok, recs, cache_implementation="static", **kw
    )
    rows = []
    for name, fn in (("default (static cache, eager)", default), ("compiled, first", compiled),
                     ("compiled, second", compiled), ("default again", default)):  # fmt: skip
        graphs = counters["stats"]["unique_graphs"]
        s, _ = C.timed(fn, dev)
        rows.append({"variant": name, "seconds": s,
                     "new_graphs": counters["stats"]["unique_graphs"] - graphs})  # fmt: skip
    base = min(rows[0]["seconds"], rows[3]["seconds"])
    for r in rows:
        r["speedup"] = base / r["seconds"]
    return rows


def profile_loss_rows(b: Bench, model, tok, records, shape: str) -> list[dict]:
    """torch.profiler tables of one loss-signal pass, written beside --out; the top ops as rows."""
    from torch.profiler import ProfilerActivity, profile

    a, dev = b.args, b.args.device
    kw = {"batch_size": a.score_batch, "max_length": a.max_length, "progress": False}
    recs = records[:512]
    inference.response_nll(model, tok, recs[:64], **kw)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        inference.response_nll(model, tok, recs, **kw)
        C.sync(dev)
    key = "self_cuda_time_total" if dev.startswith("cuda") else "self_cpu_time_total"
    events = prof.key_averages()
    path = Path(a.out).with_name(f"profile_loss_{shape}.txt")
    path.write_text(
        events.table(sort_by=key, row_limit=30)
        + "\n\n"
        + events.table(sort_by="self_cpu_time_total", row_limit=30)
    )
    top = sorted(events, key=lambda e: getattr(e, key), reverse=True)
    return [
        {
            "op": e.key[:60],
            "self_ms": getattr(e, key) / 1000,
            "self_cpu_ms": e.self_cpu_time_total / 1000,
            "calls": e.count,
        }
        for e in top[:8]
    ] + [{"op": f"(tables in {path.name})"}]


def pipeline_rows(args: argparse.Namespace, model_dir: Path) -> list[dict]:
    """`benchmarks/pipeline_overhead.py` on this model (synthetic records, paper's LoRA defaults)."""
    import pipeline_overhead

    n, n_safe = (96, 32) if args.quick else (args.pipeline_records, args.pipeline_records // 8)
    argv = ["--model", str(model_dir), "--n", str(n), "--n-safe", str(n_safe), "--epochs", "1",
            "--max-length", str(args.max_length), "--finetune", "lora"]  # fmt: skip
    return pipeline_overhead.main(argv)["rows"]


def training_rows(
    b: Bench, model_dir: Path, tok, records, finetune: str, n_params: int, work: Path
) -> list[dict]:
    """training.train vs a plain HF Trainer on the same records and settings.

    Order: ours, Trainer (PyTorch's attention choice), Trainer without cuDNN attention, ours again
    (A-B-A: a first-run cost shows as a gap between the two "ours" rows), ours with cuDNN attention
    allowed (the behaviour before `models.attention_backends`). Speedups are against the plain
    Trainer (row 2) and against the Trainer without cuDNN attention (row 3).
    """
    from forgetfilter.models import apply_lora, load_model
    from forgetfilter.training import TrainConfig, train

    a = b.args
    bf16 = a.dtype == "bf16"
    recs = records[: a.train_steps * a.micro_batch * a.grad_accum]
    cfg = TrainConfig(
        lr=1e-4,
        batch_size=a.micro_batch * a.grad_accum,
        micro_batch_size=a.micro_batch,
        max_steps=a.train_steps,
        finetune=finetune,
        dtype=a.dtype,
        max_length=a.max_length,
        log_every=1,
        warmup_ratio=0.0,
    )
    out = work / f"train-{finetune}"

    def ours(label: str, cudnn: bool = False) -> dict:
        shutil.rmtree(out, ignore_errors=True)
        with cudnn_sdpa(cudnn, a.device):
            s, _ = C.timed(lambda: train(str(model_dir), recs, out, cfg, progress=False), a.device)
        row = {"variant": label, **C.ours_train_throughput(out, a.warmup_steps)}
        _free()
        return {**row, "wall_incl_load_save": s}

    def hf(label: str, cudnn: bool) -> dict:
        load_dtype = "fp32" if finetune == "full" or not bf16 else "bf16"
        model, _ = load_model(str(model_dir), dtype=load_dtype, device=a.device, trainable=True)
        model = apply_lora(model) if finetune == "lora" else model
        t0 = time.perf_counter()
        with cudnn_sdpa(cudnn, a.device):
            row = C.hf_trainer_run(
                model, tok, recs, out_dir=work / "hf", micro_batch=a.micro_batch,
                grad_accum=a.grad_accum, steps=a.train_steps, lr=1e-4,
                max_length=a.max_length, bf16=bf16, warmup_steps=a.warmup_steps,
            )  # fmt: skip
        del model
        _free()
        return {"variant": label, **row, "wall_incl_load_save": time.perf_counter() - t0}

    rows = [
        ours(f"ours training.train ({finetune})"),
        hf(f"HF Trainer ({finetune})", cudnn=True),
        hf(f"HF Trainer ({finetune}), cuDNN attention off", cudnn=False),
        ours(f"ours ({finetune}), again after the Trainer"),
        ours(f"ours ({finetune}), cuDNN attention on", cudnn=True),
    ]
    lengths = [len(encode_example(tok, ex, a.max_length).input_ids) for ex in recs]
    ours_pad = C.padding_stats(lengths, length_grouped_batches(lengths, a.micro_batch, seed=0))
    hf_pad = C.padding_stats(lengths, C.random_batches(len(lengths), a.micro_batch, seed=0))
    for r in rows:
        r["speedup"] = r["tokens_per_s"] / rows[1]["tokens_per_s"]
        r["speedup_vs_hf_no_cudnn"] = r["tokens_per_s"] / rows[2]["tokens_per_s"]
        r["mfu_6N"] = mfu(6 * n_params * r["tokens"], r["seconds"], a.peak_tflops)
        pad = hf_pad if r["variant"].startswith("HF") else ours_pad
        r["padding_fraction"] = pad["padding_fraction"]
    return rows


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    """Run every section that fits in the time budget; returns the results dict."""
    args = parse_args(argv)
    b = Bench(args)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ff-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"# forgetfilter GPU benchmark  {b.results['env']}  device={args.device} dtype={args.dtype}",
        flush=True,
    )
    records = C.synthetic_records(args.records, seed=0)
    s, tok = C.timed(lambda: C.train_tokenizer(records, vocab_size=8000))
    print(f"tokenizer: {len(tok)} tokens, trained in {s:.1f}s", flush=True)
    compile_mode = args.compile == "on" or (
        args.compile == "auto" and args.device.startswith("cuda")
    )
    big = not args.quick
    done: dict[str, tuple[Path, int, list[str]]] = {}
    for shape in args.shapes:
        vocab = {"gpt2-small": 50257, "llama-1b": 32000}.get(shape, len(tok))
        model_dir = work / shape

        state: dict[str, Any] = {}

        def init(shape=shape, vocab=vocab, model_dir=model_dir, state=state) -> list[dict]:
            cfg = C.model_config(shape, vocab, max_positions=max(1024, args.max_length))
            t, model = C.timed(lambda: C.random_model(cfg, tok, args.device, dtype), args.device)
            n = C.matmul_params(model)
            total = sum(p.numel() for p in model.parameters())
            t2, _ = C.timed(
                lambda: (model.save_pretrained(model_dir), tok.save_pretrained(model_dir))
            )
            state["model"], state["n"] = model, n
            return [
                {"shape": shape, "params": total, "matmul_params": n, "init_s": t, "save_s": t2}
            ]

        if b.section(f"{shape}: init", 30 if big else 1, init) is None:
            continue
        model, n = state.pop("model"), state["n"]
        b.section(
            f"{shape}: scoring (loss signal)",
            40 if big else 1,
            lambda model=model, n=n: scoring_rows(b, model, tok, records, n),
        )
        b.section(
            f"{shape}: signal cost (loss vs rouge)",
            40 if big else 1,
            lambda model=model, n=n: signal_cost_rows(b, model, tok, records, n),
        )
        if shape == args.shapes[0]:
            b.section(
                f"{shape}: pipeline scoring shards, input order vs by text length",
                20 if big else 1,
                lambda model=model: shard_rows(b, model, tok, records),
            )
        b.section(
            f"{shape}: loss vs rouge at the authors' 500-token cap",
            40 if big else 1,
            lambda model=model: authors_budget_rows(b, model, tok, records),
        )
        b.section(
            f"{shape}: profile of one loss-signal pass",
            20 if big else 1,
            lambda model=model, shape=shape: profile_loss_rows(b, model, tok, records, shape),
        )
        prompts = [ex.prompt for ex in records[: args.gen_prompts]]
        b.section(
            f"{shape}: generation (batch {args.gen_batch}, {args.gen_new_tokens} new tokens)",
            60 if big else 1,
            lambda model=model, n=n, prompts=prompts: generation_rows(
                b, model, tok, prompts, n, compile_=False
            ),
        )
        del model
        _free()
        modes = ["lora", "full"] if shape in ("gpt2-small", "toy") else ["lora"]
        for mode in modes:
            b.section(
                f"{shape}: training ({mode})",
                60 if big else 1,
                lambda mode=mode, model_dir=model_dir, n=n: training_rows(
                    b, model_dir, tok, records, mode, n, work
                ),
            )
        done[shape] = (model_dir, n, prompts)
    if (
        compile_mode and args.shapes[0] in done
    ):  # last: compilation time is the least predictable part
        model_dir, n, prompts = done[args.shapes[0]]

        def compiled() -> list[dict]:
            from forgetfilter.models import load_model

            model, _ = load_model(str(model_dir), dtype=args.dtype, device=args.device)
            try:
                return generation_rows(b, model, tok, prompts, n, compile_=True)
            finally:
                del model
                _free()

        b.section(
            f"{args.shapes[0]}: generation with static cache + torch.compile",
            90 if big else 1,
            compiled,
        )

        def compiled_rouge() -> list[dict]:
            from forgetfilter.models import load_model

            model, _ = load_model(str(model_dir), dtype=args.dtype, device=args.device)
            try:
                return compiled_rouge_rows(b, model, tok, records)
            finally:
                del model
                _free()

        b.section(
            f"{args.shapes[0]}: rouge signal with compiled decoding (512 records)",
            60 if big else 1,
            compiled_rouge,
        )
    if args.shapes[0] in done:  # last: the least needed figure
        model_dir = done[args.shapes[0]][0]
        b.section(
            f"{args.shapes[0]}: pipeline overhead (forgetfilter run vs one plain finetune, LoRA)",
            60 if big else 1,
            lambda: pipeline_rows(args, model_dir),
        )
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ntotal {time.perf_counter() - T0:.1f}s; results in {args.out}", flush=True)
    return b.results


if __name__ == "__main__":
    main()
