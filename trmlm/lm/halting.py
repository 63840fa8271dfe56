"""The exit-rule protocol: HaltPolicy (learned halting head with a threshold; fixed depth)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from trmlm.lm.model import TRMLanguageModel


@dataclass
class HaltPolicy:
    """When a token stops refining. threshold None = halting disabled: always max_steps.

    The exit-rule protocol (every rule in exits.py follows it). A refinement is a block of
    tokens (B, L) refined together, each against its own committed prefix: one token per
    sequence in the decode loop (decode.refine_token, stepsync; L = 1), every position of the
    sequence in a Jacobi sweep (parallel.jacobi_states). The loop calls
      begin(batch, device, length)  once per block of tokens (per-token randomness is drawn here,
                                    so it is the same in every Jacobi sweep);
      halt(step, y, model)          after every supervision step, step = 1, 2, ... (step 1 starts
                                    a refinement: running state is reset there);
      finish(y, steps)              at the end of each refinement.
    A rule's decision for a token may depend only on that token's own states and draws, so
    the parallel evaluator, once its prefix is exact, halts every token where decoding does."""

    max_steps: int
    min_steps: int = 1
    threshold: float | None = 0.5   # halt after a supervision step once sigmoid(q) >= threshold

    def __post_init__(self) -> None:
        if self.max_steps < 1 or not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps ({self.min_steps}) <= max_steps ({self.max_steps})")

    @classmethod
    def fixed(cls, steps: int) -> HaltPolicy:
        return cls(max_steps=steps, min_steps=steps, threshold=None)

    def begin(self, batch: int, device: torch.device, length: int = 1) -> None:
        """New tokens (batch, length) start (per-token draws are made here)."""

    def halt(self, step: int, y: Tensor, model: TRMLanguageModel) -> Tensor | None:
        """After supervision step `step` (1-based) with answer states y (B, L, D): (B, L) bool,
        True = stop this token here; None = no token stops (the loop still ends at max_steps)."""
        if self.threshold is None or step < self.min_steps:
            return None
        return torch.sigmoid(model.halt_logit(y)) >= self.threshold

    def finish(self, y: Tensor, steps: Tensor) -> tuple[Tensor, Tensor]:
        """The states (B, L, D) to commit and predict from, and the steps (B, L) to report."""
        return y, steps
