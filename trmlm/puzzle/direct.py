"""Direct-prediction baseline: the same blocks as TRM's f applied once, no recursion, one step."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from trmlm.config import TRMConfig
from trmlm.core import GradMode, RecursionState
from trmlm.layers import AttnContext, ReasoningNet
from trmlm.puzzle.model import TRMPuzzleModel


class DirectCore(nn.Module):
    """y = f(x): one pass of the n_layers blocks; the carried state is ignored (no recursion)."""

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__()
        self.f = ReasoningNet(cfg)

    def supervision_step(self, state: RecursionState, x: Tensor, ctx: AttnContext,
                         grad: GradMode = "last_cycle") -> RecursionState:
        if grad == "none":
            with torch.no_grad():
                h = self.f(x, ctx)
        else:
            h = self.f(x, ctx)
        return RecursionState(h, h)


class DirectPuzzleModel(TRMPuzzleModel):
    """Same embeddings, heads and network f as TRM (so the same parameter count), one forward pass.

    N_sup is forced to 1: without a carried state every further step would repeat the first.
    """

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__(replace(cfg, max_sup_steps=1, single_z=False, separate_nets=False))
        self.core = DirectCore(self.cfg)
        self.init_weights()
