"""Model registry for puzzle tasks: `model.arch` picks TRM or a baseline with the same interface."""

from __future__ import annotations

from torch import nn

from trmlm.config import TRMConfig
from trmlm.puzzle.direct import DirectPuzzleModel
from trmlm.errors import TRMError
from trmlm.puzzle.hrm import HRMPuzzleModel
from trmlm.puzzle.model import TRMPuzzleModel

# Every entry takes a TRMConfig and returns a module with the TRMPuzzleModel interface:
# .cfg, initial_state(B, device), forward(state, tokens, puzzle_ids, grad) -> StepOutput,
# num_parameters().
# TRM ablations (single_z, separate_nets, grad="one_step", train.ema_decay=0) are config fields
# of "trm", not separate entries (docs/baselines.md).
ARCHS: dict[str, type[nn.Module]] = {
    "trm": TRMPuzzleModel,          # the paper's model
    "hrm": HRMPuzzleModel,          # baseline: f_L + f_H, 1-step gradient (trmlm/hrm.py)
    "direct": DirectPuzzleModel,    # baseline: same blocks, one pass, no recursion (trmlm/direct.py)
}


def build_puzzle_model(cfg: TRMConfig) -> nn.Module:
    arch = getattr(cfg, "arch", "trm")
    if arch not in ARCHS:
        raise TRMError(f"unknown model arch '{arch}' (available: {', '.join(sorted(ARCHS))})")
    return ARCHS[arch](cfg)
