"""Exit rules beside the learned halting head: fixed, random, oracle and training-free exits (docs/benchmarks.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from trmlm.lm.halting import HaltPolicy
from trmlm.lm.model import TRMLanguageModel

# Every rule follows HaltPolicy's protocol (begin / halt / finish over a block of tokens (B, L),
# max_steps), so the one decode loop in decode.refine_token and the Jacobi evaluator in
# parallel.jacobi_states run them all. HaltPolicy itself is the learned exit (threshold on
# sigmoid(q)) and, with threshold None, the fixed depth.


@dataclass
class RandomExit(HaltPolicy):
    """Each token draws its depth so that the mean is `mean_depth`: floor(m) or floor(m) + 1
    (with probability frac(m)). The control for a learned exit of the same mean depth.

    Draws are made token after token (position-major), so a block of L tokens gets the depths
    that L single-token decode steps would draw from the same generator state."""

    mean_depth: float = 1.0
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    threshold: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1.0 <= self.mean_depth <= self.max_steps:
            raise ValueError(f"mean_depth {self.mean_depth} outside [1, {self.max_steps}]")
        self._depth: Tensor | None = None

    def begin(self, batch: int, device: torch.device, length: int = 1) -> None:
        base = math.floor(self.mean_depth)
        u = torch.rand(length * batch, generator=self.generator).view(length, batch).T  # (B, L)
        extra = u < (self.mean_depth - base)
        self._depth = (base + extra.long()).clamp(max=self.max_steps).to(device)  # (B, L)

    def halt(self, step: int, y: Tensor, model: TRMLanguageModel) -> Tensor | None:
        return step >= self._depth


@dataclass
class KLExit(HaltPolicy):
    """Training-free: stop once KL(p_s || p_{s-1}) between successive steps' next-token
    distributions falls below `eps` nats (so at least 2 steps)."""

    eps: float = 0.01
    threshold: float | None = None

    def halt(self, step: int, y: Tensor, model: TRMLanguageModel) -> Tensor | None:
        logp = torch.log_softmax(model.logits(y).float(), dim=-1)  # (B, L, V)
        prev = None if step == 1 else self._prev
        self._prev = logp
        if prev is None or step < self.min_steps:
            return None
        return (logp.exp() * (logp - prev)).sum(-1) < self.eps  # (B, L)


@dataclass
class ArgmaxExit(HaltPolicy):
    """Training-free: stop once the argmax prediction has not changed for `patience` successive
    steps (so at least patience + 1 steps)."""

    patience: int = 1
    threshold: float | None = None

    def halt(self, step: int, y: Tensor, model: TRMLanguageModel) -> Tensor | None:
        top = model.logits(y).argmax(-1)  # (B, L)
        if step == 1:
            self._same = torch.zeros_like(top)
        else:
            self._same = torch.where(top == self._prev, self._same + 1, torch.zeros_like(self._same))
        self._prev = top
        return self._same >= self.patience


@dataclass
class OracleExit(HaltPolicy):
    """Knows the next token: runs all max_steps, then keeps (commits and predicts from) the step
    whose prediction gives the true next token the lowest NLL (ties: the shallowest). Reports that
    step as the depth; the compute actually spent is max_steps. Set `target` before each block
    of tokens: (B,) for one token per sequence, (B, L) for a Jacobi sweep over L positions."""

    threshold: float | None = None
    target: Tensor | None = None

    def halt(self, step: int, y: Tensor, model: TRMLanguageModel) -> Tensor | None:
        if step == 1:
            self._ys: list[Tensor] = []
        self._ys.append(y)
        self._model = model
        return None

    def finish(self, y: Tensor, steps: Tensor) -> tuple[Tensor, Tensor]:
        B, L = y.shape[:2]
        if self.target is None or self.target.numel() != B * L:
            got = None if self.target is None else tuple(self.target.shape)
            raise ValueError(f"OracleExit needs .target, the true next token of each of the {B} x {L} "
                             f"tokens being refined, set before they start (got {got})")
        target = self.target.reshape(B, L)
        ys = torch.stack(self._ys)  # (S, B, L, D)
        logp = torch.log_softmax(self._model.logits(ys).float(), dim=-1)  # (S, B, L, V)
        nll = -logp.gather(-1, target.expand(ys.shape[0], B, L)[..., None])[..., 0]  # (S, B, L)
        best = nll.argmin(0)  # (B, L) first minimum = shallowest
        picked = ys.gather(0, best[None, ..., None].expand(1, B, L, ys.shape[-1]))[0]  # (B, L, D)
        return picked, best + 1
