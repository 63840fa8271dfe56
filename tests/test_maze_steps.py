"""`trm solve maze --show-steps`: the step header says how far the path has grown; new cells are '*'."""

import numpy as np

from trmlm.puzzles.maze import task
from trmlm.puzzles.maze.grid import OPEN, PATH, START, parse_maze, shortest_path

# S at (0, 1); the only route to G runs down column 1 then right along row 4.
MAZE = ("#S####\n"
        "# ####\n"
        "# ####\n"
        "# ####\n"
        "#   G#\n"
        "######\n")


def _path_cells(answer):
    return [int(i) for i in np.flatnonzero(answer == PATH)]


def test_step_note_counts_the_growing_path():
    q = parse_maze(MAZE)
    answer = shortest_path(q)
    cells = _path_cells(answer)
    assert len(cells) == 6  # (1,1) (2,1) (3,1) (4,1) (4,2) (4,3)
    half = q.copy()
    half[cells[:3]] = PATH  # the part next to S
    note = task.step_note(q, half, q, answer)
    assert note.startswith("3 path cells (+3 -0); 3 joined to S, 0 to G; a shortest path has 6")
    assert "valid and shortest" not in note
    stray = half.copy()
    stray[cells[2]] = OPEN
    stray[cells[5]] = PATH  # one cell next to G added, one removed
    note = task.step_note(q, stray, half, answer)
    assert note.startswith("3 path cells (+1 -1); 2 joined to S, 1 to G")
    note = task.step_note(q, answer, stray, answer)
    assert note.endswith("a shortest path has 6: valid and shortest")
    assert task.step_note(q, answer, None, None) == "6 path cells; 6 joined to S, 6 to G"


def test_render_step_marks_added_cells():
    q = parse_maze(MAZE)
    answer = shortest_path(q)
    cells = _path_cells(answer)
    half = q.copy()
    half[cells[:3]] = PATH
    rows = task.render_step(q, answer, half, answer, color=False).split("\n")
    assert rows[1] == "#o####" and rows[3] == "#o####"
    assert rows[4] == "#***G#"  # (4,1) (4,2) (4,3) added
    first = task.render_step(q, half, None, answer, color=False).split("\n")
    assert "*" not in "".join(first) and first[0] == "#S####"
    coloured = task.render_step(q, answer, half, answer, color=True)
    assert "[bold yellow]*[/bold yellow]" in coloured and "[green]o[/green]" in coloured
    assert q[1] == START
