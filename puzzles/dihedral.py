"""The 8 dihedral transforms of a grid (rotations and reflections) and their exact inverses."""

from __future__ import annotations

import numpy as np

# Index -> transform of the last two axes (same numbering as the official TRM/HRM arc builder):
# 0 identity, 1 rot90, 2 rot180, 3 rot270, 4 transpose, 5 flip left-right, 6 flip up-down,
# 7 anti-transpose.
NAMES = ("identity", "rot90", "rot180", "rot270", "transpose", "fliplr", "flipud", "antitranspose")
INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)  # rot90 and rot270 undo each other; reflections are involutions


def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """Transform the last two axes of `grid` (..., H, W) by dihedral element k (a copy)."""
    g = np.asarray(grid)
    if k == 0:
        out = g
    elif k in (1, 2, 3):
        out = np.rot90(g, k, axes=(-2, -1))
    elif k == 4:
        out = np.swapaxes(g, -2, -1)
    elif k == 5:
        out = g[..., :, ::-1]
    elif k == 6:
        out = g[..., ::-1, :]
    elif k == 7:
        out = np.rot90(np.swapaxes(g, -2, -1), 2, axes=(-2, -1))
    else:
        raise ValueError(f"dihedral index must be in 0..7, got {k}")
    return np.ascontiguousarray(out)


def inverse_dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    return dihedral(grid, INVERSE[k])
