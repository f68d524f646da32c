"""Finetuning a causal LM on prompt/response records: resumable, deterministic, single or multi process.

`train(model, records, out_dir, cfg)` writes into `out_dir`:

- `log.jsonl`: one line per `log_every` steps: step, loss, lr, tokens, tokens_per_s, elapsed_s.
- `checkpoints/step-N/`: every `save_every` steps (written atomically): the model (full weights
  or the LoRA adapter, loadable with `models.load_model`), per-process optimizer and RNG states,
  and `state.json` (step, tokens, elapsed time). The LR schedule and the data position are
  functions of the step, so the step is all that is needed to continue.
- `model/`: the final model (full HF dir or peft adapter dir), and `train_state.json`
  `{complete: true, config, steps, world_size, ...}` last of all.

Rerunning the same call resumes from the last complete checkpoint with the same data order and
ends with the same weights as an uninterrupted run; a completed `out_dir` is returned at once.

Data order: records are tokenised (`batching.encode_all`), cut into micro-batches of similar
length with `batching.length_grouped_batches` seeded by (seed, epoch), and consecutive runs of
`micro_batch_size × grad_accum × processes` examples form one optimizer step. Process `r` takes
micro-batches `r, r + P, ...` of each step; the loss is normalised by the number of loss tokens in
the whole step, so the gradient does not depend on the number of processes.

Distributed training: run the same command under `torchrun --nproc_per_node N` (CPU: gloo, one
process per rank; `accelerate launch --cpu --num_processes 2` starts only one process on some
setups, use torchrun there) or `accelerate launch` on GPUs. FSDP for models that do not fit on one
GPU goes through an accelerate config, e.g. `accelerate launch --config_file fsdp.yaml -m
forgetfilter.cli train ...` with::

    distributed_type: FSDP
    num_processes: 8
    mixed_precision: bf16
    fsdp_config:
      fsdp_version: 2
      fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
      fsdp_state_dict_type: FULL_STATE_DICT
      fsdp_cpu_ram_efficient_loading: true

The final model is gathered to a full state dict before saving. Resuming an FSDP run needs the
same number of processes (optimizer states are saved per process); FSDP is not covered by the
CPU test suite.

Fault injection for reliability tests: `FORGETFILTER_FAULT_AFTER_STEP=K` exits the process hard
(`os._exit(FAULT_EXIT_CODE)`) right after step K is finished and any checkpoint at K is written;
`FORGETFILTER_FAULT_NAN_AT_STEP=K` turns the loss of step K into NaN.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import batching, chat, io
from .errors import ConfigError, NumericalError
from .models import (
    LoraSettings,
    apply_lora,
    attention_backends,
    canonical_name,
    cap_length,
    is_peft_model,
    load_model,
    resolve_dtype,
)
from .records import Example

FAULT_EXIT_CODE = 86
STATE_FILE = "train_state.json"
# Config fields added after runs were first recorded, with the value those runs had in effect.
ADDED_FIELDS = {"prompt_format": "auto", "assistant_turns": "last"}
# Config fields that may change between a run and its resumption.
_RESUMABLE_CHANGES = ("save_every", "log_every", "report_to")
# Where `report_to` sends the metrics (accelerate's trackers); `none` keeps them in log.jsonl only.
TRACKERS = ("none", "tensorboard", "wandb")

Callback = Callable[[int, Any, Any], None]


@dataclass
class TrainConfig:
    """How to finetune.

    Attributes:
        lr: peak learning rate (AdamW), reached after warmup, then decayed linearly to 0.
        batch_size: examples per optimizer step (effective = micro_batch_size × grad_accum ×
            processes; grad_accum is derived and the effective size is recorded).
        micro_batch_size: examples per forward pass and process; None = min(8, batch_size).
        epochs: passes over the data (fractions allowed); ignored when max_steps is set.
        max_steps: optimizer steps to run; None derives them from epochs.
        warmup_ratio: fraction of the steps with linear LR warmup.
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient clipping norm (None: no clipping).
        loss_on: `response` (labels -100 on prompt and padding) or `full` (the whole sequence).
        max_length: tokens per example (capped at the model's position limit); see `batching`.
        prompt_format: `auto` (the tokenizer's chat template when it has one, else the Alpaca
            template), `chat` or `alpaca`; see `chat`.
        assistant_turns: chat format: the loss covers the `last` assistant turn (with its
            end-of-turn token) or `all` assistant turns.
        seed: seed for initialisation (LoRA), dropout and the data order.
        save_every: checkpoint every this many steps (0: only the final model).
        keep_checkpoints: how many recent checkpoints to keep (0: keep all).
        finetune: `lora` (adapter only) or `full` (all weights).
        lora: LoRA settings when finetune is `lora`.
        dtype: `fp32|bf16|fp16` compute precision (None: bf16 on a capable GPU, else fp32);
            full finetuning keeps fp32 master weights and uses autocast.
        log_every: steps between log lines (and progress bar updates).
        report_to: `none`, `tensorboard` (events under `<out>/tensorboard/<out name>/`) or
            `wandb` (run named after the output directory): loss, lr and tokens/s of every
            logged step through accelerate's trackers, besides log.jsonl. Needs the package.
    """

    lr: float = 2e-4
    batch_size: int = 32
    micro_batch_size: int | None = None
    epochs: float = 1.0
    max_steps: int | None = None
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    loss_on: str = field(default="response", metadata={"choices": batching.LOSS_ON})
    max_length: int = 512
    prompt_format: str = field(default="auto", metadata={"choices": chat.FORMATS})
    assistant_turns: str = field(default="last", metadata={"choices": chat.TURNS})
    seed: int = 0
    save_every: int = 0
    keep_checkpoints: int = 0
    finetune: str = field(default="lora", metadata={"choices": ("lora", "full")})
    lora: LoraSettings = field(default_factory=LoraSettings)
    dtype: str | None = field(default=None, metadata={"choices": ("fp32", "bf16", "fp16")})
    log_every: int = 1
    report_to: str = field(default="none", metadata={"choices": TRACKERS})

    def validate(self) -> None:
        """Raise ConfigError for settings that cannot work."""
        _check_tracker(self.report_to)
        if self.loss_on not in ("response", "full"):
            raise ConfigError(f"`loss_on` must be 'response' or 'full', not {self.loss_on!r}")
        if self.finetune not in ("lora", "full"):
            raise ConfigError(f"`finetune` must be 'lora' or 'full', not {self.finetune!r}")
        if self.batch_size < 1 or (self.micro_batch_size is not None and self.micro_batch_size < 1):
            raise ConfigError("`batch_size` and `micro_batch_size` must be positive")
        if self.max_steps is None and not self.epochs > 0:
            raise ConfigError("`epochs` must be positive (or give `max_steps`)")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("`max_steps` must be positive")
        if self.prompt_format not in chat.FORMATS or self.assistant_turns not in chat.TURNS:
            raise ConfigError(
                f"`prompt_format` must be one of {', '.join(chat.FORMATS)} and `assistant_turns` one "
                f"of {', '.join(chat.TURNS)}"
            )
        if self.max_length < 2 * batching.MIN_PROMPT_TOKENS:
            raise ConfigError(f"`max_length` must be at least {2 * batching.MIN_PROMPT_TOKENS}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (LoRA targets as a list)."""
        d = asdict(self)
        if d["lora"]["targets"] is not None:
            d["lora"]["targets"] = list(d["lora"]["targets"])
        return d


@dataclass
class TrainResult:
    """What `train` produced.

    Attributes:
        out_dir: the training output directory.
        model_dir: `out_dir/model` (pass to `load_model`).
        steps: optimizer steps taken in total.
        tokens: non-padding tokens processed in total (all processes).
        final_loss: loss of the last step.
        elapsed_s: training wall time over all (resumed) runs.
        world_size: number of processes.
        resumed_from: the checkpoint step this run continued from (None: fresh or already complete).
        already_complete: True when `out_dir` held a finished run and nothing was trained.
    """

    out_dir: Path
    model_dir: Path
    steps: int
    tokens: int
    final_loss: float | None
    elapsed_s: float
    world_size: int
    resumed_from: int | None = None
    already_complete: bool = False


# ---------------------------------------------------------------- the plan: steps and data order
@dataclass
class _Plan:
    """Which examples each optimizer step sees; a pure function of (data, config, step)."""

    lengths: list[int]
    micro: int
    accum: int
    world: int
    seed: int
    steps_per_epoch: int
    total_steps: int
    _cache: dict[int, list[list[int]]] = field(default_factory=dict)

    @property
    def per_step(self) -> int:
        return self.accum * self.world

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        if epoch not in self._cache:
            self._cache = {
                epoch: batching.length_grouped_batches(
                    self.lengths, self.micro, seed=self.seed * 1_000_003 + epoch
                )
            }
        return self._cache[epoch]

    def step_batches(self, step: int) -> list[list[int]]:
        """All micro-batches of optimizer step `step` (0-based), over all processes."""
        epoch, k = divmod(step, self.steps_per_epoch)
        return self.epoch_batches(epoch)[k * self.per_step : (k + 1) * self.per_step]


def _make_plan(lengths: list[int], cfg: TrainConfig, world: int) -> _Plan:
    micro = cfg.micro_batch_size or min(8, cfg.batch_size)
    accum = max(1, cfg.batch_size // (micro * world))
    n_micro = math.ceil(len(lengths) / micro)
    per_epoch = math.ceil(n_micro / (accum * world))
    total = cfg.max_steps or max(1, math.ceil(cfg.epochs * per_epoch))
    return _Plan(lengths, micro, accum, world, cfg.seed, per_epoch, total)


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Learning rate for 0-based `step`: linear warmup over warmup_ratio, then linear decay to 0."""
    warmup = int(cfg.warmup_ratio * total_steps)
    if step < warmup:
        return cfg.lr * (step + 1) / (warmup + 1)
    return cfg.lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup))


def data_fingerprint(records: Sequence[Example]) -> str:
    """A hash of the records' ids, prompts and responses in order (resume safety check)."""
    h = hashlib.sha256()
    for ex in records:
        fields = [ex.id, ex.prompt, ex.response]
        if ex.messages is not None or ex.tools is not None or ex.plain:
            fields += [ex.messages, ex.tools, ex.plain]
        h.update(io.dumps(fields).encode())
    return h.hexdigest()[:16]


def finished_run(out_dir: str | Path) -> dict:
    """What a finished `train` recorded about itself (empty when `out_dir` holds none): `config`,
    `steps`, `tokens`, `final_loss`, `elapsed_s`, `max_length`, `truncated_records`, `n_records`,
    `prompt_format` (the format used), batch sizes."""
    path = Path(out_dir) / STATE_FILE
    state = io.read_json(path) if path.exists() else {}
    return state if state.get("complete") else {}


def _check_tracker(report_to: str) -> None:
    if report_to not in TRACKERS:
        raise ConfigError(f"`report_to` must be one of {', '.join(TRACKERS)}, not {report_to!r}")
    if report_to != "none":
        import importlib.util

        if importlib.util.find_spec(report_to) is None:
            raise ConfigError(
                f"`report_to` {report_to} needs the {report_to} package: "
                f"pip install 'forgetfilter[{report_to}]'"
            )


# ---------------------------------------------------------------- entry point
def train(
    model: str | Path,
    records: Sequence[Example],
    out_dir: str | Path,
    cfg: TrainConfig | None = None,
    *,
    resume: bool = True,
    callback: Callback | None = None,
    callback_every: int = 0,
    progress: bool = True,
    label: str = "train",
) -> TrainResult:
    """Finetune `model` (name, path, `tiny`, or a previous output dir) on `records` into `out_dir`.

    `callback(step, model, tokenizer)` runs on every process after steps callback_every,
    2·callback_every, ... with the unwrapped model in eval mode; RNG state is restored after it,
    so a callback does not change training. Raises NumericalError (naming the step) when the loss
    or gradient becomes NaN/inf; checkpoints written before stay intact. `label` names the
    progress bar (`progress=False` hides it).
    """
    cfg = cfg or TrainConfig()
    cfg.validate()
    if not records:
        raise ConfigError("no training records")
    out = _RunDir(
        Path(out_dir), str(model), _identity(str(model), records, cfg, Path(out_dir)), cfg
    )
    done = out.completed_result() if resume else None
    if done is not None:
        return done
    if not resume:
        out.clear()
    run = _Run(_setup(str(model), records, out, cfg), records, out, cfg, progress, label)
    return run.loop(callback, callback_every)


def _identity(model: str, records: Sequence[Example], cfg: TrainConfig, out_dir: Path) -> dict:
    """What a checkpoint or a finished run must match to be resumed or reused."""
    return {
        "model": _portable(model, out_dir),
        "config": cfg.to_dict(),
        "data": data_fingerprint(records),
        "n_records": len(records),
    }


class _RunDir:
    """A training output directory: the finished run, its checkpoints and its log."""

    def __init__(self, path: Path, model_name: str, identity: dict, cfg: TrainConfig):
        self.path, self.model_name, self.identity = path, model_name, identity
        self.keep = cfg.keep_checkpoints

    def completed_result(self) -> TrainResult | None:
        """The recorded result of a finished run with this identity (None when unfinished)."""
        path = self.path / STATE_FILE
        state = io.read_json(path) if path.exists() else {}
        if not state.get("complete"):
            return None
        self.check_identity(state, "a completed run")
        return TrainResult(
            out_dir=self.path,
            model_dir=self.path / "model",
            steps=state["steps"],
            tokens=state["tokens"],
            final_loss=state.get("final_loss"),
            elapsed_s=state["elapsed_s"],
            world_size=state["world_size"],
            already_complete=True,
        )

    def check_identity(self, state: dict, what: str) -> None:
        """ConfigError naming the settings in which `state` differs from this run."""
        theirs = dict(state.get("identity", {}))
        if _same_path(theirs.get("model"), self.model_name):  # recorded before paths were portable
            theirs["model"] = self.identity["model"]
        changed = _differences(_comparable(self.identity), _comparable(theirs))
        if changed:
            raise ConfigError(
                f"{self.path} holds {what} with different settings ({', '.join(changed)}); "
                "use another output directory or start over with `resume=False`"
            )

    def clear(self) -> None:
        for name in ("checkpoints", "model", *TRACKERS[1:]):
            shutil.rmtree(self.path / name, ignore_errors=True)
        for name in (STATE_FILE, "log.jsonl"):
            (self.path / name).unlink(missing_ok=True)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of every complete checkpoint, in step order."""
        return sorted(
            (int(p.name.split("-")[1]), p)
            for p in (self.path / "checkpoints").glob("step-*")
            if p.name.split("-")[1].isdigit() and (p / "state.json").exists()
        )

    def last_checkpoint(self) -> Path | None:
        """The newest complete checkpoint, checked against this run's identity."""
        done = self.checkpoints()
        if not done:
            return None
        path = done[-1][1]
        self.check_identity(io.read_json(path / "state.json"), f"a checkpoint ({path.name})")
        return path

    def prune(self) -> None:
        """Delete all but the newest `keep_checkpoints` checkpoints (0 keeps all)."""
        if self.keep <= 0:
            return
        ckpts = sorted(
            (int(p.name.split("-")[1]), p) for p in (self.path / "checkpoints").glob("step-*")
        )
        for _, path in ckpts[: -self.keep]:
            shutil.rmtree(path, ignore_errors=True)

    def append_log(self, row: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(io.dumps(row) + "\n")

    def temp_dir(self, acc: Any, final: Path) -> Path:
        """A temp dir beside `final` with the same name on every process."""
        tmp = final.with_name(f".{final.name}.tmp")
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        return tmp


@dataclass
class _Setup:
    """What a run trains with: the accelerator, the prepared model and optimizer, the tokenizer,
    the encoded records, the batch plan and the checkpoint it starts from."""

    acc: Any
    model: Any
    optimizer: Any
    tokenizer: Any
    encoded: list[batching.Encoded]
    plan: Any
    max_length: int
    checkpoint: Path | None


def _setup(model_name: str, records: Sequence[Example], out: _RunDir, cfg: TrainConfig) -> _Setup:
    """Accelerator, model (the last checkpoint's or the base + LoRA), data plan and optimizer."""
    from accelerate import Accelerator

    dtype = resolve_dtype(cfg.dtype, "cuda" if torch.cuda.is_available() else "cpu")
    mixed = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "no")
    _allow_precision(mixed)
    tracked = cfg.report_to != "none"
    acc = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=mixed,
        log_with=cfg.report_to if tracked else None,
        project_dir=str(out.path / cfg.report_to) if tracked else None,
    )
    checkpoint = out.last_checkpoint()
    _seed_everything(cfg.seed)
    model, tokenizer = _load_start(model_name, checkpoint, cfg, dtype, acc.device)
    max_length = cap_length(model, cfg.max_length)
    encoded = batching.encode_all(
        tokenizer,
        records,
        max_length,
        cfg.loss_on,
        prompt_format=cfg.prompt_format,
        turns=cfg.assistant_turns,
    )
    plan = _make_plan([len(e.input_ids) for e in encoded], cfg, acc.num_processes)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )
    model, optimizer = acc.prepare(model, optimizer)
    return _Setup(acc, model, optimizer, tokenizer, encoded, plan, max_length, checkpoint)


def _load_start(
    model_name: str, ckpt: Path | None, cfg: TrainConfig, dtype: torch.dtype, device: Any
) -> tuple[Any, Any]:
    """The starting model: the checkpoint's weights when resuming, else the base (+ LoRA).

    Starting from a LoRA adapter (e.g. a previous run's `model/`), `lora` finetuning goes on
    training that adapter (its own rank and targets) and `full` finetuning merges it first.
    """
    load_dtype = torch.float32 if cfg.finetune == "full" else dtype
    if ckpt is not None:
        return load_model(ckpt / "model", dtype=load_dtype, device=device, trainable=True)
    model, tokenizer = load_model(model_name, dtype=load_dtype, device=device, trainable=True)
    if is_peft_model(model) and cfg.finetune == "full":
        model = model.merge_and_unload().requires_grad_(True)
    elif not is_peft_model(model) and cfg.finetune == "lora":
        model = apply_lora(model, cfg.lora)
    return model, tokenizer


@dataclass
class _Counters:
    """Where a run stands: what a checkpoint records and a resumed run restores."""

    step: int = 0
    tokens: int = 0
    prior_elapsed: float = 0.0
    loss: float | None = None
    lr: float | None = None
    resumed_from: int | None = None


class _Run:
    """One training run's step loop, checkpoints and final save."""

    def __init__(
        self,
        setup: _Setup,
        records: Sequence[Example],
        out: _RunDir,
        cfg: TrainConfig,
        progress: bool,
        label: str = "train",
    ):
        self.acc, self.model, self.optimizer = setup.acc, setup.model, setup.optimizer
        self.tokenizer, self.encoded, self.plan = setup.tokenizer, setup.encoded, setup.plan
        self.max_length, self.world = setup.max_length, setup.acc.num_processes
        self.records, self.out, self.cfg = records, out, cfg
        self.progress, self.label = progress, label
        self.t0 = time.time()
        self.at = self.restore(setup.checkpoint)
        if cfg.report_to != "none":
            self.start_tracking()

    def start_tracking(self) -> None:
        """One tracker run per output directory, named after it, with the settings as config."""
        name = self.out.path.name
        settings = {k: v if isinstance(v, int | float | str | bool) else str(v)
                    for k, v in _flat(self.cfg.to_dict()).items()}  # fmt: skip
        kwargs = {"wandb": {"name": name, "dir": str(self.out.path)}}
        project = name if self.cfg.report_to == "tensorboard" else "forgetfilter"
        self.acc.init_trackers(project, config=settings, init_kwargs=kwargs)

    def restore(self, ckpt: Path | None) -> _Counters:
        """Optimizer, RNG and counters from a checkpoint (or fresh counters)."""
        if ckpt is None:
            if self.acc.is_main_process:  # lines of a killed run that had no checkpoint yet
                _truncate_log(self.out.path / "log.jsonl", 0)
            return _Counters()
        state = io.read_json(ckpt / "state.json")
        at = _Counters(
            state["step"],
            state["tokens"],
            state["elapsed_s"],
            state.get("loss"),
            None,
            state["step"],
        )
        rank = self.acc.process_index
        opt_path = _rank_file(ckpt, "optimizer", rank)
        self.optimizer.load_state_dict(
            torch.load(opt_path, map_location=self.acc.device, weights_only=False)
        )
        _set_rng(torch.load(_rank_file(ckpt, "rng", rank), weights_only=False))
        if self.acc.is_main_process:
            _truncate_log(self.out.path / "log.jsonl", at.step)
        return at

    # ---- the loop
    def loop(self, callback: Callback | None, callback_every: int) -> TrainResult:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=self.plan.total_steps,
            initial=self.at.step,
            desc=self.label,
            disable=not (self.progress and self.acc.is_main_process),
            dynamic_ncols=True,
        )
        self.t0 = time.time()
        run_tokens = 0
        try:  # close the bar also on an error, so the error message starts on its own line
            while self.at.step < self.plan.total_steps:
                loss, n_tokens = self.train_step(self.at.step)
                self.at.step += 1
                self.at.tokens += n_tokens
                run_tokens += n_tokens
                self.at.loss = loss
                self.after_step(bar, run_tokens, callback, callback_every)
        finally:
            bar.close()
            if self.cfg.report_to != "none":
                self.acc.end_training()
        return self.finish()

    def after_step(
        self, bar: Any, run_tokens: int, callback: Callback | None, callback_every: int
    ) -> None:
        step, total = self.at.step, self.plan.total_steps
        tok_s = run_tokens / max(time.time() - self.t0, 1e-9)
        if step % max(1, self.cfg.log_every) == 0 or step == total:
            self.log(tok_s)
            bar.set_postfix(loss=f"{self.at.loss:.4f}", tok_s=f"{tok_s:.0f}", refresh=False)
        bar.update(1)
        if self.cfg.save_every and step % self.cfg.save_every == 0 and step < total:
            self.save_checkpoint()
        if callback is not None and callback_every and step % callback_every == 0:
            self.run_callback(callback)
        _maybe_fault("FORGETFILTER_FAULT_AFTER_STEP", step)

    def train_step(self, step: int) -> tuple[float, int]:
        """One optimizer step over this process's micro-batches; returns (global loss, global tokens)."""
        batches = self.plan.step_batches(step)
        step_encoded = [[self.encoded[i] for i in b] for b in batches]
        n_loss = sum(_n_loss_tokens(e) for mb in step_encoded for e in mb)
        n_tokens = sum(len(e.input_ids) for mb in step_encoded for e in mb)
        mine = step_encoded[self.acc.process_index :: self.world]
        slots = [(mb, 1.0) for mb in mine] + [(step_encoded[0], 0.0)] * (
            self.plan.accum - len(mine)
        )
        local_sum = torch.zeros((), device=self.acc.device)
        for i, (mb, weight) in enumerate(slots):
            local_sum += self.forward_backward(mb, weight, max(n_loss, 1), last=i == len(slots) - 1)
        loss = self.acc.reduce(local_sum, reduction="sum").item() / max(n_loss, 1)
        if _fault_step("FORGETFILTER_FAULT_NAN_AT_STEP") == step + 1:
            loss = float("nan")
        self.optimizer_step(step, loss)
        return loss, n_tokens

    def forward_backward(
        self, mb: list[batching.Encoded], weight: float, n_loss: int, last: bool
    ) -> torch.Tensor:
        batch = batching.collate(mb, self.tokenizer.pad_token_id)
        batch = {k: v.to(self.acc.device) for k, v in batch.items()}
        sync = self.acc.no_sync(self.model) if not last else contextlib.nullcontext()
        with sync, self.acc.autocast(), attention_backends(self.acc.device):
            logits = self.model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            loss_sum = _sum_ce(logits, batch["labels"])
            self.acc.backward(loss_sum * (weight * self.world / n_loss))
        return loss_sum.detach().float() * weight

    def optimizer_step(self, step: int, loss: float) -> None:
        if not math.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            raise NumericalError(self.numerical_message(step + 1, "loss", loss))
        if self.cfg.max_grad_norm:
            norm = self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
            if not math.isfinite(float(norm)):
                raise NumericalError(self.numerical_message(step + 1, "gradient norm", float(norm)))
        lr = lr_at(step, self.cfg, self.plan.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.at.lr = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def numerical_message(self, step: int, what: str, value: float) -> str:
        done = self.out.checkpoints()
        kept = (
            f"the last good checkpoint (step {done[-1][0]}) is kept"
            if done
            else "no checkpoint was written"
        )
        return f"training {what} became {value} at step {step}; {kept}. Try a lower `lr` or `dtype` fp32"

    def run_callback(self, callback: Callback) -> None:
        model = self.acc.unwrap_model(self.model)
        rng = _get_rng()
        model.eval()
        try:
            with torch.no_grad():
                callback(self.at.step, model, self.tokenizer)
        finally:
            model.train()
            _set_rng(rng)

    # ---- outputs
    def log(self, tok_s: float) -> None:
        if self.cfg.report_to != "none":  # every process calls; the trackers log on the main one
            metrics = {"loss": self.at.loss, "lr": self.at.lr, "tokens_per_s": tok_s}
            self.acc.log(metrics, step=self.at.step)
        if self.acc.is_main_process:
            self.out.append_log(
                {
                    "step": self.at.step,
                    "loss": self.at.loss,
                    "lr": self.at.lr,
                    "tokens": self.at.tokens,
                    "tokens_per_s": round(tok_s, 1),
                    "elapsed_s": round(self.elapsed(), 3),
                }
            )

    def elapsed(self) -> float:
        return self.at.prior_elapsed + (time.time() - self.t0)

    def counters(self) -> dict[str, Any]:
        epoch_position = divmod(self.at.step, self.plan.steps_per_epoch)
        return {
            "step": self.at.step,
            "tokens": self.at.tokens,
            "loss": self.at.loss,
            "elapsed_s": self.elapsed(),
            "world_size": self.world,
            "data_position": dict(zip(("epoch", "step_in_epoch"), epoch_position, strict=True)),
            "identity": self.out.identity,
        }

    def save_checkpoint(self) -> None:
        """Write `checkpoints/step-N/` atomically (all processes take part)."""
        final = self.out.path / "checkpoints" / f"step-{self.at.step}"
        tmp = self.out.temp_dir(self.acc, final)
        self.save_weights(tmp / "model")
        rank = self.acc.process_index
        torch.save(self.optimizer.state_dict(), _rank_file(tmp, "optimizer", rank))
        torch.save(_get_rng(), _rank_file(tmp, "rng", rank))
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            io.write_json(tmp / "state.json", self.counters())
            io.replace_dir(tmp, final)
            self.out.prune()
        self.acc.wait_for_everyone()

    def save_weights(self, path: Path) -> None:
        """Save the (gathered) model and tokenizer into `path` from the main process."""
        state_dict = self.acc.get_state_dict(self.model)
        if self.acc.is_main_process:
            model = self.acc.unwrap_model(self.model)
            model.save_pretrained(path, state_dict=state_dict, safe_serialization=True)
            self.tokenizer.save_pretrained(path)

    def finish(self) -> TrainResult:
        final = self.out.path / "model"
        tmp = self.out.temp_dir(self.acc, final)
        self.save_weights(tmp)
        self.acc.wait_for_everyone()
        state = {
            **self.counters(),
            "complete": True,
            "steps": self.at.step,
            "final_loss": self.at.loss,
        }
        state.update(self.summary())
        if self.acc.is_main_process:
            io.replace_dir(tmp, final)
            io.write_json(self.out.path / STATE_FILE, state)
        self.acc.wait_for_everyone()
        return TrainResult(
            out_dir=self.out.path,
            model_dir=final,
            steps=self.at.step,
            tokens=self.at.tokens,
            final_loss=self.at.loss,
            elapsed_s=state["elapsed_s"],
            world_size=self.world,
            resumed_from=self.at.resumed_from,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "model": self.out.model_name,
            "micro_batch_size": self.plan.micro,
            "grad_accum": self.plan.accum,
            "effective_batch_size": self.plan.micro * self.plan.per_step,
            "steps_per_epoch": self.plan.steps_per_epoch,
            "max_length": self.max_length,
            "truncated_records": sum(e.truncated for e in self.encoded),
            "n_records": len(self.records),
            "prompt_format": chat.resolve_format(self.tokenizer, self.cfg.prompt_format),
        }


# ---------------------------------------------------------------- helpers
def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def _portable(model: str, out_dir: Path) -> str:
    """`model` as recorded: relative to `out_dir` when it lies in the same run directory (e.g. the
    previous stage's model), so a moved or copied run directory still resumes; else an absolute
    path (`models.canonical_name`), or a hub id as given."""
    path = Path(model)
    if not path.exists():
        return canonical_name(model)
    base = out_dir.resolve().parent
    target = path.resolve()
    if base not in target.parents:
        return canonical_name(model)
    return os.path.relpath(target, out_dir.resolve())


def _same_path(a: object, b: str) -> bool:
    """Whether a recorded model path (absolute, or relative to this directory as older versions
    wrote it) names the same local model as `b`."""
    return isinstance(a, str) and Path(a).exists() and Path(a).resolve() == Path(b).resolve()


def _comparable(identity: dict) -> dict:
    """The identity fields that must match to resume (minus the freely changeable ones)."""
    recorded = {**ADDED_FIELDS, **identity.get("config", {})}  # older runs lack the newer fields
    config = {k: v for k, v in recorded.items() if k not in _RESUMABLE_CHANGES}
    return {**{k: v for k, v in identity.items() if k != "config"}, "config": config}


def _differences(mine: dict, theirs: dict, prefix: str = "") -> list[str]:
    """Dotted names of the fields that differ between two nested dicts."""
    out = []
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(prefix + key)
    return out


def _sum_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over positions whose label is not -100."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    return torch.nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)),
        shift_labels.reshape(-1),
        ignore_index=batching.IGNORE_INDEX,
        reduction="sum",
    )


def _n_loss_tokens(e: batching.Encoded) -> int:
    """Positions whose label enters the loss (the first token predicts nothing)."""
    if e.spans is None:
        return len(e.input_ids) - max(e.label_start, 1)
    return e.n_labels - (1 if e.spans and e.spans[0][0] == 0 else 0)


def _rank_file(directory: Path, kind: str, rank: int) -> Path:
    """This process's state file, falling back to rank 0's (resuming with more processes)."""
    path = directory / f"{kind}-rank{rank}.pt"
    return path if path.exists() or rank == 0 else directory / f"{kind}-rank0.pt"


def _allow_precision(mixed: str) -> None:
    """Let this process train with another mixed precision than an earlier `train` call did.

    accelerate keeps one precision per process and refuses a second; its per-process state (the
    process group, devices) is kept, only the precision setting is cleared.
    """
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    current = shared.get("_mixed_precision", shared.get("mixed_precision"))
    if shared and current is not None and str(current) != mixed:
        AcceleratorState._reset_state(reset_partial_state=False)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _get_rng() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past `step` (written by an interrupted run after its last checkpoint).

    A line cut short by a kill during its append is dropped too.
    """
    if not path.exists():
        return
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and row.get("step", 0) <= step:
            rows.append(row)
    io.write_jsonl(path, rows)


def _fault_step(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value.isdigit() else None


def _maybe_fault(name: str, step: int) -> None:
    """Exit hard (no cleanup) after `step` when the fault-injection variable names it."""
    if _fault_step(name) == step:
        os._exit(FAULT_EXIT_CODE)
