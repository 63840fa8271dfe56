"""Sudoku task: grids and tokens, exact solver, generator, CSV loaders and augmentation."""

from trmlm.puzzles.sudoku.augment import (SudokuTransform, apply_transform, augment_pair, identity_transform,
                                    invert_transform, random_transform, transform_for)
from trmlm.puzzles.sudoku.data import load_sudoku_csv, write_sudoku_csv
from trmlm.puzzles.sudoku.dataset import SudokuSet
from trmlm.puzzles.sudoku.generator import (generate_puzzle, generate_puzzles, generate_puzzles_cached,
                                      generate_solution)
from trmlm.puzzles.sudoku.grid import (SEQ_LEN, VOCAB_SIZE, conflicts, format_grid, from_tokens, grid_to_string,
                                 is_valid_solution, parse_puzzle, parse_solution, to_tokens)
from trmlm.puzzles.sudoku.solver import SolveResult, count_solutions, rate, solve

__all__ = [
    "SEQ_LEN", "VOCAB_SIZE", "SolveResult", "SudokuSet", "SudokuTransform", "apply_transform",
    "augment_pair", "conflicts", "count_solutions", "format_grid", "from_tokens", "generate_puzzle",
    "generate_puzzles", "generate_puzzles_cached", "generate_solution", "grid_to_string",
    "identity_transform", "invert_transform", "is_valid_solution", "load_sudoku_csv", "parse_puzzle",
    "parse_solution", "random_transform", "rate", "solve", "to_tokens", "transform_for", "write_sudoku_csv",
]
