"""Run-time selection of device, precision and threads: the GPU path and the CPU path side by side."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from trmlm.errors import TRMError


@dataclass
class Runtime:
    device: torch.device
    autocast_dtype: torch.dtype | None  # None = plain fp32

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    @property
    def fused_adam(self) -> bool:
        return self.device.type == "cuda"


def resolve_runtime(device: str = "auto", dtype: str = "auto", threads: int = 0) -> Runtime:
    """auto: CUDA with bf16 autocast when a GPU is present; CPU in fp32 otherwise (bf16 is
    20-100x slower than fp32 on AVX2 CPUs, measured: docs/training.md)."""
    if threads < 0:
        raise TRMError(f"threads must be >= 0 (0 = torch's default), got {threads}")
    if threads > 0:
        torch.set_num_threads(threads)
    if device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise TRMError(f"unknown device {device!r} (use auto, cpu or cuda)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise TRMError("device 'cuda' requested but no CUDA GPU is available")
    if dtype == "auto":
        amp = torch.bfloat16 if dev.type == "cuda" else None
    elif dtype == "bfloat16":
        amp = torch.bfloat16
    elif dtype == "float32":
        amp = None
    else:
        raise TRMError(f"unknown dtype {dtype!r} (use auto, float32 or bfloat16)")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return Runtime(device=dev, autocast_dtype=amp)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
