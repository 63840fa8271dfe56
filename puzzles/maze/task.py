"""Maze as a TRM task: data config, train/held-out sets, the "valid and shortest" score, rendering."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trmlm.puzzles.maze.augment import augment_tokens
from trmlm.puzzles.maze.data import generate_mazes_cached, load_maze_csv
from trmlm.puzzles.maze.grid import (GOAL, PATH, START, VOCAB_SIZE, format_maze, format_maze_step, parse_maze,
                                     reached_along_path, shortest_path, side, tokens_to_text,
                                     valid_shortest)
from trmlm.puzzle.data import PuzzleData, unseen

NAME = "maze"


@dataclass
class MazeDataConfig:
    """Where mazes come from (paper Maze-Hard: 1000 train / 1000 test 30x30, path > 110)."""

    source: str = "generate"   # "generate" (built-in Searchformer recipe), a CSV file/dir, or a hub id
    size: int = 30             # maze side N; the sequence is N*N (900 for Maze-Hard)
    min_path: int = 110        # generator: keep mazes whose shortest path is longer than this
    n_train: int = 1000
    n_test: int = 1000
    n_aug: int = 8             # dihedral copies per maze, 1..8 (copy 0 = the original)
    seed: int = 0
    unique_path: bool = False  # generator: only mazes with exactly one shortest path (CPU preset)

    def __post_init__(self) -> None:
        if not 2 <= self.size <= 30:
            raise ValueError("size must lie in 2..30")
        if not 1 <= self.n_aug <= 8:
            raise ValueError("n_aug must lie in 1..8 (the dihedral group has 8 elements)")
        if self.n_train < 1 or self.n_test < 1:
            raise ValueError("n_train and n_test must be >= 1")
        if self.unique_path and self.source != "generate":
            raise ValueError("unique_path applies to generated mazes only (data.source: generate)")


def seq_len(cfg: MazeDataConfig) -> int:
    """Tokens per example for this data config (the model's seq_len)."""
    return cfg.size * cfg.size


def load_sets(cfg: MazeDataConfig):
    if cfg.source == "generate":
        train = generate_mazes_cached(cfg.n_train, cfg.size, cfg.min_path, cfg.seed, cfg.unique_path)
        test = generate_mazes_cached(cfg.n_test, cfg.size, cfg.min_path, cfg.seed + 7919, cfg.unique_path)
    else:
        train = load_maze_csv(cfg.source, split="train", size=cfg.size, limit=cfg.n_train)
        test = load_maze_csv(cfg.source, split="test", size=cfg.size, limit=cfg.n_test)
    keep = unseen(train[0], test[0], "the generated mazes" if cfg.source == "generate" else cfg.source)
    return train, tuple(a[keep] for a in test)


def build_data(cfg: MazeDataConfig, progress: bool = False) -> PuzzleData:
    (q_tr, a_tr, _), (q_te, a_te, r_te) = load_sets(cfg)
    n_aug = cfg.n_aug

    def get_train(idx: np.ndarray) -> dict[str, np.ndarray]:
        maze, aug = np.divmod(idx, n_aug)
        q, a = q_tr[maze].copy(), a_tr[maze].copy()
        for k in np.unique(aug):
            rows = aug == k
            q[rows], a[rows] = augment_tokens(q[rows], int(k)), augment_tokens(a[rows], int(k))
        return {"inputs": q.astype(np.int64), "labels": a.astype(np.int64),
                "puzzle_ids": np.zeros(len(idx), dtype=np.int64)}

    held_out = {"inputs": q_te.astype(np.int64), "labels": a_te.astype(np.int64),
                "puzzle_ids": np.zeros(len(q_te), dtype=np.int64)}
    desc = (f"{len(q_tr)} train mazes {cfg.size}x{cfg.size} x {n_aug} dihedral augmentations; "
            f"{len(q_te)} held-out, shortest path mean {r_te.mean():.1f} steps (min {r_te.min()}); "
            f"metric: predicted path valid and shortest")
    return PuzzleData(train_size=len(q_tr) * n_aug, get_train=get_train, eval=held_out,
                      description=desc, score=score)


def score(inputs: np.ndarray, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(B,) bool: valid and shortest (not string equality: many shortest paths exist)."""
    return valid_shortest(inputs, predictions, labels)


def parse_input(text: str) -> np.ndarray:
    """A maze (N lines of N characters, or one N*N line) -> tokens; needs one S, one G, a path."""
    return parse_maze(text).astype(np.int64)


def reference_solution(tokens: np.ndarray) -> np.ndarray | None:
    path = shortest_path(tokens)
    return None if path is None else path.astype(np.int64)


def render(inputs: np.ndarray, prediction: np.ndarray, target: np.ndarray | None = None,
           color: bool = True) -> str:
    ok = None if target is None else bool(score(inputs[None], prediction[None], target[None])[0])
    return format_maze(prediction, ok, color)


def render_step(inputs: np.ndarray, prediction: np.ndarray, previous: np.ndarray | None,
                target: np.ndarray | None = None, color: bool = True) -> str:
    """`trm solve maze --show-steps`: the maze with the path cells added at this step as '*'."""
    ok = None if target is None else bool(score(inputs[None], prediction[None], target[None])[0])
    return format_maze_step(prediction, previous, ok, color)


def step_note(inputs: np.ndarray, prediction: np.ndarray, previous: np.ndarray | None,
              target: np.ndarray | None) -> str:
    """How far the path has grown: path cells (+added -removed), of them connected to S and to G,
    against the d - 1 cells of a shortest path, and whether it is valid and shortest yet."""
    pred = np.asarray(prediction)
    n = side(len(pred))
    cells = int((pred == PATH).sum())
    note = f"{cells} path cells"
    if previous is not None:
        prev = np.asarray(previous)
        added, removed = int(((pred == PATH) & (prev != PATH)).sum()), int(((pred != PATH) & (prev == PATH)).sum())
        note += f" (+{added} -{removed})"
    from_s = reached_along_path(pred, n, int(np.flatnonzero(np.asarray(inputs) == START)[0]))
    from_g = reached_along_path(pred, n, int(np.flatnonzero(np.asarray(inputs) == GOAL)[0]))
    note += f"; {from_s} joined to S, {from_g} to G"
    if target is not None:
        note += f"; a shortest path has {int((np.asarray(target) == PATH).sum())}"
        if bool(score(inputs[None], pred[None], target[None])[0]):
            note += ": valid and shortest"
    return note


def to_text(tokens: np.ndarray) -> str:
    return tokens_to_text(tokens)


VOCAB = VOCAB_SIZE
SEQ = 900  # default (30x30); seq_len(cfg) gives the configured size
