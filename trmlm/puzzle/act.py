"""Deep supervision with the persistent ACT carry: one supervision step per optimizer step.

Training unrolls deep supervision across optimizer steps (official TRM): a batch "carry" of B
slots persists; each iteration runs ONE supervision step on every slot, slots whose example
halted are refilled with new examples (static shapes), and the (y, z) states are detached.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import Tensor

from trmlm.core import RecursionState
from trmlm.losses import IGNORE_INDEX, halt_loss, sequence_loss
from trmlm.puzzle.model import TRMPuzzleModel

Batch = dict[str, Tensor]  # "inputs" (B, L), "labels" (B, L), "puzzle_ids" (B,)


@dataclass
class ACTCarry:
    """Per-slot state of the persistent batch."""

    state: RecursionState   # (B, P + L, D) each, detached
    steps: Tensor           # (B,) supervision steps done on the slot's current example
    halted: Tensor          # (B,) bool: the slot's example is finished; refill before next step
    batch: Batch            # the examples currently in the slots


def new_carry(model: TRMPuzzleModel, batch: Batch) -> ACTCarry:
    """A carry holding `batch` in its slots, every slot at its initial state."""
    B = batch["inputs"].shape[0]
    device = batch["inputs"].device
    return ACTCarry(state=model.initial_state(B, device),
                    steps=torch.zeros(B, dtype=torch.long, device=device),
                    halted=torch.zeros(B, dtype=torch.bool, device=device),
                    batch={k: v.clone() for k, v in batch.items()})


def refill(model: TRMPuzzleModel, carry: ACTCarry, fetch: Callable[[int], Batch]) -> ACTCarry:
    """Replace halted slots by `fetch(k)` new examples with fresh states; others are untouched."""
    halted = carry.halted
    k = int(halted.sum())
    if k == 0:
        return carry
    new = fetch(k)
    idx = halted.nonzero().squeeze(-1)
    batch = {}
    for key, value in carry.batch.items():
        value = value.clone()
        value[idx] = new[key].to(value.device)
        batch[key] = value
    fresh = model.initial_state(halted.shape[0], halted.device)
    return ACTCarry(state=carry.state.where(halted, fresh),
                    steps=torch.where(halted, torch.zeros_like(carry.steps), carry.steps),
                    halted=torch.zeros_like(halted),
                    batch=batch)


@torch.no_grad()
def continue_target(model: TRMPuzzleModel, out, batch: Batch, steps: Tensor) -> Tensor:
    """HRM's Q-learning target for the continue logit (official hrm_act_v1.py): run the *next*
    supervision step without grad and bootstrap sigmoid(max(next q_halt, next q_continue)), or
    sigmoid(next q_halt) where the next step would be the last."""
    nxt = model(out.state, batch["inputs"], batch.get("puzzle_ids"), grad="none")
    last = steps >= model.cfg.max_sup_steps
    return torch.sigmoid(torch.where(last, nxt.q_halt, torch.maximum(nxt.q_halt, nxt.q_continue)))


@dataclass
class StepStats:
    loss: Tensor            # scalar with grad
    lm_loss: Tensor         # scalar, detached
    q_loss: Tensor
    cell_acc: Tensor        # token accuracy over the batch
    exact_acc: Tensor       # whole-sequence accuracy
    halted_frac: Tensor
    mean_steps_halted: Tensor  # mean steps used by the slots that halted this step (nan if none)


def act_step(model: TRMPuzzleModel, carry: ACTCarry, *, loss_kind: str = "stablemax",
             halt_loss_weight: float = 0.5, generator: torch.Generator | None = None,
             slots: slice | None = None, global_batch: int | None = None,
             ) -> tuple[ACTCarry, StepStats]:
    """One supervision step on every slot; returns the new carry and the loss to backprop.

    In data-parallel runs this process holds `slots` of a carry of `global_batch` slots; the
    exploration draws are made for the whole global carry and sliced, so a run with any number
    of processes makes the same halting decisions as a single process.
    """
    cfg = model.cfg
    out = model(carry.state, carry.batch["inputs"], carry.batch.get("puzzle_ids"))
    labels = carry.batch["labels"]
    steps = carry.steps + 1

    with torch.no_grad():
        valid = labels != IGNORE_INDEX
        correct = (out.logits.argmax(-1) == labels) & valid
        seq_correct = (correct | ~valid).all(-1)
        halted = steps >= cfg.max_sup_steps
        if model.training and cfg.max_sup_steps > 1:
            halted = halted | (out.halt_logit > 0)
            # Exploration (official): w.p. 0.1 a minimum step count uniform in [2, N_sup].
            shape = (global_batch or steps.shape[0],)
            part = slots or slice(None)
            explore = torch.rand(shape, generator=generator)[part].to(steps.device) < cfg.halt_exploration
            min_steps = torch.randint(2, cfg.max_sup_steps + 1, shape, generator=generator)[part].to(steps.device)
            halted = halted & (steps >= torch.where(explore, min_steps, torch.zeros_like(steps)))

    lm = sequence_loss(out.logits, labels, loss_kind)  # (B,)
    q = halt_loss(out.q_halt, seq_correct)             # (B,)
    if out.q_continue is not None and model.training:
        q = q + halt_loss(out.q_continue, continue_target(model, out, carry.batch, steps))
    loss = lm.mean() + halt_loss_weight * q.mean()
    n_valid = valid.sum().clamp(min=1)
    stats = StepStats(
        loss=loss, lm_loss=lm.mean().detach(), q_loss=q.mean().detach(),
        cell_acc=correct.sum() / n_valid, exact_acc=seq_correct.float().mean(),
        halted_frac=halted.float().mean(),
        mean_steps_halted=(steps[halted].float().mean() if halted.any()
                           else torch.tensor(float("nan"))),
    )
    return replace(carry, state=out.state, steps=steps, halted=halted), stats
