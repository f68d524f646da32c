"""Loading, adapting and saving causal LMs: `tiny` resolution, device/dtype, LoRA, atomic saves.

Any `AutoModelForCausalLM` directory or hub id works (`ID@REVISION` pins a hub revision).
`"tiny"` names the built-in model, built from the data directory on first use (see
`forgetfilter.tiny`); `smollm2-135m-instruct` and the other `sources.NAMED` models, and `.gguf`
files, are resolved by `forgetfilter.sources`. A directory holding a peft adapter
(`adapter_config.json`) is loaded as its base model plus the adapter. A training output directory
(with `model/` inside) can be passed directly: its `model/` is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import io
from .devices import DTYPES, attention_backends, pick_device, resolve_dtype  # noqa: F401
from .errors import ConfigError

# Attention projections preferred as LoRA targets, by architecture family (first match wins).
_PREFERRED_TARGETS = (
    ("q_proj", "v_proj"),  # Llama, Mistral, Qwen, OPT, ...
    ("c_attn",),  # GPT-2 (Conv1D: needs fan_in_fan_out)
    ("query_key_value",),  # GPT-NeoX, Falcon, BLOOM
    ("Wqkv",),  # MPT, Phi-1
    ("qkv_proj",),  # Phi-3
)
_OUTPUT_LAYERS = ("lm_head", "embed_out", "output")


# ---------------------------------------------------------------- names and devices
def resolve_model(name_or_path: str | Path) -> str:
    """The local path (or hub id) for a model name, building the built-in tiny model when needed.

    `tiny`, `tiny:PRESET` and `tiny:PRESET:SEED` name the built-in model, built once into
    `cache_dir()/models/tiny-<preset>-s<seed>` (under a file lock, so concurrent processes build it
    once). A training output directory resolves to its `model/`; a local path is made absolute
    (`canonical_name`); a hub id is returned as given.
    """
    from . import sources

    name = str(name_or_path)
    if name == "tiny" or name.startswith("tiny:"):
        from .tiny import ensure_tiny, parse_tiny_name  # imported lazily (tiny is heavy)

        return str(ensure_tiny(*parse_tiny_name(name)))
    if sources.is_named(name):
        return sources.resolve_named(name)
    if sources.is_gguf(name):
        return str(sources.ensure_gguf(name))
    path = Path(name).expanduser()
    if (path / "model").is_dir() and (path / "train_state.json").exists():
        return os.path.abspath(path / "model")
    return canonical_name(name)


def canonical_name(name_or_path: str | Path) -> str:
    """How a run records a model: an existing local path made absolute, anything else as given.

    Adapters record their base model this way, so they load from any working directory.
    """
    from . import sources

    name = str(name_or_path)
    path = Path(name).expanduser()
    if name == "tiny" or name.startswith("tiny:") or not path.exists():
        return name.lower() if sources.is_named(name) else name
    return os.path.abspath(path)


def split_revision(name: str) -> tuple[str, str | None]:
    """`(hub id, revision)` of `ID@REVISION` (a local path or a plain id: no revision)."""
    if "@" in name and not Path(name).expanduser().exists() and not _looks_local(name):
        repo, revision = name.rsplit("@", 1)
        return repo, revision or None
    return name, None


def describe(name_or_path: str | Path) -> dict:
    """How outputs name a model: as given, as resolved, and where a cached build came from."""
    from . import sources

    resolved = resolve_model(name_or_path)
    out = {"name": str(name_or_path), "resolved": resolved}
    found = sources.origin(resolved) if Path(resolved).is_dir() else None
    if found is None and sources.is_named(str(name_or_path)):
        found = {"named": str(name_or_path).lower(), "source": f"the Hugging Face hub ({resolved})"}
    if found:
        out["origin"] = found
    return out


# ---------------------------------------------------------------- loading
def load_model(
    name_or_path: str | Path,
    *,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    trainable: bool = False,
    merge: bool = False,
) -> tuple[Any, Any]:
    """Load `(model, tokenizer)` from a model dir, hub id, `tiny`, adapter dir or training output dir.

    The tokenizer pads on the right (switch `tokenizer.padding_side = "left"` for generation) and gets
    EOS as its pad token when it has none. The model is moved to `device` (default `pick_device()`)
    in `dtype` (see `resolve_dtype`). With `trainable=False` it is in eval mode with gradients off;
    with `trainable=True` it is in train mode and a peft adapter's weights are trainable.
    `merge=True` (inference only) merges a float32 LoRA adapter into the base weights: the same
    outputs within float rounding, at the cost of one plain forward pass (see `merge_for_inference`).
    """
    device = device or pick_device()
    path = resolve_model(name_or_path)
    torch_dtype = resolve_dtype(dtype, device)
    adapter_cfg = _adapter_config(path)
    base_path = resolve_model(adapter_cfg["base_model_name_or_path"]) if adapter_cfg else path
    _check_local(path)
    if adapter_cfg and _looks_local(base_path) and not Path(base_path).exists():
        raise ConfigError(
            f"the adapter in {path} names its base model {base_path!r}, which is not found from "
            f"{Path.cwd()} (older versions recorded a path relative to the directory the training "
            "ran in: run from there, or set base_model_name_or_path in its adapter_config.json)"
        )
    model = _from_pretrained(base_path, torch_dtype)
    if adapter_cfg:
        from peft import PeftModel

        with known_library_noise_silenced():
            model = PeftModel.from_pretrained(model, path, is_trainable=trainable)
        if merge and not trainable:
            model = merge_for_inference(model)
    tokenizer = _load_tokenizer(path if _has_tokenizer(path) else base_path)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    _set_mode(model, trainable, adapter=bool(adapter_cfg))
    return model, tokenizer


def merge_for_inference(model: nn.Module) -> nn.Module:
    """`model` with its LoRA adapter merged into the base weights when those are float32.

    An unmerged adapter adds two small matrix products per adapted layer to every forward pass.
    Half-precision weights keep the adapter separate: rounding the merged weights to bf16 drops
    part of a small adapter update, and the forgetting signal is the difference of two adapters.
    """
    weights = next(model.parameters()).dtype
    if is_peft_model(model) and weights == torch.float32:
        return model.merge_and_unload()
    return model


def _adapter_config(path: str) -> dict | None:
    cfg = Path(path) / "adapter_config.json"
    return io.read_json(cfg) if cfg.exists() else None


def _has_tokenizer(path: str) -> bool:
    p = Path(path)
    return (p / "tokenizer_config.json").exists() or (p / "tokenizer.json").exists()


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~"))


def _check_local(name: str) -> None:
    """A name written as a path (`./m`, `/m`, `~/m`) that does not exist is a clear error."""
    if _looks_local(name) and not Path(name).expanduser().exists():
        raise ConfigError(f"cannot load model {name!r}: no such file or directory")


def _from_pretrained(path: str, dtype: torch.dtype) -> nn.Module:
    from transformers import AutoModelForCausalLM

    repo, revision = split_revision(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(repo, dtype=dtype, revision=revision)
    except OSError as exc:
        raise ConfigError(f"cannot load model {path!r}: {exc}") from None
    if revision:  # adapters trained on it record the pinned revision as their base
        model.config._name_or_path = path
    return model


def _load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    repo, revision = split_revision(path)
    tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def _set_mode(model: nn.Module, trainable: bool, adapter: bool) -> None:
    model.train(trainable)
    if not trainable:
        model.requires_grad_(False)
    elif not adapter:
        model.requires_grad_(True)


def max_positions(model: nn.Module) -> int | None:
    """The longest sequence the model's position embeddings cover (None when unbounded/unknown).

    A peft wrapper answers for its base model.
    """
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    cfg = model.config
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def cap_length(model: nn.Module, max_length: int) -> int:
    """`max_length` capped at the model's position limit: the one rule training, scoring,
    generation and evaluation all use."""
    limit = max_positions(model)
    return min(max_length, limit) if limit else max_length


# ---------------------------------------------------------------- LoRA
@dataclass
class LoraSettings:
    """LoRA hyper-parameters.

    Attributes:
        r: adapter rank.
        alpha: scaling numerator (`lora_alpha`); the update is scaled by alpha / r.
        dropout: dropout on the adapter input.
        targets: module names to adapt; None finds them from the architecture (`find_lora_targets`).
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] | None = None


def find_lora_targets(model: nn.Module) -> tuple[list[str], bool]:
    """`(target module names, fan_in_fan_out)`: attention projections when known, else all linears.

    `fan_in_fan_out` is True when the targets are GPT-2 style `Conv1D` layers (weights stored
    transposed).
    """
    layers = _adaptable_layers(model)
    for group in _PREFERRED_TARGETS:
        if all(name in layers for name in group):
            return list(group), _is_conv1d(layers[group[0]])
    names = sorted(name for name in layers if name not in _OUTPUT_LAYERS)
    if not names:
        raise ConfigError(f"no linear layers to adapt with LoRA in {type(model).__name__}")
    return names, any(_is_conv1d(layers[n]) for n in names)


def _adaptable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Leaf names (last dotted part) of Linear/Conv1D modules, mapped to one example module."""
    found: dict[str, nn.Module] = {}
    for full_name, module in model.named_modules():
        if isinstance(module, nn.Linear) or _is_conv1d(module):
            found.setdefault(full_name.rsplit(".", 1)[-1], module)
    return found


def _is_conv1d(module: nn.Module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def apply_lora(model: nn.Module, settings: LoraSettings | None = None) -> nn.Module:
    """Wrap `model` in a trainable peft LoRA model (base weights frozen)."""
    from peft import LoraConfig, get_peft_model

    settings = settings or LoraSettings()
    found, fan_in_fan_out = find_lora_targets(model)
    targets = list(settings.targets) if settings.targets else found
    if settings.targets:
        layers = _adaptable_layers(model)
        fan_in_fan_out = any(_is_conv1d(layers[t]) for t in targets if t in layers)
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        fan_in_fan_out=fan_in_fan_out,
    )
    with known_library_noise_silenced():
        return get_peft_model(model, config)


class _DropMaskAdvice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "strongly recommend passing in an `attention_mask`" not in record.getMessage()


@contextlib.contextmanager
def known_library_noise_silenced() -> Iterator[None]:
    """Silence two library messages that do not apply to our calls.

    peft 0.21 reads a property transformers 5 deprecated (a FutureWarning on every adapter load),
    and transformers advises an attention mask when a decoding step's input holds the pad id: our
    `generate` calls pass one, and the pad ids are the fill of rows that already ended.
    """
    log = logging.getLogger("transformers.modeling_utils")
    drop = _DropMaskAdvice()
    log.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
            yield
    finally:
        log.removeFilter(drop)


def is_peft_model(model: nn.Module) -> bool:
    """Whether `model` is a peft wrapper (saves as an adapter)."""
    return hasattr(model, "peft_config") and hasattr(model, "merge_and_unload")


# ---------------------------------------------------------------- saving
def save_model(model: nn.Module, tokenizer: Any, out_dir: str | Path) -> Path:
    """Save model (or adapter) and tokenizer into `out_dir` atomically; returns `out_dir`."""
    out_dir = Path(out_dir)
    tmp = io.temp_dir_for(out_dir)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        io.replace_dir(tmp, out_dir)
    except BaseException:
        _remove_tree(tmp)
        raise
    return out_dir


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def export_merged(path: str | Path, out_dir: str | Path, *, dtype: str | None = "fp32") -> Path:
    """Write a plain HF model dir with any LoRA adapter merged into the base weights."""
    model, tokenizer = load_model(path, dtype=dtype, device="cpu")
    if is_peft_model(model):
        model = model.merge_and_unload()
    return save_model(model, tokenizer, out_dir)


def model_summary(model: nn.Module) -> dict[str, int]:
    """Parameter counts: `params` (all) and `trainable`."""
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params": params, "trainable": trainable}
