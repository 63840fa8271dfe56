"""What every benchmark report carries: hardware, versions, threads; JSON writing; FLOPs per decoded token."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from trmlm.config import TRMConfig
from trmlm.flops import f_forward_flops


def hardware(device: torch.device | str = "cpu") -> dict[str, Any]:
    """The machine a figure was measured on (every report embeds this); `device` ran the timed work."""
    info: dict[str, Any] = {"device": torch.device(device).type, "cpu": _cpu_name(), "cores": os.cpu_count(),
                            "threads": torch.get_num_threads(), "torch": torch.__version__,
                            "python": platform.python_version(),
                            "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    """Wait for queued GPU work before reading a clock (CUDA is asynchronous; a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_json(path: Path, report: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)
    return path


def decode_flops_per_token(net: TRMConfig, steps: Tensor, keys: Tensor, head_calls: Tensor,
                           q_calls: Tensor, commits: int = 1) -> Tensor:
    """Analytic matmul FLOPs of decoding each token (N,): `steps` supervision steps of T (n + 1)
    calls of f on one query reading `keys` entries (the committed prefix plus its own),
    `commits` commit calls of f (1 for the commit-last cache, one per level for the per-step
    cache: `cache.commits_per_token`), `head_calls` LM-head and `q_calls` halt-head evaluations."""
    a = f_forward_flops(net, 1, 1, keys=0)               # per call, independent of the prefix
    b = f_forward_flops(net, 1, 1, keys=1) - a           # per attended key
    calls = net.n_cycles * (net.n_latent + 1)
    s, k = steps.double(), keys.double()
    refine = calls * (a * s + b * s * k)
    commit = commits * (a + b * k)
    heads = 2 * net.d_model * net.vocab_size * head_calls.double() + 2 * net.d_model * q_calls.double()
    return refine + commit + heads
