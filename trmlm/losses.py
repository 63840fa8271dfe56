"""Losses: stablemax and softmax cross-entropy, and the halting BCE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


def stablemax_s(x: Tensor) -> Tensor:
    """s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0 (Prieto et al. 2025, used by TRM)."""
    return torch.where(x >= 0, x + 1, 1.0 / (1.0 - torch.clamp(x, max=0.0)))


def log_stablemax(logits: Tensor, dim: int = -1) -> Tensor:
    s = stablemax_s(logits)
    return torch.log(s) - torch.log(s.sum(dim=dim, keepdim=True))


def token_cross_entropy(logits: Tensor, labels: Tensor, kind: str = "stablemax") -> Tensor:
    """Per-token CE (B, L); positions with label IGNORE_INDEX get 0. Stablemax runs in float64."""
    valid = labels != IGNORE_INDEX
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    if kind == "stablemax":
        logp = log_stablemax(logits.to(torch.float64))
    elif kind == "softmax":
        logp = F.log_softmax(logits.float(), dim=-1)
    else:
        raise ValueError(f"unknown loss {kind!r}")
    nll = -logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, nll, torch.zeros_like(nll)).float()


def sequence_loss(logits: Tensor, labels: Tensor, kind: str = "stablemax") -> Tensor:
    """Mean over valid tokens of each sequence (B,) — official: loss / per-sequence token count."""
    per_token = token_cross_entropy(logits, labels, kind)
    count = (labels != IGNORE_INDEX).sum(-1).clamp(min=1)
    return per_token.sum(-1) / count


def halt_loss(q_halt: Tensor, target: Tensor) -> Tensor:
    """Per-example BCE between the halt logit and the 0/1 target (B,)."""
    return F.binary_cross_entropy_with_logits(q_halt.float(), target.float(), reduction="none")
