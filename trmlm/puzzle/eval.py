"""Puzzle evaluation: N_sup supervision steps on held-out examples, whole-sequence exact match."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from trmlm.puzzle.data import ArrayBatch, to_tensors
from trmlm.losses import IGNORE_INDEX
from trmlm.puzzle.model import TRMPuzzleModel
from trmlm.runtime import Runtime


@dataclass
class Trace:
    """Per-step predictions for a batch: what `trm solve --show-steps` renders."""

    predictions: np.ndarray   # (S, B, L) argmax tokens after each supervision step
    q_halt: np.ndarray        # (S, B) halt logits (> 0 = halt; q_halt - q_continue under Q-learning ACT)
    confidence: np.ndarray    # (S, B) mean max-probability over positions


@torch.no_grad()
def trace_supervision(model: TRMPuzzleModel, inputs: torch.Tensor, puzzle_ids: torch.Tensor | None,
                      steps: int | None = None, runtime: Runtime | None = None) -> Trace:
    """Run `steps` (default N_sup) supervision steps from the initial state, recording each."""
    steps = steps or model.cfg.max_sup_steps
    state = model.initial_state(inputs.shape[0], inputs.device)
    preds, qs, confs = [], [], []
    ctx = runtime.autocast() if runtime is not None else torch.autocast("cpu", enabled=False)
    for _ in range(steps):
        with ctx:
            out = model(state, inputs, puzzle_ids, grad="none")
        state = out.state
        probs = out.logits.float().softmax(-1)
        preds.append(out.logits.argmax(-1).cpu().numpy())
        qs.append(out.halt_logit.float().cpu().numpy())
        confs.append(probs.max(-1).values.mean(-1).cpu().numpy())
    return Trace(np.stack(preds), np.stack(qs), np.stack(confs))


# (inputs (B, L), predictions (B, L), labels (B, L)) -> (B,) bool: a task's own "solved" test
# (Maze: the predicted path is valid and shortest, since many shortest paths exist).
IsCorrect = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def evaluate(model: TRMPuzzleModel, data: ArrayBatch, runtime: Runtime, batch_size: int = 256,
             limit: int | None = None, is_correct: IsCorrect | None = None) -> dict[str, float]:
    """Exact/cell accuracy after N_sup steps, exact accuracy per step, and where q would halt.

    `is_correct` replaces whole-sequence equality for "exact_acc" when given."""
    was_training = model.training
    model.eval()
    n = len(data["inputs"]) if limit is None else min(limit, len(data["inputs"]))
    S = model.cfg.max_sup_steps
    exact_per_step = np.zeros(S)
    cells = cells_total = blanks_ok = blanks_total = 0
    halt_steps = []
    for start in range(0, n, batch_size):
        chunk = {k: v[start:min(start + batch_size, n)] for k, v in data.items()}  # never past the limit
        t = to_tensors(chunk, runtime.device)
        tr = trace_supervision(model, t["inputs"], t.get("puzzle_ids"), S, runtime)
        labels = chunk["labels"]
        valid = labels != IGNORE_INDEX
        ok = (tr.predictions == labels[None]) | ~valid[None]  # (S, B, L)
        if is_correct is None:
            exact_per_step += ok.all(-1).sum(-1)
        else:
            exact_per_step += [np.asarray(is_correct(chunk["inputs"], p, labels)).sum()
                               for p in tr.predictions]
        last = ok[-1] & valid
        cells += last.sum()
        cells_total += valid.sum()
        # Cells that are not given in the input (the part a solver must actually fill).
        free = valid & (chunk["inputs"] != labels)
        blanks_ok += (last & free).sum()
        blanks_total += free.sum()
        fired = tr.q_halt > 0  # (S, B)
        halt_steps.extend(np.where(fired.any(0), fired.argmax(0) + 1, S).tolist())
    model.train(was_training)
    exact = exact_per_step / max(n, 1)
    return {
        "exact_acc": float(exact[-1]),
        "cell_acc": float(cells / max(cells_total, 1)),
        "blank_cell_acc": float(blanks_ok / max(blanks_total, 1)),
        "mean_halt_step": float(np.mean(halt_steps)) if halt_steps else float("nan"),
        "exact_acc_per_step": [round(float(x), 4) for x in exact],
        "n_eval": n,
    }
