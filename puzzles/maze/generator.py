"""Maze generator after Searchformer (Lehnert et al. 2024) as used by HRM: random walls, long paths."""

from __future__ import annotations

import numpy as np

from trmlm.puzzles.maze.grid import GOAL, OPEN, START, WALL, bfs_parents, count_shortest_paths, shortest_path
from trmlm.errors import TRMError


def random_layout(size: int, rng: np.random.Generator) -> np.ndarray:
    """Walls on the first randint(0.3 N^2, 0.5 N^2) cells of a random permutation (Searchformer
    maze.py: 270..450 of 900 for 30x30). Returns tokens (N*N,) with WALL/OPEN only."""
    cells = size * size
    lo, hi = round(0.3 * cells), round(0.5 * cells)
    n_walls = int(rng.integers(lo, hi + 1))
    tokens = np.full(cells, OPEN, np.uint8)
    tokens[rng.permutation(cells)[:n_walls]] = WALL
    return tokens


def generate_maze(size: int, min_path: int, rng: np.random.Generator, draws: int = 100,
                  max_layouts: int = 1_000_000, unique: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """(question, answer, path length) with shortest path > min_path steps (HRM: > 110 at 30x30).

    Per layout, up to `draws` random (start, goal) pairs of free cells; the first whose shortest
    path is longer than min_path is kept (one maze per layout, as the regenerated Maze-Hard set of docs/maze.md).
    `unique`: keep only a pair with exactly one shortest path, so the answer is a function of the
    maze alone (no tie-break to learn, and each dihedral copy's answer is its own BFS answer).
    """
    for _ in range(max_layouts):
        base = random_layout(size, rng)
        free = np.flatnonzero(base == OPEN)
        if len(free) < 2:
            continue
        cache: dict[int, np.ndarray] = {}
        for _ in range(draws):
            s, g = rng.choice(free, 2, replace=False)
            s, g = int(s), int(g)
            if s not in cache:
                probe = base.copy()
                probe[s], probe[g] = START, GOAL
                cache[s] = bfs_parents(probe)[0].reshape(-1)  # distances from s (goal cell = open)
            d = int(cache[s][g])
            if d > min_path:
                q = base.copy()
                q[s], q[g] = START, GOAL
                if unique and count_shortest_paths(q) != 1:
                    continue
                return q, shortest_path(q), d
    raise TRMError(f"no {size}x{size} maze with a path longer than {min_path} after {max_layouts} layouts")


def generate_mazes(n: int, size: int, min_path: int, seed: int,
                   unique: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n distinct mazes: questions (n, N*N), answers (n, N*N), path lengths (n,); `unique`: each
    with exactly one shortest path (generate_maze)."""
    if min_path >= size * size // 2:
        raise TRMError(f"min_path {min_path} is unreachable in a {size}x{size} maze")
    rng = np.random.default_rng(seed)
    qs, ans, lengths, seen = [], [], [], set()
    while len(qs) < n:
        q, a, d = generate_maze(size, min_path, rng, unique=unique)
        if q.tobytes() in seen:
            continue
        seen.add(q.tobytes())
        qs.append(q)
        ans.append(a)
        lengths.append(d)
    return np.stack(qs), np.stack(ans), np.array(lengths, np.int32)
