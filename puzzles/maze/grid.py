"""Maze grids: the "# SGo" charset, tokens, parsing, BFS, and the "valid and shortest" metric."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator

import numpy as np

from trmlm.errors import TRMError

CHARSET = "# SGo"                 # TRM/HRM maze charset; token = index + 1
PAD, WALL, OPEN, START, GOAL, PATH = 0, 1, 2, 3, 4, 5
VOCAB_SIZE = 1 + len(CHARSET)     # 6 with PAD 0 (as TRM/HRM; docs/maze.md)
_LUT = np.zeros(256, np.uint8)
for _i, _ch in enumerate(CHARSET):
    _LUT[ord(_ch)] = _i + 1
# BFS neighbour order down, left, right, up: the tie-break of the regenerated Maze-Hard set (docs/maze.md).
MOVES = ((1, 0), (0, -1), (0, 1), (-1, 0))


def text_to_tokens(text: str, where: str = "maze") -> np.ndarray:
    """A row-major string over CHARSET -> tokens (L,) uint8; illegal characters are errors."""
    raw = np.frombuffer(text.encode("latin-1", "replace"), np.uint8)
    tok = _LUT[raw]
    bad = np.flatnonzero(tok == 0)
    if bad.size:
        raise TRMError(f"{where}: illegal character {text[int(bad[0])]!r} at position {int(bad[0]) + 1}"
                       f" (allowed: '#' wall, ' ' open, 'S', 'G', 'o' path)")
    return tok


def tokens_to_text(tokens: np.ndarray) -> str:
    chars = np.array(["?"] + list(CHARSET))
    return "".join(chars[np.asarray(tokens, np.int64)])


def side(n_cells: int, where: str = "maze") -> int:
    s = math.isqrt(n_cells)
    if s * s != n_cells or s < 2:
        raise TRMError(f"{where}: {n_cells} cells is not a square grid")
    return s


def parse_maze(text: str, size: int | None = None) -> np.ndarray:
    """A maze (rows on lines, or one row-major line) -> tokens (size*size,); needs one S and one G.

    'o' path cells in the input are ignored (treated as open); the maze must be solvable.
    """
    lines = [l for l in text.replace("\r", "").split("\n") if l.strip("\n") != ""]
    flat = "".join(lines) if len(lines) > 1 else (lines[0] if lines else "")
    if size is not None and len(flat) != size * size:
        raise TRMError(f"maze has {len(flat)} cells, expected {size * size} ({size}x{size})")
    side(len(flat))
    for i, line in enumerate(lines[1:], 2):  # unequal rows would be reflowed into another maze
        if len(line) != len(lines[0]):
            raise TRMError(f"maze: ragged rows: line {i} has {len(line)} characters, line 1 has "
                           f"{len(lines[0])} (every row must be as long as the maze is wide)")
    tok = text_to_tokens(flat)
    tok[tok == PATH] = OPEN
    for mark, name in ((START, "start 'S'"), (GOAL, "goal 'G'")):
        count = int((tok == mark).sum())
        if count != 1:
            raise TRMError(f"maze needs exactly one {name}, found {count}")
    if shortest_path(tok) is None:
        raise TRMError("unsolvable maze: the goal cannot be reached from the start")
    return tok


def _neighbours(cell: int, n: int) -> Iterator[int]:
    """The flat indices of the in-grid cells one move from `cell` on an n x n grid."""
    r, c = divmod(cell, n)
    for dr, dc in MOVES:
        rr, cc = r + dr, c + dc
        if 0 <= rr < n and 0 <= cc < n:
            yield rr * n + cc


def bfs_parents(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """BFS from S over non-wall cells: (dist (N, N) with -1 unreached, parent index, s, g)."""
    n = side(len(tokens))
    grid = np.asarray(tokens).reshape(n, n)
    s = int(np.flatnonzero(grid.reshape(-1) == START)[0])
    g = int(np.flatnonzero(grid.reshape(-1) == GOAL)[0])
    dist = np.full(n * n, -1, np.int64)
    parent = np.full(n * n, -1, np.int64)
    dist[s] = 0
    queue = deque([s])
    flat = grid.reshape(-1)
    while queue:
        cur = queue.popleft()
        for nxt in _neighbours(cur, n):
            if dist[nxt] < 0 and flat[nxt] != WALL:
                dist[nxt] = dist[cur] + 1
                parent[nxt] = cur
                queue.append(nxt)
    return dist.reshape(n, n), parent, s, g


def count_shortest_paths(tokens: np.ndarray) -> int:
    """How many distinct shortest S-to-G paths the maze has (0 if G is unreachable): BFS layers,
    each cell's count the sum of its parents' counts one layer closer to S."""
    dist, _, s, g = bfs_parents(tokens)
    n = side(len(tokens))
    flat = dist.reshape(-1)
    if flat[g] < 0:
        return 0
    count = np.zeros(n * n, np.int64)
    count[s] = 1
    for cell in np.argsort(flat, kind="stable"):
        if flat[cell] <= 0:
            continue
        count[cell] = sum(count[p] for p in _neighbours(int(cell), n) if flat[p] == flat[cell] - 1)
    return int(count[g])


def shortest_path(tokens: np.ndarray) -> np.ndarray | None:
    """The answer tokens: the maze with the cells strictly between S and G on one shortest path
    set to PATH (tie-break: BFS order down, left, right, up), or None if unsolvable."""
    dist, parent, s, g = bfs_parents(tokens)
    if dist.reshape(-1)[g] < 0:
        return None
    out = np.array(tokens, np.uint8).copy()
    cur = parent[g]
    while cur != s:
        out[cur] = PATH
        cur = parent[cur]
    return out


def path_connects(pred: np.ndarray, n: int) -> bool:
    """S reaches G stepping only on PATH cells (slow, obviously-correct BFS)."""
    flat = np.asarray(pred).reshape(-1)
    s = int(np.flatnonzero(flat == START)[0])
    seen = {s}
    queue = deque([s])
    while queue:
        for nxt in _neighbours(queue.popleft(), n):
            if flat[nxt] == GOAL:
                return True
            if flat[nxt] == PATH and nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return False


def reached_along_path(pred: np.ndarray, n: int, start: int) -> int:
    """PATH cells connected to cell `start` through PATH cells (how far the path has grown)."""
    flat = np.asarray(pred).reshape(-1)
    seen = {start}
    queue = deque([start])
    while queue:
        for nxt in _neighbours(queue.popleft(), n):
            if flat[nxt] == PATH and nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return len(seen) - 1


def valid_shortest(inputs: np.ndarray, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(B,) bool: the predicted path is valid and shortest (many shortest paths exist).

    Valid: walls, S and G unchanged, PATH only on open cells, and S reaches G along PATH cells.
    Shortest: exactly d - 1 PATH cells, d = the label's path length (the label is a shortest path).
    With d - 1 cells, any S->G walk through them has length >= d, so it uses all of them.
    """
    inputs, predictions, labels = (np.asarray(a).reshape(len(a), -1) for a in (inputs, predictions, labels))
    n = side(inputs.shape[1])
    keep = (inputs != OPEN)  # walls, S, G must be reproduced; open cells may become PATH
    ok = ((predictions == inputs) | ~keep).all(-1)
    ok &= np.isin(predictions, (OPEN, PATH)).sum(-1) == (inputs == OPEN).sum(-1)
    ok &= (predictions == PATH).sum(-1) == (labels == PATH).sum(-1)
    exact = (predictions == labels).all(-1)
    out = ok & exact
    for i in np.flatnonzero(ok & ~exact):
        out[i] = path_connects(predictions[i], n)
    return out


def format_maze_step(tokens: np.ndarray, previous: np.ndarray | None, target_ok: bool | None = None,
                     color: bool = True) -> str:
    """One step of a solve: path cells added since `previous` drawn as '*' (bold yellow), the rest
    as format_maze draws them."""
    if previous is None:
        return format_maze(tokens, target_ok, color)
    n = side(len(tokens))
    added = (np.asarray(tokens) == PATH) & (np.asarray(previous) != PATH)
    chars = list(tokens_to_text(tokens))
    style = "green" if target_ok in (True, None) else "red"
    for i in range(len(chars)):
        if added[i]:
            chars[i] = "[bold yellow]*[/bold yellow]" if color else "*"
        elif color and chars[i] == "o":
            chars[i] = f"[{style}]o[/{style}]"
        elif color and chars[i] in "SG":
            chars[i] = f"[bold]{chars[i]}[/bold]"
    return "\n".join("".join(chars[r * n:(r + 1) * n]) for r in range(n))


def format_maze(tokens: np.ndarray, target_ok: bool | None = None, color: bool = True) -> str:
    """Rows of the maze; PATH cells green when the path is valid and shortest, red when not."""
    n = side(len(tokens))
    text = tokens_to_text(tokens)
    rows = [text[r * n:(r + 1) * n] for r in range(n)]
    if not color:
        return "\n".join(rows)
    style = "green" if target_ok in (True, None) else "red"
    return "\n".join(r.replace("o", f"[{style}]o[/{style}]").replace("S", "[bold]S[/bold]")
                     .replace("G", "[bold]G[/bold]") for r in rows)
