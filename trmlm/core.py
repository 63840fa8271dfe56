"""The TRM recursion core: one network f, n latent steps + 1 answer step per cycle, T cycles.

This is the only place the n-then-1 loop exists; the puzzle model and the language model both
call `TRMCore.supervision_step`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from trmlm.config import TRMConfig
from trmlm.layers import AttnContext, ReasoningNet

GradMode = Literal["last_cycle", "none"]


@dataclass
class RecursionState:
    """The carried states: answer y and latent z, each (B, L, D)."""

    y: Tensor
    z: Tensor

    def detach(self) -> RecursionState:
        return RecursionState(self.y.detach(), self.z.detach())

    def where(self, mask: Tensor, other: RecursionState) -> RecursionState:
        """Per-example (mask (B,)) or per-position (mask (B, L)) select: `other` where mask is True,
        self elsewhere."""
        m = mask.view(*mask.shape, *([1] * (self.y.dim() - mask.dim())))
        return RecursionState(torch.where(m, other.y, self.y), torch.where(m, other.z, self.z))


class TRMCore(nn.Module):
    """Deep recursion with the network f (paper Alg. 3 / official trm.py).

    Ablations by config, inside this one loop (paper Tables 1-3):
    - separate_nets: a second network f_y for the answer step (HRM's f_L / f_H split);
    - single_z: no separate answer state: z = f(x + z) n times, then z = f(z), y is z;
    - grad="one_step": within the last cycle only the last latent call and the answer call
      carry grad (HRM's 1-step gradient approximation).
    """

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.n_latent = cfg.n_latent
        self.n_cycles = cfg.n_cycles
        self.single_z = cfg.single_z
        self.one_step = cfg.grad == "one_step"
        self.f = ReasoningNet(cfg)                                     # f (HRM: f_L)
        self.f_y = ReasoningNet(cfg) if cfg.separate_nets else None    # HRM: f_H

    def answer_net(self) -> ReasoningNet:
        return self.f_y if self.f_y is not None else self.f

    def cycle(self, state: RecursionState, x: Tensor, ctx: AttnContext) -> RecursionState:
        """n latent steps z = f(x + y + z), then one answer step y = f(y + z)."""
        y, z = state.y, state.z
        grad_on = torch.is_grad_enabled()
        for i in range(self.n_latent):
            # 1-step gradient: all latent calls but the last run without grad.
            with torch.set_grad_enabled(grad_on and not (self.one_step and i < self.n_latent - 1)):
                z = self.f(x + z if self.single_z else x + y + z, ctx)
        if self.single_z:
            z = self.answer_net()(z, ctx)
            return RecursionState(z, z)
        y = self.answer_net()(y + z, ctx)
        return RecursionState(y, z)

    def supervision_step(self, state: RecursionState, x: Tensor, ctx: AttnContext,
                         grad: GradMode = "last_cycle") -> RecursionState:
        """T cycles; the first T-1 without grad, the last with grad (unless grad="none").

        The returned state carries the graph of the last cycle only; callers detach it before
        carrying it to the next supervision step.
        """
        with torch.no_grad():
            for _ in range(self.n_cycles - 1):
                state = self.cycle(state, x, ctx)
        if grad == "none":
            with torch.no_grad():
                return self.cycle(state, x, ctx)
        return self.cycle(state.detach(), x, ctx)
