"""Built-in generator of unique-solution Sudoku puzzles with a set number of blanks and rating range."""

from __future__ import annotations

import os
import random
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from trmlm.puzzles.sudoku.dataset import SudokuSet
from trmlm.puzzles.sudoku.grid import is_valid_solution
from trmlm.puzzles.sudoku.solver import BIT, has_other_solution, peer_candidates, solve_cells
from trmlm.errors import TRMError

# Bump when the algorithm or its random draws change, so cached sets are regenerated.
GENERATOR_VERSION = 1
# 17 clues is the fewest that give a unique solution (McGuire, Tugemann, Civario 2012).
MAX_BLANKS = 64
_DIAGONAL_BOXES = [[(b * 3 + i // 3) * 9 + b * 3 + i % 3 for i in range(9)] for b in range(3)]


def _random_solution(rnd: random.Random) -> list[int]:
    # The three diagonal boxes share no row, column or box, so any fill of them is consistent;
    # seeding them makes the randomized DPLL below almost never backtrack.
    cells = [0] * 81
    for box in _DIAGONAL_BOXES:
        digits = list(range(1, 10))
        rnd.shuffle(digits)
        for c, d in zip(box, digits):
            cells[c] = d
    solution, _, _, _ = solve_cells(cells, limit=1, rnd=rnd)
    assert solution is not None  # a consistent diagonal always completes
    return solution


def _forced_by_givens(cells: list[int], cell: int) -> bool:
    """True if the givens among the cell's peers already hold the other eight digits."""
    return peer_candidates(cells, cell) & ~BIT[cells[cell]] == 0


def _dig(solution: list[int], n_blanks: int, rnd: random.Random) -> list[int] | None:
    """Blank cells in random order while the solution stays unique; None if stuck early."""
    cells = solution[:]
    order = list(range(81))
    rnd.shuffle(order)
    blanks = 0
    for i, c in enumerate(order):
        if blanks == n_blanks:
            break
        if blanks + 81 - i < n_blanks:  # too few cells left to try
            return None
        # The peer test settles most early removals without a search.
        if _forced_by_givens(cells, c) or not has_other_solution(cells, c):
            cells[c] = 0
            blanks += 1
    return cells if blanks == n_blanks else None


def _check_params(n_blanks: int, min_rating: int, max_rating: int | None) -> None:
    if not 0 <= n_blanks <= MAX_BLANKS:
        raise TRMError(f"n_blanks must be in 0..{MAX_BLANKS} (a unique puzzle needs 17 clues),"
                       f" got {n_blanks}")
    if min_rating < 0:
        raise TRMError(f"min_rating must be >= 0, got {min_rating}")
    if max_rating is not None and max_rating < min_rating:
        raise TRMError(f"max_rating {max_rating} is below min_rating {min_rating}")


def _py_random(rng: np.random.Generator) -> random.Random:
    # Inner loops use Python's Random (much cheaper per draw than numpy); seeded from rng so
    # results stay a function of the numpy generator's state.
    return random.Random(int(rng.integers(2**63)))


def generate_solution(rng: np.random.Generator) -> np.ndarray:
    """A random complete grid, (81,) uint8, by randomized backtracking."""
    return np.array(_random_solution(_py_random(rng)), dtype=np.uint8)


def generate_puzzle(rng: np.random.Generator, *, n_blanks: int, min_rating: int = 0,
                    max_rating: int | None = None,
                    max_tries: int = 1000) -> tuple[np.ndarray, np.ndarray, int]:
    """One unique-solution puzzle with exactly ``n_blanks`` blanks and rating in [min, max].

    Each try draws a fresh solution and blanks cells in random order, skipping any whose
    removal would allow a second solution; a try fails if it cannot reach ``n_blanks`` or the
    rating (solver guesses, see solver.py) is out of range. Returns (puzzle, solution, rating).
    """
    _check_params(n_blanks, min_rating, max_rating)
    rnd = _py_random(rng)
    for _ in range(max_tries):
        solution = _random_solution(rnd)
        puzzle = _dig(solution, n_blanks, rnd)
        if puzzle is None:
            continue
        _, _, rating, _ = solve_cells(puzzle, limit=1)
        if rating >= min_rating and (max_rating is None or rating <= max_rating):
            return np.array(puzzle, np.uint8), np.array(solution, np.uint8), rating
    hi = "any" if max_rating is None else max_rating
    raise TRMError(f"no puzzle with {n_blanks} blanks and rating {min_rating}..{hi} after {max_tries}"
                   " tries; use fewer blanks or a wider rating range")


def dig_puzzle(solution: np.ndarray, rng: np.random.Generator, *, n_blanks: int,
               max_tries: int = 100) -> np.ndarray:
    """A unique-solution puzzle with exactly ``n_blanks`` blanks dug out of a given solved grid
    (one from elsewhere: generate_puzzle digs its own), cells tried in random order as there."""
    _check_params(n_blanks, 0, None)
    cells = [int(v) for v in np.asarray(solution).reshape(-1)]
    if len(cells) != 81 or not is_valid_solution(np.array(cells).reshape(9, 9)):
        raise TRMError("dig_puzzle needs a valid solved 9x9 grid")
    rnd = _py_random(rng)
    for _ in range(max_tries):
        puzzle = _dig(cells, n_blanks, rnd)
        if puzzle is not None:
            return np.array(puzzle, np.uint8)
    raise TRMError(f"no unique-solution puzzle with {n_blanks} blanks from this grid after {max_tries} tries")


def generate_puzzles(n: int, *, n_blanks: int, min_rating: int = 0, max_rating: int | None = None,
                     seed: int = 0, progress: bool = False) -> SudokuSet:
    """``n`` puzzles; puzzle i depends only on (seed, i), so a smaller n gives a prefix."""
    if n < 0 or seed < 0:
        raise TRMError(f"n and seed must be >= 0, got n={n}, seed={seed}")
    _check_params(n_blanks, min_rating, max_rating)
    questions = np.zeros((n, 81), np.uint8)
    answers = np.zeros((n, 81), np.uint8)
    ratings = np.zeros(n, np.int32)

    def fill(i: int) -> None:
        rng = np.random.default_rng([seed, i])
        questions[i], answers[i], ratings[i] = generate_puzzle(
            rng, n_blanks=n_blanks, min_rating=min_rating, max_rating=max_rating)

    if progress:
        from rich.console import Console
        from rich.progress import Progress

        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(f"sudoku, {n_blanks} blanks", total=n)
            for i in range(n):
                fill(i)
                bar.advance(task)
    else:
        for i in range(n):
            fill(i)
    return SudokuSet(questions, answers, ratings)


def default_cache_dir() -> Path:
    """$TRM_CACHE_DIR/sudoku if set, else ~/.cache/trmlm/sudoku."""
    root = os.environ.get("TRM_CACHE_DIR")
    return Path(root) / "sudoku" if root else Path.home() / ".cache" / "trmlm" / "sudoku"


def generate_puzzles_cached(n: int, *, n_blanks: int, min_rating: int = 0, max_rating: int | None = None,
                            seed: int = 0, progress: bool = False,
                            cache_dir: str | os.PathLike | None = None) -> SudokuSet:
    """generate_puzzles(), stored as .npz under ``cache_dir`` (default: default_cache_dir())."""
    _check_params(n_blanks, min_rating, max_rating)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    hi = "any" if max_rating is None else max_rating
    key = f"v{GENERATOR_VERSION}_n{n}_blanks{n_blanks}_rating{min_rating}-{hi}_seed{seed}"
    path = directory / f"sudoku_{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                cached = SudokuSet(f["questions"], f["answers"], f["ratings"])
            if len(cached) == n:
                return cached
        except (OSError, KeyError, ValueError, zipfile.BadZipFile, TRMError):
            pass  # unreadable cache entry: regenerate and overwrite it
    sset = generate_puzzles(n, n_blanks=n_blanks, min_rating=min_rating, max_rating=max_rating,
                            seed=seed, progress=progress)
    directory.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a concurrent reader never sees half a file.
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, questions=sset.questions, answers=sset.answers, ratings=sset.ratings)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return sset
