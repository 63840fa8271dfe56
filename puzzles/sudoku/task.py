"""Sudoku as a TRM task: data config, train/held-out sets, input parsing and rendering."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trmlm.puzzles.sudoku.augment import apply_transform, transform_for
from trmlm.puzzles.sudoku.data import load_sudoku_csv
from trmlm.puzzles.sudoku.dataset import SudokuSet
from trmlm.puzzles.sudoku.generator import generate_puzzles_cached
from trmlm.puzzles.sudoku.grid import (SEQ_LEN, VOCAB_SIZE, format_grid, from_tokens, parse_puzzle,
                                 to_tokens)
from trmlm.puzzles.sudoku.solver import solve
from trmlm.puzzle.data import PuzzleData, unseen
from trmlm.errors import TRMError

NAME = "sudoku"


@dataclass
class SudokuDataConfig:
    """Where puzzles come from and the small-data regime (paper: 1000 puzzles x 1000 augs)."""

    source: str = "generate"   # "generate" (built-in, offline), a CSV file/dir, or a hub id
    n_train: int = 1000        # base training puzzles
    n_aug: int = 1000          # augmented copies per puzzle; copy 0 is the original
    n_test: int = 1000         # held-out puzzles
    n_blanks: int = 45         # generator: blanks per puzzle (81 - clues)
    min_rating: int = 0        # generator / loader: solver guesses needed, inclusive bounds
    max_rating: int = -1       # -1 = no upper bound
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_train < 1 or self.n_aug < 1 or self.n_test < 1:
            raise ValueError("n_train, n_aug and n_test must be >= 1")
        if not 17 <= 81 - self.n_blanks <= 80:
            raise ValueError("n_blanks must leave between 17 and 80 clues")


def load_sets(cfg: SudokuDataConfig, progress: bool = False) -> tuple[SudokuSet, SudokuSet]:
    """(train, held-out) sets, disjoint."""
    max_rating = None if cfg.max_rating < 0 else cfg.max_rating
    if cfg.source == "generate":
        common = dict(n_blanks=cfg.n_blanks, min_rating=cfg.min_rating, max_rating=max_rating,
                      progress=progress)
        train = generate_puzzles_cached(cfg.n_train, seed=cfg.seed, **common)
        test = generate_puzzles_cached(cfg.n_test, seed=cfg.seed + 7919, **common)
    elif Path(cfg.source).is_file():
        # One file (e.g. tdoku_collections_solved.csv, docs/sudoku.md): seeded split.
        full = load_sudoku_csv(cfg.source, min_rating=cfg.min_rating or None)
        if max_rating is not None:
            full = full.subset(full.ratings <= max_rating)
        if len(full) < cfg.n_train + 1:
            raise TRMError(f"{cfg.source} has {len(full)} usable puzzles, need more than n_train={cfg.n_train}")
        order = np.random.default_rng(cfg.seed).permutation(len(full))
        train = full.subset(order[:cfg.n_train])
        test = full.subset(order[cfg.n_train:cfg.n_train + cfg.n_test])
    else:
        # A directory with train.csv/test.csv, or a hub id such as sapientinc/sudoku-extreme.
        full = load_sudoku_csv(cfg.source, split="train", min_rating=cfg.min_rating or None)
        pick = np.random.default_rng(cfg.seed).permutation(len(full))[:cfg.n_train]
        train = full.subset(np.sort(pick))
        test = load_sudoku_csv(cfg.source, split="test", limit=cfg.n_test,
                               min_rating=cfg.min_rating or None)
    where = "the generated puzzles" if cfg.source == "generate" else cfg.source
    return train, test.subset(unseen(train.questions, test.questions, where))


def build_data(cfg: SudokuDataConfig, progress: bool = False) -> PuzzleData:
    """The trainer's view: n_train x n_aug augmented examples and the held-out set as tokens."""
    train, test = load_sets(cfg, progress)
    n_aug = cfg.n_aug

    def get_train(idx: np.ndarray) -> dict[str, np.ndarray]:
        puzzle, aug = np.divmod(idx, n_aug)
        q = train.questions[puzzle].copy()
        a = train.answers[puzzle].copy()
        for k in np.unique(aug):
            if k == 0:
                continue  # copy 0 is the original puzzle
            rows = aug == k
            t = transform_for(cfg.seed, int(k))
            q[rows], a[rows] = apply_transform(t, q[rows]), apply_transform(t, a[rows])
        return {"inputs": to_tokens(q), "labels": to_tokens(a),
                "puzzle_ids": np.zeros(len(idx), dtype=np.int64)}

    held_out = {"inputs": to_tokens(test.questions), "labels": to_tokens(test.answers),
                "puzzle_ids": np.zeros(len(test), dtype=np.int64)}
    s = test.difficulty_summary()
    desc = (f"{len(train)} train puzzles x {n_aug} augmentations; {len(test)} held-out puzzles, "
            f"mean {s['mean_blanks']:.1f} blanks, mean rating {s['mean_rating']:.2f} guesses, "
            f"{100 * s['share_guessing']:.1f}% need a guess")
    return PuzzleData(train_size=len(train) * n_aug, get_train=get_train, eval=held_out,
                      description=desc)


def parse_input(text: str) -> np.ndarray:
    """A puzzle string -> tokens (81,), refusing malformed, contradictory or unsolvable puzzles."""
    grid = parse_puzzle(text)
    result = solve(grid, limit=2)
    if result.n_solutions == 0:
        raise TRMError("unsolvable puzzle: no grid satisfies these clues")
    return to_tokens(grid)


def reference_solution(tokens: np.ndarray) -> np.ndarray | None:
    """The solver's answer as tokens, when the puzzle has exactly one solution."""
    result = solve(from_tokens(tokens), limit=2)
    return to_tokens(result.solution) if result.n_solutions == 1 else None


def render(inputs: np.ndarray, prediction: np.ndarray, target: np.ndarray | None = None,
           color: bool = True) -> str:
    """The predicted grid with givens bold and (when a target is known) wrong cells red."""
    puzzle = from_tokens(inputs)
    pred = from_tokens(prediction)
    wrong = None if target is None else (prediction != target)
    return format_grid(pred, givens=puzzle, wrong=wrong, color=color)


def to_text(tokens: np.ndarray) -> str:
    return "".join(".123456789"[v] for v in from_tokens(tokens))


VOCAB = VOCAB_SIZE
SEQ = SEQ_LEN
