"""Sudoku as text for the language model: the puzzle, '=', then the solution cell by cell.

    "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79="
    + the 81 solution digits + "\n"

Given cells are copies of the prompt (easy tokens: category "given"); blank cells need the
row/column/box reasoning (hard tokens: "blank"). Puzzles come from the project's generator
(unique solution, exactly B blanks), so the data are unlimited and seeded.
"""

from __future__ import annotations

import numpy as np

from trmlm.lm.tasks import register_task
from trmlm.lm.tasks.arithmetic import Mixture
from trmlm.lm.tasks.base import BLANK, END, GIVEN, PROMPT, SEPARATOR, Example, TextTask
from trmlm.puzzles.sudoku.generator import generate_puzzle
from trmlm.puzzles.sudoku.grid import is_valid_solution

BLANK_LEVELS = (10, 20, 30, 45)


class SudokuText(TextTask):
    def __init__(self, blanks: int) -> None:
        self.blanks = blanks
        self.name = f"sudoku-text-{blanks}"
        self.alphabet = ".123456789=" + END
        self.max_target = 82

    def example(self, rng: np.random.Generator) -> Example:
        puzzle, solution, _ = generate_puzzle(rng, n_blanks=self.blanks)
        prompt = "".join("." if v == 0 else str(v) for v in puzzle) + "="
        answer = "".join(str(v) for v in solution)
        cats = [PROMPT] * 81 + [SEPARATOR] + [GIVEN if v else BLANK for v in puzzle] + [SEPARATOR]
        return Example(prompt, answer + END, answer, tuple(cats), self.name)

    def is_valid(self, generated: str) -> bool:
        """A generated line that is a complete valid grid (for reporting; scoring is exact match,
        the solution being unique)."""
        line = self.extract_answer(generated)
        if len(line) != 81 or not line.isdigit() or "0" in line:
            return False
        return bool(is_valid_solution(np.array([int(c) for c in line]).reshape(9, 9)))


for _b in BLANK_LEVELS:
    register_task(f"sudoku-text-{_b}", lambda b=_b: SudokuText(b))
register_task("sudoku-text", lambda: Mixture("sudoku-text", [SudokuText(b) for b in BLANK_LEVELS]))
