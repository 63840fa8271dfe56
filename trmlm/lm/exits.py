"""Exit rules beside the learned halting head: fixed, random, oracle and training-free exits (AR-TRM.md §3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from trmlm.lm.halting import HaltPolicy
from trmlm.lm.model import TRMLanguageModel

# Every rule follows HaltPolicy's protocol (begin / halt / finish, max_steps), so the one decode
# loop in decode.refine_token runs them all. HaltPolicy itself is the learned exit (threshold on
# sigmoid(q)) and, with threshold None, the fixed depth.


@dataclass
class RandomExit(HaltPolicy):
    """Each token draws its depth so that the mean is `mean_depth`: floor(m) or floor(m) + 1
    (with probability frac(m)). The control for a learned exit of the same mean depth."""

    mean_depth: float = 1.0
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    threshold: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1.0 <= self.mean_depth <= self.max_steps:
            raise ValueError(f"mean_depth {self.mean_depth} outside [1, {self.max_steps}]")
        self._depth: Tensor | None = None

    def begin(self, batch: int, device: torch.device) -> None:
        base = math.floor(self.mean_depth)
        extra = torch.rand(batch, generator=self.generator) < (self.mean_depth - base)
        self._depth = (base + extra.long()).clamp(max=self.max_steps).to(device)  # (B,)

    def halt(self, step: int, y: Tensor, model: TRMLanguageModel) -> Tensor | None:
        return step >= self._depth


@dataclass
class KLExit(HaltPolicy):
    """Training-free: stop once KL(p_s || p_{s-1}) between successive steps' next-token
    distributions falls below `eps` nats (so at least 2 steps)."""

    eps: float = 0.01
    threshold: float | None = None

    def begin(self, batch: int, device: torch.device) -> None:
        self._prev: Tensor | None = None

    def halt(self, step: int, y: Tensor, model: TRMLanguageModel) -> Tensor | None:
        logp = torch.log_softmax(model.logits(y)[:, 0].float(), dim=-1)  # (B, V)
        prev, self._prev = self._prev, logp
        if prev is None or step < self.min_steps:
            return None
        return (logp.exp() * (logp - prev)).sum(-1) < self.eps


@dataclass
class ArgmaxExit(HaltPolicy):
    """Training-free: stop once the argmax prediction has not changed for `patience` successive
    steps (so at least patience + 1 steps)."""

    patience: int = 1
    threshold: float | None = None

    def begin(self, batch: int, device: torch.device) -> None:
        self._prev: Tensor | None = None
        self._same = torch.zeros(batch, dtype=torch.long, device=device)

    def halt(self, step: int, y: Tensor, model: TRMLanguageModel) -> Tensor | None:
        top = model.logits(y)[:, 0].argmax(-1)  # (B,)
        if self._prev is not None:
            self._same = torch.where(top == self._prev, self._same + 1, torch.zeros_like(self._same))
        self._prev = top
        return self._same >= self.patience


@dataclass
class OracleExit(HaltPolicy):
    """Knows the next token: runs all max_steps, then keeps (commits and predicts from) the step
    whose prediction gives the true next token the lowest NLL (ties: the shallowest). Reports that
    step as the depth; the compute actually spent is max_steps. Set `target` (B,) before each token."""

    threshold: float | None = None
    target: Tensor | None = None

    def begin(self, batch: int, device: torch.device) -> None:
        self._ys: list[Tensor] = []
        self._model: TRMLanguageModel | None = None

    def halt(self, step: int, y: Tensor, model: TRMLanguageModel) -> Tensor | None:
        self._ys.append(y)
        self._model = model
        return None

    def finish(self, y: Tensor, steps: Tensor) -> tuple[Tensor, Tensor]:
        if self.target is None:
            raise ValueError("OracleExit needs .target (the true next token) before every token")
        ys = torch.stack(self._ys)  # (S, B, 1, D)
        logp = torch.log_softmax(self._model.logits(ys)[:, :, 0].float(), dim=-1)  # (S, B, V)
        nll = -logp.gather(-1, self.target.view(1, -1, 1).expand(ys.shape[0], -1, 1))[..., 0]  # (S, B)
        best = nll.argmin(0)  # (B,) first minimum = shallowest
        return ys[best, torch.arange(ys.shape[1])], best + 1
