"""Token sampling: temperature (0 = argmax), top-k, top-p, repetition penalty; explicit torch.Generator."""

from __future__ import annotations

import torch
from torch import Tensor


def top_k_mask(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits per row (ties at the k-th value kept), -inf elsewhere."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_mask(logits: Tensor, p: float) -> Tensor:
    """Nucleus: keep the smallest set of most likely tokens whose probability reaches p."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = probs.cumsum(-1) - probs  # mass of strictly more likely tokens
    drop_sorted = before >= p          # the most likely token is always kept (before = 0)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def apply_repetition_penalty(logits: Tensor, previous: Tensor, penalty: float) -> Tensor:
    """CTRL (Keskar et al. 2019): logits of tokens already seen are divided by `penalty` if
    positive, multiplied if negative. previous: (B, N) token ids."""
    if penalty == 1.0 or previous.numel() == 0:
        return logits
    seen = torch.gather(logits, -1, previous)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(-1, previous, seen)


def sample(logits: Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator | None = None) -> Tensor:
    """logits (B, V) -> token ids (B,). temperature 0 means argmax (greedy)."""
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(-1)
    logits = top_p_mask(top_k_mask(logits / temperature, top_k), top_p)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)
