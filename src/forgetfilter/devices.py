"""Devices and precisions: which device to run on, which dtype, which attention kernels."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from .errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Set to 1 to let PyTorch use cuDNN attention in our forward passes (see `attention_backends`).
CUDNN_SDPA_ENV = "FORGETFILTER_CUDNN_SDPA"


def pick_device() -> str:
    """`cuda` when a GPU is visible, else `mps` on Apple silicon, else `cpu`."""
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


@contextlib.contextmanager
def attention_backends(device: str | torch.device) -> Iterator[None]:
    """Scaled-dot-product attention backends for our variable-length batches.

    On CUDA, cuDNN attention is left out (flash, memory-efficient and math remain): PyTorch 2.11
    tries it first on recent GPUs for padded batches, and it builds an execution plan for every new
    (batch, length) shape, several hundred ms each (measured on an H200: README, Performance), while
    length-sorted batches have a new shape nearly every time. Elsewhere, or with
    `FORGETFILTER_CUDNN_SDPA=1`, PyTorch's own choice stands.
    """
    if torch.device(device).type != "cuda" or os.environ.get(CUDNN_SDPA_ENV) == "1":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    allowed = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    with sdpa_kernel(allowed):
        yield


def resolve_dtype(
    dtype: str | torch.dtype | None, device: str | torch.device | None = None
) -> torch.dtype:
    """A torch dtype from `fp32|bf16|fp16` (or a dtype); None picks bf16 on a bf16-capable GPU, else fp32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        device = str(device or pick_device())
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]
