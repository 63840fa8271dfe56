"""Training batches and held-out sets of a reasoning-text task, as token tensors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from torch import Tensor

from trmlm.lm.tasks import rungs
from trmlm.lm.tasks.base import Example, TextTask, pack_rows
from trmlm.lm.tokenizer import Tokenizer

# A held-out problem stays out of training when its rung has at least this many distinct
# prompts per held-out problem; smaller rungs (e.g. the 100 problems of mul-1) are memorised
# by any model and report a seen-in-training accuracy (docs/language-model.md says which).
DISJOINT_FACTOR = 20


def disjoint_rungs(task: TextTask, heldout: list[Example]) -> set[str]:
    counts = Counter(ex.task for ex in heldout)
    return {r.name for r in rungs(task) if r.space >= DISJOINT_FACTOR * max(1, counts[r.name])}


class TaskBatches:
    """Unlimited training windows (B, L + 1) of freshly generated problems, packed back to back,
    with held-out prompts excluded where disjoint_rungs allows; an optional loss mask (B, L)
    that keeps the positions whose next token belongs to a target."""

    def __init__(self, task: TextTask, tokenizer: Tokenizer, length: int, heldout: list[Example],
                 loss_on: str = "all") -> None:
        self.task, self.tokenizer, self.length, self.loss_on = task, tokenizer, length, loss_on
        disjoint = disjoint_rungs(task, heldout)
        self.excluded = {ex.prompt for ex in heldout if ex.task in disjoint}

    def draw(self, rng: np.random.Generator, rows: int) -> tuple[Tensor, Tensor | None]:
        ids, mask, _ = self.draw_steps(rng, rows, 0)
        return ids, mask

    def draw_steps(self, rng: np.random.Generator, rows: int,
                   steps: int) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """draw(), and with `steps` the windows (steps, B, L + 1) each supervision step is trained
        toward (LMConfig.step_targets): the same rows, intermediate answers in place of targets."""
        packed = pack_rows(self.task, rng, rows, self.length + 1,
                           keep=lambda ex: ex.prompt not in self.excluded, steps=steps)
        ids = self._encode(packed.texts)
        per_step = torch.stack([self._encode(texts) for texts in packed.step_texts]) if steps else None
        if self.loss_on == "all":
            return ids, None, per_step
        mask = torch.tensor([flags[1:] for flags in packed.in_target], dtype=torch.bool)
        return ids, mask, per_step

    def _encode(self, texts: list[str]) -> Tensor:
        return torch.tensor([self.tokenizer.encode(t) for t in texts], dtype=torch.long)


def heldout_rows(examples: list[Example], length: int) -> list[str]:
    """The held-out problems as rows of exactly `length` characters packed like training rows:
    whole examples from a line start, the last one cut at the edge (its rest is dropped)."""
    rows, text = [], ""
    for ex in examples:
        text += ex.text
        if len(text) >= length:
            rows.append(text[:length])
            text = ""
    return rows
