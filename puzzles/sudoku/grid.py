"""Sudoku grids: parsing, validation, pretty printing and the model's token encoding."""

from __future__ import annotations

import numpy as np

from trmlm.errors import TRMError

SEQ_LEN = 81
# As the reference build_sudoku_dataset.py (docs/sudoku.md): PAD 0, blank 1, digits 1..9 -> tokens 2..10.
VOCAB_SIZE = 11
PAD_TOKEN = 0
BLANK_TOKEN = 1

# Characters a pasted, pretty-printed grid may contain between cells (format_grid emits these).
_SEPARATORS = frozenset(" \t\r\n|-+")
_BLANKS = frozenset(".0")

# Cell indices of every unit, one row per unit: (9, 9) each.
ROWS = np.arange(81).reshape(9, 9)
COLS = ROWS.T.copy()
BOXES = ROWS.reshape(3, 3, 3, 3).transpose(0, 2, 1, 3).reshape(9, 9)  # (band, stack, row, col)
UNITS = np.concatenate([ROWS, COLS, BOXES])  # (27, 9)
_UNIT_NAMES = [f"{kind} {i + 1}" for kind in ("row", "column", "box") for i in range(9)]
_FULL_UNIT_MASK = 0b1111111110  # bits 1..9: every digit once, no blank


def as_grid(grid: object) -> np.ndarray:
    """Return ``grid`` as a (81,) uint8 array of 0..9, accepting (81,) or (9, 9) input."""
    arr = np.asarray(grid)
    if arr.shape == (9, 9):
        arr = arr.reshape(81)
    if arr.shape != (SEQ_LEN,):
        raise TRMError(f"a sudoku grid must have shape (81,) or (9, 9), got {arr.shape}")
    if arr.dtype.kind not in "iu" or arr.min() < 0 or arr.max() > 9:
        raise TRMError("a sudoku grid must hold integers 0..9 (0 = blank)")
    return arr.astype(np.uint8)


def _parse_cells(text: str, what: str) -> np.ndarray:
    cells: list[int] = []
    for pos, ch in enumerate(text):
        if ch in _SEPARATORS:
            continue
        if ch in _BLANKS:
            cells.append(0)
        elif "1" <= ch <= "9":
            cells.append(ord(ch) - 48)
        else:
            raise TRMError(f"illegal character {ch!r} at position {pos + 1} of the {what}"
                           " (use digits 1-9 and '.' or '0' for blanks)")
    if len(cells) != SEQ_LEN:
        raise TRMError(f"{what} has {len(cells)} cells, expected 81")
    return np.array(cells, dtype=np.uint8)


def parse_puzzle(text: str) -> np.ndarray:
    """Parse 81 cells (digits, '.'/'0' blanks; whitespace and '|', '-', '+' ignored) into a grid."""
    grid = _parse_cells(text, "puzzle")
    found = conflicts(grid)
    if found:
        raise TRMError(f"contradictory puzzle: {found[0]}")
    return grid


def parse_solution(text: str) -> np.ndarray:
    """Parse a complete grid, rejecting blanks and rule violations."""
    grid = _parse_cells(text, "solution")
    blanks = np.flatnonzero(grid == 0)
    if blanks.size:
        r, c = divmod(int(blanks[0]), 9)
        raise TRMError(f"solution has {blanks.size} blank cells (first at row {r + 1}, column {c + 1})")
    found = conflicts(grid)
    if found:
        raise TRMError(f"invalid solution: {found[0]}")
    return grid


def conflicts(grid: object) -> list[str]:
    """Describe every digit that appears more than once in a row, column or box."""
    g = as_grid(grid)
    out = []
    for name, unit in zip(_UNIT_NAMES, UNITS):
        counts = np.bincount(g[unit], minlength=10)
        for digit in np.flatnonzero(counts[1:] >= 2) + 1:
            times = "twice" if counts[digit] == 2 else f"{counts[digit]} times"
            out.append(f"digit {digit} appears {times} in {name}")
    return out


def is_valid_solution(grid: object) -> bool:
    """True when the grid is full and every row, column and box holds 1..9 once."""
    return bool(valid_solutions(as_grid(grid)[None])[0])


def valid_solutions(grids: np.ndarray) -> np.ndarray:
    """Vectorised is_valid_solution over a (N, 81) batch; returns a (N,) bool array."""
    bits = np.left_shift(np.uint16(1), np.asarray(grids, dtype=np.uint16))  # (N, 81)
    # OR of the 9 cells' bits is 0b1111111110 only if the unit holds 1..9 exactly once.
    unit_or = np.bitwise_or.reduce(bits[:, UNITS], axis=2)  # (N, 27)
    return (unit_or == _FULL_UNIT_MASK).all(axis=1)


def grid_to_string(grid: object) -> str:
    """The 81-character form used in CSV files: digits, '.' for blanks."""
    return "".join(".123456789"[v] for v in as_grid(grid))


def to_tokens(grids: np.ndarray) -> np.ndarray:
    """Grid values 0..9 -> model tokens 1..10 (blank 1, digits 2..10), int64, any leading shape."""
    arr = np.asarray(grids)
    if arr.size and (arr.min() < 0 or arr.max() > 9):
        raise TRMError("to_tokens expects grid values 0..9")
    return arr.astype(np.int64) + 1


def from_tokens(tokens: np.ndarray) -> np.ndarray:
    """Model tokens -> grid values: 2..10 -> 1..9, anything else (PAD, blank, junk) -> 0."""
    arr = np.asarray(tokens).astype(np.int64)
    return np.where((arr >= 2) & (arr <= 10), arr - 1, 0).astype(np.uint8)


def _as_mask(mask: object, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.shape == (9, 9):
        arr = arr.reshape(81)
    if arr.shape != (SEQ_LEN,):
        raise TRMError(f"{name} must have 81 entries, got shape {arr.shape}")
    # A puzzle grid works as a givens mask: its non-zero cells are the givens.
    return arr.astype(bool) if arr.dtype == bool else arr != 0


def format_grid(grid: object, *, givens: object = None, wrong: object = None, color: bool = True) -> str:
    """A 9x9 text grid with box separators.

    ``givens`` is a bool mask or the puzzle grid (its non-zero cells are givens) and ``wrong`` a
    bool mask of incorrect cells. With ``color`` the string carries rich markup: givens bold,
    other digits cyan, wrong cells bold red, blanks dim. The plain form only uses characters
    that parse_puzzle ignores, so it pastes back in.
    """
    g = as_grid(grid)
    given_mask = None if givens is None else _as_mask(givens, "givens")
    wrong_mask = np.zeros(SEQ_LEN, bool) if wrong is None else _as_mask(wrong, "wrong")
    lines = []
    for r in range(9):
        if r in (3, 6):
            lines.append("------+-------+------")
        cells = []
        for c in range(9):
            i = r * 9 + c
            text = str(g[i]) if g[i] else "."
            if color:
                if wrong_mask[i]:
                    style = "bold red"
                elif not g[i]:
                    style = "dim"
                elif given_mask is None:
                    style = ""
                else:
                    style = "bold" if given_mask[i] else "cyan"
                text = f"[{style}]{text}[/{style}]" if style else text
            cells.append(text)
        lines.append(" | ".join(" ".join(cells[s:s + 3]) for s in (0, 3, 6)))
    return "\n".join(lines)
