"""Task-agnostic training data plumbing: a resumable shuffled index stream and the puzzle data bundle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from trmlm.errors import TRMError

ArrayBatch = dict[str, np.ndarray]


class IndexStream:
    """Epoch after epoch, a fresh seeded permutation of range(n); (epoch, pos) is its whole state."""

    def __init__(self, n: int, seed: int) -> None:
        if n < 1:
            raise ValueError("cannot stream an empty dataset")
        self.n, self.seed = n, seed
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def take(self, k: int) -> np.ndarray:
        out = []
        while k > 0:
            if self.pos == self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
            m = min(k, self.n - self.pos)
            out.append(self._perm[self.pos:self.pos + m])
            self.pos += m
            k -= m
        return np.concatenate(out)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos, "n": self.n, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._permutation(self.epoch)


@dataclass
class PuzzleData:
    """What a puzzle task hands the trainer.

    train_size: examples in one epoch (e.g. 1000 puzzles x 1000 augmentations).
    get_train: flat example indices -> {"inputs" (k, L), "labels" (k, L), "puzzle_ids" (k,)}.
    eval: the held-out set, same keys, evaluated with N_sup supervision steps.
    score: optional (inputs, predictions, labels) -> (B,) bool replacing exact match (Maze).
    num_puzzle_ids: rows the model's puzzle-embedding table needs (ARC: 1 + tasks x augs).
    """

    train_size: int
    get_train: Callable[[np.ndarray], ArrayBatch]
    eval: ArrayBatch
    description: str = ""
    score: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None
    num_puzzle_ids: int = 1


def unseen(train_questions: np.ndarray, test_questions: np.ndarray, source: str) -> np.ndarray:
    """The held-out rows to keep (a bool mask): those whose question is not also a training
    question. None left is an error, before any training or scoring, rather than exact 0.0 on
    nothing."""
    seen = {q.tobytes() for q in train_questions}
    keep = np.array([q.tobytes() not in seen for q in test_questions], dtype=bool)
    if not keep.any():
        why = "every test puzzle is also in its training split" if len(test_questions) else "its test split is empty"
        raise TRMError(f"no held-out puzzles to evaluate in {source}: {why}")
    return keep


def to_tensors(batch: ArrayBatch, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(v), dtype=torch.long, device=device)
            for k, v in batch.items()}
