"""Sudoku as text for the language model: the puzzle, '=', then the solution cell by cell.

    "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79="
    + the 81 solution digits + "\n"

Given cells are copies of the prompt (easy tokens: category "given"); blank cells need the
row/column/box reasoning (hard tokens: "blank"). Puzzles come from the project's generator
(unique solution, exactly B blanks), so the data are unlimited and seeded.

The chain-of-thought variant (`sudoku-text-B-cot`, the scratchpad baseline) first writes the
blanks in the order a person fills them, each as row letter, column digit and value ("c57":
row 3, column 5 holds 7), then ">" and the same 81-digit solution:

    <puzzle>=c57a13...>534678912...

The order (`deduction_order`) takes, while blanks remain, the first blank in row-major order
that is a naked single (its peers hold the other eight digits), else the first hidden single
(a unit where a digit has one place left; rows, then columns, then boxes, digits 1-9), else the
first blank with its value from the solution (a step no single forces: puzzles that need a
guess have some). So each written cell follows from the givens and the cells written before it,
the unit of work a scratchpad spells out.

Intermediate answers (the plain form's per-step targets, `step_targets: true`): the solution cell
by cell as the model sees it, each blank judged on the givens and the solution cells before it
(what the position writing it has read; `single_kinds`). After one unit of work only the naked
singles are written ("." for the other blanks), after two the hidden singles too, from the
third on every cell:

    puzzle:   9..1.3.8.871..6......9...576...87.2......9.3.5..32.61..8.7..36.162..5...73..62.41=
    step 1:   9..173286871..6.93.269481576...87924.4.619.3559732461848.791362162.35879739862541
    step 2:   95.173286871256.93326948157613.8792424.619735597324618485791362162435879739862541
    solution: 954173286871256493326948157613587924248619735597324618485791362162435879739862541
"""

from __future__ import annotations

import numpy as np

from trmlm.lm.tasks import register_task
from trmlm.lm.tasks.arithmetic import Mixture
from trmlm.lm.tasks.base import BLANK, END, GIVEN, PROMPT, SCRATCH, SEPARATOR, Example, TextTask
from trmlm.puzzles.sudoku.generator import generate_puzzle
from trmlm.puzzles.sudoku.grid import is_valid_solution
from trmlm.puzzles.sudoku.solver import BIT, UNITS, peer_candidates

BLANK_LEVELS = (10, 20, 30, 45)
ROW_LETTERS = "abcdefghi"


def deduction_order(puzzle, solution) -> list[tuple[int, str]]:
    """The blanks of `puzzle` in the order the scratchpad writes them, each with how it was
    found: "naked" (a naked single), "hidden" (a hidden single) or "guess" (no single left; the
    solution's value). Every single's value is the solution's, the solution being unique."""
    grid = [int(v) for v in puzzle]
    blanks = [c for c in range(81) if grid[c] == 0]
    order: list[tuple[int, str]] = []
    while blanks:
        found = next(((c, "naked") for c in blanks if peer_candidates(grid, c) in BIT[1:]), None)
        if found is None:
            found = next(((c, "hidden") for unit in UNITS for d in range(1, 10)
                          for c in _only_place(grid, unit, d)), None)
        cell, kind = found if found is not None else (blanks[0], "guess")
        grid[cell] = int(solution[cell])
        blanks.remove(cell)
        order.append((cell, kind))
    return order


def single_kinds(puzzle, solution) -> list[str]:
    """For each cell, how the solution line's writer finds it, reading the givens and the
    solution cells before it: "given", "naked" (a naked single), "hidden" (a hidden single in
    its row, column or box) or "other" (neither in one round)."""
    grid = [int(v) for v in puzzle]
    kinds = []
    for cell in range(81):
        if int(puzzle[cell]):
            kinds.append("given")
        elif peer_candidates(grid, cell) in BIT[1:]:
            kinds.append("naked")
        else:
            digit = int(solution[cell])
            hidden = any(_only_place(grid, unit, digit) == [cell] for unit in UNITS if cell in unit)
            kinds.append("hidden" if hidden else "other")
        grid[cell] = int(solution[cell])
    return kinds


def _only_place(grid: list[int], unit: tuple[int, ...], digit: int) -> list[int]:
    """[the one blank of `unit` that can hold `digit`], or [] (placed already, or several places)."""
    if any(grid[c] == digit for c in unit):
        return []
    places = [c for c in unit if grid[c] == 0 and peer_candidates(grid, c) & BIT[digit]]
    return places if len(places) == 1 else []


class SudokuText(TextTask):
    def __init__(self, blanks: int) -> None:
        self.blanks = blanks
        self.name = f"sudoku-text-{blanks}"
        self.alphabet = ".123456789=" + END
        self.max_target = 82

    def example(self, rng: np.random.Generator) -> Example:
        puzzle, solution, _ = generate_puzzle(rng, n_blanks=self.blanks)
        return self.from_grids(puzzle, solution)

    def from_grids(self, puzzle, solution) -> Example:
        """The line of a given puzzle (81 values, 0 = blank; this rung's number of blanks) and
        its solution: what example() writes for a generated one."""
        if int((np.asarray(puzzle) == 0).sum()) != self.blanks:
            raise ValueError(f"{self.name}: a puzzle with {self.blanks} blanks expected")
        prompt = "".join("." if v == 0 else str(v) for v in puzzle) + "="
        answer = "".join(str(v) for v in solution)
        trace = self.scratchpad(puzzle, solution)
        head, head_cats = (trace + ">", [SCRATCH] * len(trace) + [SEPARATOR]) if trace else ("", [])
        cats = [PROMPT] * 81 + [SEPARATOR] + head_cats + [GIVEN if v else BLANK for v in puzzle] + [SEPARATOR]
        steps = () if trace else self.intermediate(puzzle, solution, answer)
        return Example(prompt, head + answer + END, answer, tuple(cats), self.name, steps)

    def intermediate(self, puzzle, solution, answer: str) -> tuple[str, ...]:
        """The per-step targets: the solution after one unit of work (naked singles only), after
        two (hidden singles too), "." where a blank is still open; then the solution."""
        kinds = single_kinds(puzzle, solution)
        early = tuple("".join(d if k in known else "." for d, k in zip(answer, kinds)) + END
                      for known in (("given", "naked"), ("given", "naked", "hidden")))
        return (*early, answer + END)

    def scratchpad(self, puzzle, solution) -> str:
        """What the line writes before ">" and the solution: nothing here (the answer directly)."""
        return ""

    def is_valid(self, generated: str) -> bool:
        """A generated line that is a complete valid grid (for reporting; scoring is exact match,
        the solution being unique)."""
        line = self.extract_answer(generated)
        if len(line) != 81 or not line.isdigit() or "0" in line:
            return False
        return bool(is_valid_solution(np.array([int(c) for c in line]).reshape(9, 9)))


class SudokuTextCot(SudokuText):
    """The scratchpad form: the blanks in deduction order ("c57" = row c, column 5, value 7),
    ">", then the solution. The same puzzles as SudokuText for the same random draws."""

    def __init__(self, blanks: int) -> None:
        super().__init__(blanks)
        self.name = f"sudoku-text-{blanks}-cot"
        self.alphabet = ".123456789=" + ROW_LETTERS + ">" + END
        self.max_target = 3 * blanks + 1 + 82

    def scratchpad(self, puzzle, solution) -> str:
        return "".join(f"{ROW_LETTERS[c // 9]}{c % 9 + 1}{solution[c]}" for c, _ in deduction_order(puzzle, solution))

    def extract_answer(self, generated: str) -> str:
        """The 81 digits after the last ">" of the line (the scratchpad dropped)."""
        return generated.split(END, 1)[0].rsplit(">", 1)[-1]


for _b in BLANK_LEVELS:
    register_task(f"sudoku-text-{_b}", lambda b=_b: SudokuText(b))
    register_task(f"sudoku-text-{_b}-cot", lambda b=_b: SudokuTextCot(b))
register_task("sudoku-text", lambda: Mixture("sudoku-text", [SudokuText(b) for b in BLANK_LEVELS]))
register_task("sudoku-text-cot", lambda: Mixture("sudoku-text-cot", [SudokuTextCot(b) for b in BLANK_LEVELS]))
