"""Exact Sudoku solver: bitmask DPLL with naked and hidden singles, counting solutions and guesses.

State is a Python list of 81 candidate masks (bit d-1 set = digit d still possible); plain ints
and lists beat numpy here because every step touches only a handful of cells.

Search (DPLL, as in tdoku's DPLL solvers but without their triad/locked-candidate rules):
1. propagate to a fixpoint: a solved cell removes its digit from its 20 peers (naked singles);
   a digit with one place left in a row, column or box goes there (hidden singles);
   an empty cell or a unit missing a digit is a contradiction;
2. pick the unsolved cell with fewest candidates (MRV, first in row-major order on ties);
3. try its lowest candidate on a copy of the state (a *guess*); if that branch yields no
   (further) solution, remove the candidate from the current state, propagate, and go to 2.

``guesses`` counts step-3 trials made before the first solution is found. A candidate that
becomes the cell's only one after its siblings were refuted is a deduction, not a guess, so a
puzzle that singles alone solve rates 0, and a bivalue cell whose first value is right costs 1.
This is the difficulty rating, in the spirit of tdoku's guess count (sudoku-extreme's
``rating``); tdoku also propagates triads, so its counts run lower than ours on hard puzzles.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trmlm.puzzles.sudoku.grid import as_grid
from trmlm.errors import TRMError

ALL = 0x1FF  # all nine candidates
BIT = (0,) + tuple(1 << (d - 1) for d in range(1, 10))  # digit -> mask; 0 (blank) -> 0
_DIGIT = [0] * 512  # single-bit mask -> digit
for _d in range(1, 10):
    _DIGIT[BIT[_d]] = _d
_POP = tuple(bin(m).count("1") for m in range(512))
_BITS = tuple(tuple(1 << i for i in range(9) if m >> i & 1) for m in range(512))

_ROWS = [tuple(r * 9 + c for c in range(9)) for r in range(9)]
_COLS = [tuple(r * 9 + c for r in range(9)) for c in range(9)]
_BOXES = [tuple((b // 3 * 3 + i // 3) * 9 + b % 3 * 3 + i % 3 for i in range(9)) for b in range(9)]
UNITS = tuple(_ROWS + _COLS + _BOXES)
PEERS = tuple(tuple(sorted({p for u in UNITS if c in u for p in u} - {c})) for c in range(81))
CELL_RCB = tuple((c // 9, c % 9, c // 27 * 3 + c % 9 // 3) for c in range(81))  # row, column, box


def peer_candidates(cells: Sequence[int], cell: int) -> int:
    """The mask of digits none of `cell`'s 20 peers holds in `cells` (0 = blank)."""
    used = 0
    for p in PEERS[cell]:
        used |= BIT[cells[p]]
    return ALL & ~used


@dataclass
class SolveResult:
    """Outcome of solve(): first solution, solutions counted up to the limit, and effort."""

    solution: np.ndarray | None  # (81,) uint8, the first solution found
    n_solutions: int  # capped at the limit passed to solve()
    guesses: int  # branching guesses before the first solution (all of them if none)
    nodes: int  # propagation calls over the whole search: a measure of work


def _propagate(cands: list[int], todo: list[int]) -> bool:
    """Apply naked and hidden singles to a fixpoint in place; False on contradiction.

    ``todo`` holds cells that became single-valued and whose digit is not yet removed from
    their peers. Hidden singles are rescanned after every round since eliminations create them.
    """
    peers, units = PEERS, UNITS
    while True:
        while todo:
            c = todo.pop()
            m = cands[c]
            if not m:  # _initial_state queues cells its givens left empty
                return False
            for p in peers[c]:
                pm = cands[p]
                if pm & m:
                    pm ^= m
                    if not pm:
                        return False
                    cands[p] = pm
                    if not pm & (pm - 1):
                        todo.append(p)
        for unit in units:
            once = twice = solved = 0
            for c in unit:
                m = cands[c]
                twice |= once & m
                once |= m
                if not m & (m - 1):
                    solved |= m
            if once != ALL:
                return False
            hidden = once & ~(twice | solved)
            if hidden:
                for c in unit:
                    m = cands[c] & hidden
                    if m:
                        if m & (m - 1):  # two digits each with this cell as their only place
                            return False
                        cands[c] = m
                        todo.append(c)
        if not todo:
            return True


class _Search:
    """DPLL over propagated states; see the module docstring for what counts as a guess."""

    __slots__ = ("limit", "rnd", "count", "first", "guesses", "nodes")

    def __init__(self, limit: int, rnd: random.Random | None) -> None:
        self.limit = limit
        self.rnd = rnd  # None: lowest candidate first (deterministic rating); else random order
        self.count = 0
        self.first: list[int] | None = None
        self.guesses = 0
        self.nodes = 0

    def run(self, cands: list[int]) -> bool:
        """Search below an already propagated state; True once ``limit`` solutions are found."""
        pop = _POP
        while True:
            best, best_n = -1, 10
            for c in range(81):
                m = cands[c]
                if m & (m - 1):
                    n = pop[m]
                    if n < best_n:
                        best, best_n = c, n
                        if n == 2:
                            break
            if best < 0:
                self.count += 1
                if self.first is None:
                    self.first = cands[:]
                return self.count >= self.limit
            m = cands[best]
            bit = m & -m if self.rnd is None else self.rnd.choice(_BITS[m])
            if self.count == 0:
                self.guesses += 1
            self.nodes += 1
            child = cands[:]
            child[best] = bit
            if _propagate(child, [best]) and self.run(child):
                return True
            # The guess is refuted (or its solutions are counted): drop it and deduce onward.
            rest = m ^ bit
            cands[best] = rest
            self.nodes += 1
            if not _propagate(cands, [] if rest & (rest - 1) else [best]):
                return False


def _initial_state(cells: Sequence[int], skip: int = -1) -> tuple[list[int], list[int]] | None:
    """Candidates after removing every given's digit from its peers, plus the new singles.

    Equivalent to pushing each given through _propagate's peer loop, but row/column/box masks
    cost 2 passes over the grid instead of 20 peer visits per given (the generator's hot path).
    ``skip`` leaves one cell out, as if blank. None if two givens clash.
    """
    rows, cols, boxes = [0] * 9, [0] * 9, [0] * 9
    rcb = CELL_RCB
    for c in range(81):
        v = cells[c]
        if v and c != skip:
            b = BIT[v]
            r, k, x = rcb[c]
            if (rows[r] | cols[k] | boxes[x]) & b:
                return None
            rows[r] |= b
            cols[k] |= b
            boxes[x] |= b
    cands = []
    todo = []
    for c in range(81):
        v = cells[c]
        if v and c != skip:
            cands.append(BIT[v])
        else:
            r, k, x = rcb[c]
            m = ALL & ~(rows[r] | cols[k] | boxes[x])
            cands.append(m)
            if not m & (m - 1):  # a new single (or an empty cell, which _propagate reports)
                todo.append(c)
    return cands, todo


def solve_cells(cells: Sequence[int], limit: int = 2,
                rnd: random.Random | None = None) -> tuple[list[int] | None, int, int, int]:
    """List-based core of solve(): returns (first solution, n_solutions, guesses, nodes).

    ``rnd`` makes the search try candidates in random order (the generator uses this to draw
    random complete grids); ratings always use the deterministic order.
    """
    search = _Search(limit, rnd)
    search.nodes = 1
    state = _initial_state(cells)
    if state is not None and _propagate(*state):
        search.run(state[0])
    solution = None if search.first is None else [_DIGIT[m] for m in search.first]
    return solution, search.count, search.guesses, search.nodes


def has_other_solution(cells: Sequence[int], cell: int) -> bool:
    """True if blanking ``cell`` admits a solution with a different digit there.

    For a puzzle with a unique solution this is exactly "removing the clue breaks uniqueness",
    and it is cheaper than counting to 2: one refutation instead of a solve plus a refutation.
    """
    state = _initial_state(cells, skip=cell)
    if state is None:
        return False
    cands, todo = state
    cands[cell] &= ~BIT[cells[cell]]
    if not cands[cell] & (cands[cell] - 1):
        todo.append(cell)
    if not _propagate(cands, todo):
        return False
    search = _Search(1, None)
    search.run(cands)
    return search.count > 0


def solve(grid: object, limit: int = 2) -> SolveResult:
    """Solve a (81,) or (9, 9) grid (0 = blank), counting solutions up to ``limit``."""
    if limit < 1:
        raise TRMError(f"solution limit must be at least 1, got {limit}")
    cells = as_grid(grid).tolist()
    solution, count, guesses, nodes = solve_cells(cells, limit)
    array = None if solution is None else np.array(solution, dtype=np.uint8)
    return SolveResult(solution=array, n_solutions=count, guesses=guesses, nodes=nodes)


def count_solutions(grid: object, limit: int = 2) -> int:
    """Number of solutions, counted up to ``limit`` (2 answers "is it unique?")."""
    return solve(grid, limit).n_solutions


def rate(grid: object) -> int:
    """Difficulty: guesses the solver makes before its first solution (0 = singles suffice)."""
    return solve(grid, limit=1).guesses
