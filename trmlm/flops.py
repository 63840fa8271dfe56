"""Analytic FLOP counts for the network f and a TRM supervision step, and a measured matmul peak."""

from __future__ import annotations

import time

import torch

from trmlm.config import TRMConfig, swiglu_width


def f_forward_flops(cfg: TRMConfig, batch: int, length: int | None = None, keys: int | None = None) -> float:
    """Matmul FLOPs of one forward call of f over (batch, length) positions.

    keys: attended positions per query (default: length, i.e. full attention). Elementwise ops
    and norms are ignored (they are O(D) per position, the matmuls O(D^2)).
    """
    L = cfg.total_len if length is None else length
    K = L if keys is None else keys
    D, W = cfg.d_model, cfg.ffn_width
    tokens = batch * L
    channel_mlp = 2 * tokens * (D * 2 * W + W * D)
    if cfg.mixer == "attention":
        proj = 2 * tokens * (D * 3 * D + D * D)
        scores = 2 * 2 * batch * L * K * D  # QK^T and AV
        mix = proj + scores
    else:
        Wt = swiglu_width(L, cfg.expansion, cfg.swiglu_multiple)
        mix = 2 * batch * D * (L * 2 * Wt + Wt * L)
    per_block = mix + channel_mlp
    return float(cfg.n_layers * per_block)


def train_step_flops(cfg: TRMConfig, batch: int) -> dict[str, float]:
    """FLOPs of one training supervision step: T-1 cycles forward only, the last forward+backward
    (backward = 2x forward), plus the output head."""
    calls = cfg.n_latent + 1
    f = f_forward_flops(cfg, batch)
    head = 2 * batch * cfg.seq_len * cfg.d_model * cfg.vocab_size
    no_grad = (cfg.n_cycles - 1) * calls * f
    with_grad = 3 * (calls * f + head)
    return {"total": no_grad + with_grad, "forward_only_part": no_grad, "grad_part": with_grad}


def measure_matmul_peak(size: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32,
                        device: str = "cpu") -> float:
    """Best-of-N GFLOP/s of a square matmul at the current torch thread count."""
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9
