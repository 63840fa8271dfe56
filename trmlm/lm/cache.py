"""Preallocated commit-last KV cache: one committed (K, V) per layer per token, whatever the depth."""

from __future__ import annotations

import torch
from torch import Tensor

from trmlm.layers import KV


class KVCache:
    """(layers, B, H, max_len, Dh) keys and values, filled left to right.

    Only `commit` writes and only `commit` advances `pos` (the position of the next token). The
    recursion depth (N_sup, n, T) never enters the shape: memory per token is layers x 2 x D
    values (docs/language-model.md), unlike Huginn's one entry per recursion step.
    """

    def __init__(self, n_layers: int, batch: int, n_heads: int, head_dim: int, max_len: int,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        shape = (n_layers, batch, n_heads, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.pos = 0

    @classmethod
    def for_model(cls, model, batch: int, max_len: int | None = None) -> KVCache:
        net = model.cfg.model
        p = next(model.parameters())
        return cls(model.cache_layers, batch, net.n_heads, net.head_dim, max_len or net.seq_len,
                   device=p.device, dtype=p.dtype)

    @property
    def free(self) -> int:
        return self.max_len - self.pos

    def prefix(self) -> list[KV]:
        """Committed entries of all tokens so far, per layer: views (B, H, pos, Dh)."""
        return [(self.k[i, :, :, :self.pos], self.v[i, :, :, :self.pos])
                for i in range(self.k.shape[0])]

    def positions(self, count: int = 1) -> Tensor:
        """Positions of the next `count` tokens."""
        return torch.arange(self.pos, self.pos + count, device=self.k.device)

    def commit(self, kvs: list[KV]) -> None:
        """Store per-layer (K, V) (B, H, m, Dh) for the next m tokens and advance the position."""
        m = kvs[0][0].shape[2]
        if self.pos + m > self.max_len:
            raise ValueError(f"KV cache full: {self.pos} + {m} > {self.max_len} positions")
        for i, (k, v) in enumerate(kvs):
            self.k[i, :, :, self.pos:self.pos + m] = k
            self.v[i, :, :, self.pos:self.pos + m] = v
        self.pos += m  # the one place the position advances

    def reset(self) -> None:
        self.pos = 0

    @property
    def commits_per_token(self) -> int:
        """Commit passes (calls of f) per decoded token: one."""
        return 1

    def bytes_per_token(self) -> int:
        """layers x 2 (K and V) x H x Dh (= D) x element size, per sequence."""
        L, _, H, _, Dh = self.k.shape
        return L * 2 * H * Dh * self.k.element_size()

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2
