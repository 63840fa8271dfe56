"""Maze: parsing, the "valid and shortest" metric, dihedral augmentation inverses, the generator."""

import numpy as np
import pytest

from trmlm.puzzles.dihedral import INVERSE, dihedral, inverse_dihedral
from trmlm.puzzles.maze.augment import augment_tokens, invert_tokens
from trmlm.puzzles.maze.generator import generate_mazes
from trmlm.puzzles.maze.grid import (GOAL, OPEN, PATH, START, WALL, count_shortest_paths, parse_maze, shortest_path,
                                     valid_shortest)
from trmlm.puzzles.maze.task import score
from trmlm.errors import TRMError

# Two shortest paths of 4 steps from S to G (around either side of the wall block).
MAZE = ("S   \n"
        " ## \n"
        "   G\n"
        "####\n")



def parse_or_raw(text: str) -> np.ndarray:
    lut = {"#": WALL, " ": OPEN, "S": START, "G": GOAL, "o": PATH}
    return np.array([lut[c] for c in text], np.int64)


def test_parse_and_reference_path():
    q = parse_maze(MAZE)
    assert q.shape == (16,) and (q == START).sum() == 1
    a = shortest_path(q)
    assert (a == PATH).sum() == 4  # 5 steps S -> G, 4 cells strictly between
    assert score(q[None], a[None], a[None]).all()


def test_metric_accepts_alternative_shortest_and_rejects_bad():
    q = parse_or_raw("S   " "    " "   G" "####")
    label = parse_or_raw("Sooo" "   o" "   G" "####")      # along the top, then down
    other = parse_or_raw("S   " "o   " "oooG" "####")      # down, then along: also 5 steps
    longer = parse_or_raw("Soo " " oo " "   G" "####")     # not connected to G
    detour = parse_or_raw("Sooo" "oooo" "   G" "####")     # connected but too long
    broken = parse_or_raw("Soo " "   o" "   G" "####")     # gap in the path
    wall_moved = parse_or_raw("Sooo" "   o" "   G" "### ")
    on_wall = parse_or_raw("S   " "o   " "oooG" "#o##")
    preds = np.stack([label, other, longer, detour, broken, wall_moved, on_wall])
    labels = np.repeat(label[None], len(preds), 0)
    inputs = np.repeat(q[None], len(preds), 0)
    assert valid_shortest(inputs, preds, labels).tolist() == [True, True, False, False, False, False, False]


@pytest.mark.parametrize("text,needle", [
    ("    \n ## \n   G\n####\n", "exactly one start 'S', found 0"),
    ("S   \n ## \n    \n####\n", "exactly one goal 'G', found 0"),
    ("S  #\n ###\n## G\n####\n", "unsolvable"),
    ("S  x\n ## \n   G\n####\n", "illegal character 'x'"),
    ("S   \n ## \n  G\n", "not a square"),
])
def test_parse_errors(text, needle):
    with pytest.raises(TRMError, match=needle):
        parse_maze(text)


@pytest.mark.parametrize("k", range(8))
def test_dihedral_inverse_is_identity(k):
    rng = np.random.default_rng(k)
    square = rng.integers(0, 10, (3, 7, 7))
    rect = rng.integers(0, 10, (4, 9))
    assert np.array_equal(inverse_dihedral(dihedral(square, k), k), square)
    assert np.array_equal(inverse_dihedral(dihedral(rect, k), k), rect)
    assert np.array_equal(dihedral(dihedral(rect, k), INVERSE[k]), rect)
    flat = rng.integers(0, 6, (5, 36))
    assert np.array_equal(invert_tokens(augment_tokens(flat, k), k), flat)


def test_eight_distinct_transforms_keep_mazes_solved():
    q, a, d = generate_mazes(4, 8, 10, seed=3)
    images = {dihedral(np.arange(16).reshape(4, 4), k).tobytes() for k in range(8)}
    assert len(images) == 8
    for k in range(8):
        qa, aa = augment_tokens(q, k), augment_tokens(a, k)
        assert valid_shortest(qa, aa, aa).all()
        assert all((shortest_path(x) == PATH).sum() == (y == PATH).sum() for x, y in zip(qa, aa))


def test_generator_recipe():
    q, a, d = generate_mazes(6, 10, 14, seed=0)
    assert q.shape == (6, 100) and (d > 14).all()
    assert len({x.tobytes() for x in q}) == 6
    walls = (q == WALL).sum(1)
    assert ((walls >= 30) & (walls <= 50)).all()  # Searchformer: 30%..50% of the cells
    assert ((a == PATH).sum(1) + 1 == d).all()
    assert np.array_equal(generate_mazes(6, 10, 14, seed=0)[0], q)  # seeded


def _brute_force_paths(q: np.ndarray) -> int:
    """Shortest S-to-G paths counted by enumerating every walk of the shortest length."""
    n = int(np.sqrt(len(q)))
    s, g = int(np.flatnonzero(q == START)[0]), int(np.flatnonzero(q == GOAL)[0])
    d = int((shortest_path(q) == PATH).sum()) + 1
    walks = [[s]]
    for _ in range(d):
        walks = [w + [m] for w in walks for m in (w[-1] + n, w[-1] - 1, w[-1] + 1, w[-1] - n)
                 if 0 <= m < n * n and q[m] != WALL and m not in w
                 and abs(m % n - w[-1] % n) + abs(m // n - w[-1] // n) == 1]
    return sum(w[-1] == g for w in walks)


def test_count_shortest_paths():
    assert count_shortest_paths(parse_maze(MAZE)) == 2          # either side of the wall block
    assert count_shortest_paths(parse_maze("S  \n   \n  G\n")) == 6   # open 3x3: C(4, 2)
    assert count_shortest_paths(parse_maze("S# \n # \n  G\n")) == 1   # a corridor
    blocked = parse_or_raw("S#" "#G")
    assert count_shortest_paths(blocked) == 0
    q, _, _ = generate_mazes(8, 6, 4, seed=5)
    assert [count_shortest_paths(x) for x in q] == [_brute_force_paths(x) for x in q]


def test_unique_path_generator():
    q, a, d = generate_mazes(5, 10, 14, seed=1, unique=True)
    assert (d > 14).all()
    assert all(count_shortest_paths(x) == 1 for x in q)
    for k in range(8):  # the one shortest path of every dihedral copy is the copied answer
        qa, aa = augment_tokens(q, k), augment_tokens(a, k)
        assert all(np.array_equal(shortest_path(x), y) for x, y in zip(qa, aa))
    assert np.array_equal(generate_mazes(5, 10, 14, seed=1, unique=True)[0], q)


def test_unique_path_needs_the_generator():
    from trmlm.puzzles.maze.task import MazeDataConfig

    with pytest.raises(ValueError, match="unique_path applies to generated mazes only"):
        MazeDataConfig(source="data/maze", unique_path=True)
    assert MazeDataConfig(unique_path=True).unique_path
