"""The exit-rule protocol: HaltPolicy (learned halting head with a threshold; fixed depth)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from trmlm.lm.model import TRMLanguageModel


@dataclass
class HaltPolicy:
    """When a token stops refining. threshold None = halting disabled: always max_steps.

    The exit-rule protocol refine_token drives (the benchmark's other exits in exits.py follow
    it): `begin` once per token, `halt` after every supervision step, `finish` at the end."""

    max_steps: int
    min_steps: int = 1
    threshold: float | None = 0.5   # halt after a supervision step once sigmoid(q) >= threshold

    def __post_init__(self) -> None:
        if self.max_steps < 1 or not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps ({self.min_steps}) <= max_steps ({self.max_steps})")

    @classmethod
    def fixed(cls, steps: int) -> HaltPolicy:
        return cls(max_steps=steps, min_steps=steps, threshold=None)

    def begin(self, batch: int, device: torch.device) -> None:
        """A new token starts (stateful rules reset here)."""

    def halt(self, step: int, y: Tensor, model: TRMLanguageModel) -> Tensor | None:
        """After supervision step `step` (1-based) with answer state y (B, 1, D): (B,) bool, True =
        stop this token here; None = no sequence stops (the loop still ends at max_steps)."""
        if self.threshold is None or step < self.min_steps:
            return None
        return torch.sigmoid(model.halt_logit(y)[:, 0]) >= self.threshold

    def finish(self, y: Tensor, steps: Tensor) -> tuple[Tensor, Tensor]:
        """The state to commit and predict from, and the steps to report."""
        return y, steps
