"""The TRM LM's training objective pieces: per-step loss weights and the halting head's loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trmlm.lm.config import LMConfig
from trmlm.lm.model import TRMLanguageModel


def step_weights(kind: str, steps: int) -> list[float]:
    """Per-supervision-step loss weights, mean 1 (LMConfig.step_weights)."""
    if kind == "equal":
        return [1.0] * steps
    if kind == "linear":
        return [steps * (s + 1) / sum(range(1, steps + 1)) for s in range(steps)]
    return [0.0] * (steps - 1) + [float(steps)]


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return values.mean()
    return (values * mask).sum() / mask.sum().clamp(min=1)


def halt_label(gain: Tensor, scale: float, margin: float) -> Tensor:
    """Soft "halt" label from the loss a token would still gain by continuing: 1 - sigmoid(
    scale (max(0, gain) - margin)). The form of the `improvement` and `final` targets, and of
    the labels trm calibrate-halt fits (trmlm/lm/calibrate.py)."""
    return 1.0 - torch.sigmoid(scale * (gain.clamp(min=0) - margin))


def _bce(logit: Tensor, label: Tensor, mask: Tensor | None) -> Tensor:
    return masked_mean(F.binary_cross_entropy_with_logits(logit, label, reduction="none"), mask)


def halt_loss(cfg: LMConfig, model: TRMLanguageModel, y: Tensor, logits: Tensor, targets: Tensor,
              ce: Tensor, history: list[tuple[Tensor, Tensor]], last: bool,
              reference: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
    """The halting head's loss after supervision step s (docs/language-model.md, "Halting").

    `correct`: BCE(q(y_s), 1[argmax head(y_s) == t_{i+1}]). `improvement` (Ouro): q(y_{s-1})
    learns whether step s lowered the token's CE: halt label = 1 - sigmoid(scale (max(0,
    CE_{s-1} - CE_s) - margin)); no label at s = 1. `final`: at the last step, q(y_s) of every
    step s learns whether stopping there loses against full depth: halt label = 1 - sigmoid(
    scale (max(0, CE_s - CE_{N_sup}) - margin)). `history` holds the detached (y_s, CE_s) of the
    earlier steps; every label comes from detached losses (all tokens, whatever the loss mask).
    `reference` (updates=sampled, which never reaches step N_sup): the full-depth CE to compare
    with, from the final_sweep states; the labels then come at whatever step the batch stops.
    `mask` (same shape as ce): the entries that count (refine_on "loss" pads its gathered rows)."""
    h = cfg.halt
    if h.target == "correct":
        label = (logits.detach().argmax(-1) == targets).float()
        return _bce(model.halt_logit(y), label, mask)
    if h.target == "improvement":
        if not history:
            return y.new_zeros(())
        prev_y, prev_ce = history[-1]
        label = halt_label(prev_ce - ce.detach(), h.improvement_scale, h.improvement_margin)
        return _bce(model.halt_logit(prev_y), label, mask)
    if not last and reference is None:
        return y.new_zeros(())
    final_ce = ce.detach() if reference is None else reference
    losses = []
    for past_y, past_ce in [*history, (y.detach(), ce.detach())]:
        label = halt_label(past_ce - final_ce, h.improvement_scale, h.improvement_margin)
        losses.append(_bce(model.halt_logit(past_y), label, mask))
    return torch.stack(losses).mean()


@torch.no_grad()
def step_log(model: TRMLanguageModel, y: Tensor, ce: Tensor, mask: Tensor | None, q_loss: Tensor,
              sup_step: int) -> dict[str, float]:
    """What a TRM supervision step logs: its loss, halting loss, step and mean halt probability."""
    return {"loss": float(masked_mean(ce, mask)), "q_loss": float(q_loss), "sup_step": sup_step,
            "halt_prob": float(torch.sigmoid(model.halt_logit(y)).mean())}
