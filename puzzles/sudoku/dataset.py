"""SudokuSet: a batch of puzzles with their solutions and difficulty ratings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trmlm.errors import TRMError


@dataclass
class SudokuSet:
    """Puzzles (0 = blank), their solutions and ratings (solver guesses; see solver.py)."""

    questions: np.ndarray  # (N, 81) uint8
    answers: np.ndarray  # (N, 81) uint8
    ratings: np.ndarray  # (N,) int32

    def __post_init__(self) -> None:
        self.questions = np.asarray(self.questions, dtype=np.uint8).reshape(-1, 81)
        self.answers = np.asarray(self.answers, dtype=np.uint8).reshape(-1, 81)
        self.ratings = np.asarray(self.ratings, dtype=np.int32).reshape(-1)
        n = len(self.questions)
        if len(self.answers) != n or len(self.ratings) != n:
            raise TRMError(f"SudokuSet sizes disagree: {n} questions, {len(self.answers)} answers,"
                           f" {len(self.ratings)} ratings")

    def __len__(self) -> int:
        return len(self.questions)

    def subset(self, idx: np.ndarray | slice | list[int]) -> SudokuSet:
        """The rows picked by ``idx`` (indices, a slice or a bool mask), copied."""
        return SudokuSet(self.questions[idx].copy(), self.answers[idx].copy(), self.ratings[idx].copy())

    def difficulty_summary(self) -> dict[str, float]:
        """n, mean/median/p90 rating, share needing at least one guess, mean blanks."""
        if len(self) == 0:
            return {"n": 0, "mean_rating": 0.0, "median_rating": 0.0, "p90_rating": 0.0,
                    "share_guessing": 0.0, "mean_blanks": 0.0}
        r = self.ratings.astype(np.float64)
        return {
            "n": len(self),
            "mean_rating": float(r.mean()),
            "median_rating": float(np.median(r)),
            "p90_rating": float(np.percentile(r, 90)),
            "share_guessing": float((r >= 1).mean()),
            "mean_blanks": float((self.questions == 0).sum(axis=1).mean()),
        }
