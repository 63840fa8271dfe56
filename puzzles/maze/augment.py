"""Maze augmentation: the 8 dihedral transforms (paper: optional for Maze-Hard), exact inverses."""

from __future__ import annotations

import numpy as np

from trmlm.puzzles.dihedral import dihedral, inverse_dihedral
from trmlm.puzzles.maze.grid import side


def augment_tokens(tokens: np.ndarray, k: int) -> np.ndarray:
    """Tokens (..., N*N) transformed by dihedral element k; start, goal and path move along."""
    t = np.asarray(tokens)
    n = side(t.shape[-1])
    return dihedral(t.reshape(*t.shape[:-1], n, n), k).reshape(t.shape)


def invert_tokens(tokens: np.ndarray, k: int) -> np.ndarray:
    t = np.asarray(tokens)
    n = side(t.shape[-1])
    return inverse_dihedral(t.reshape(*t.shape[:-1], n, n), k).reshape(t.shape)
