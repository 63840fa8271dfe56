"""HRM baseline (Wang et al. 2025): two networks f_L, f_H, H_cycles x L_cycles, 1-step gradient."""

from __future__ import annotations

from dataclasses import replace

from trmlm.config import TRMConfig
from trmlm.layers import ReasoningNet
from trmlm.puzzle.model import TRMPuzzleModel


def hrm_config(cfg: TRMConfig) -> TRMConfig:
    """The TRM config read as HRM's: T = H_cycles, n = L_cycles, two nets, 1-step gradient.

    HRM's loop is TRM's loop shape (docs/baselines.md): for each of H_cycles high-level cycles,
    L_cycles low-level updates z_L = f_L(z_L + z_H + x), then z_H = f_H(z_H + z_L); everything
    under no_grad except the last f_L and the last f_H call (official hrm_act_v1.py). So HRM runs
    through the one recursion core (trmlm/core.py) with separate_nets=True and grad="one_step";
    the carry's y is z_H (read by the heads) and z is z_L.
    """
    return replace(cfg, separate_nets=True, grad="one_step", single_z=False, act_continue=True)


class HRMPuzzleModel(TRMPuzzleModel):
    """HRM for puzzles: same embeddings, prefix and heads as TRM, recursion with f_L and f_H.

    Halting is HRM's Q-learning ACT (act_continue): halt when q_halt > q_continue; q_continue is
    trained towards the bootstrapped target from a second forward pass (trmlm/act.py).
    """

    def __init__(self, cfg: TRMConfig) -> None:
        super().__init__(hrm_config(cfg))

    @property
    def f_L(self) -> ReasoningNet:
        return self.core.f

    @property
    def f_H(self) -> ReasoningNet:
        return self.core.f_y
