"""PNG of held-out puzzles through the recursion (eval-puzzle --png): input, the answer after each
supervision step, target; digits drawn, givens vs filled vs wrong cells told apart, a legend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trmlm.errors import TRMError
from trmlm.puzzle.eval import trace_supervision
from trmlm.puzzles.arc.encode import decode as arc_decode
from trmlm.puzzles.maze.grid import GOAL, OPEN, PATH, START, WALL, side as maze_side
from trmlm.puzzles.run import solved
from trmlm.puzzles.sudoku.grid import from_tokens

GIVEN_BG, WRONG_BG, BLANK_BG = "#d9d9d9", "#f8c4c4", "#ffffff"
FILLED_FG, WRONG_FG, GIVEN_FG = "#1f5fbf", "#c00000", "#000000"
MAZE = {WALL: "#202020", OPEN: "#ffffff", START: "#2ca02c", GOAL: "#ff7f0e", PATH: FILLED_FG}
ARC_COLOURS = ["#000000", "#0074d9", "#ff4136", "#2ecc40", "#ffdc00", "#aaaaaa", "#f012be", "#ff851b",
               "#7fdbff", "#870c25"]  # the ARC viewer's palette, colours 0-9


def _rgb(hexes: np.ndarray) -> np.ndarray:
    """(H, W) of '#rrggbb' -> (H, W, 3) floats for imshow."""
    flat = [tuple(int(h[i:i + 2], 16) / 255 for i in (1, 3, 5)) for h in hexes.reshape(-1)]
    return np.array(flat).reshape(*hexes.shape, 3)


def _frame(ax, n_rows: int, n_cols: int, box: int = 0) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlim(-0.5, n_cols - 0.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    if box:
        for k in range(0, n_rows + 1, box):
            ax.axhline(k - 0.5, color="black", lw=1.2)
            ax.axvline(k - 0.5, color="black", lw=1.2)


def draw_sudoku(ax, inputs: np.ndarray, grid: np.ndarray | None, target: np.ndarray | None) -> None:
    """Digits on a 9x9 board: givens black on grey, filled cells blue, cells that differ from the
    target red on pink (a given the model overwrote too); grid None draws the puzzle itself."""
    puzzle = from_tokens(inputs).reshape(9, 9)
    values = puzzle if grid is None else from_tokens(grid).reshape(9, 9)
    truth = None if target is None else from_tokens(target).reshape(9, 9)
    given = puzzle > 0
    # wrong: differs from the target, a given the model overwrote included
    wrong = np.zeros_like(given) if truth is None or grid is None else values != truth
    bg = np.where(wrong, WRONG_BG, np.where(given, GIVEN_BG, BLANK_BG))
    ax.imshow(_rgb(bg), interpolation="nearest")
    for r in range(9):
        for c in range(9):
            if values[r, c]:
                colour = WRONG_FG if wrong[r, c] else GIVEN_FG if given[r, c] else FILLED_FG
                ax.text(c, r, str(values[r, c]), ha="center", va="center", fontsize=7, color=colour,
                        fontweight="bold" if given[r, c] else "normal")
    for k in range(10):
        ax.axhline(k - 0.5, color="black", lw=1.2 if k % 3 == 0 else 0.3)
        ax.axvline(k - 0.5, color="black", lw=1.2 if k % 3 == 0 else 0.3)
    _frame(ax, 9, 9)


def draw_maze(ax, inputs: np.ndarray, grid: np.ndarray | None, target: np.ndarray | None) -> None:
    """Walls black, S green, G orange, path cells blue; path cells off the target path red
    (a wrong answer's mistakes; a different shortest path counts as solved in the title)."""
    n = maze_side(len(inputs))
    tokens = np.asarray(inputs if grid is None else grid).reshape(n, n)
    colours = np.vectorize(lambda t: MAZE.get(int(t), BLANK_BG))(tokens)
    if grid is not None and target is not None:
        off = (tokens == PATH) & (np.asarray(target).reshape(n, n) != PATH)
        colours = np.where(off, WRONG_FG, colours)
    ax.imshow(_rgb(colours), interpolation="nearest")
    for (r, c), t in np.ndenumerate(tokens):
        if t in (START, GOAL):
            ax.text(c, r, "S" if t == START else "G", ha="center", va="center", fontsize=6, color="white",
                    fontweight="bold")
    _frame(ax, n, n)


def draw_arc(ax, inputs: np.ndarray, grid: np.ndarray | None, target: np.ndarray | None) -> None:
    """The decoded grid in the ARC colours with its colour digits; cells that differ from the
    target (same shape) outlined red."""
    g = arc_decode(inputs if grid is None else grid)
    if g is None:
        ax.text(0.5, 0.5, "no grid", ha="center", va="center", transform=ax.transAxes, color=WRONG_FG)
        _frame(ax, 1, 1)
        return
    ax.imshow(_rgb(np.array(ARC_COLOURS)[g]), interpolation="nearest")
    truth = None if target is None or grid is None else arc_decode(target)
    small = max(g.shape) <= 12  # digits stay readable up to 12x12
    for (r, c), v in np.ndenumerate(g):
        if small:
            ax.text(c, r, str(v), ha="center", va="center", fontsize=6,
                    color="white" if v in (0, 1, 9) else "black")
        if truth is not None and truth.shape == g.shape and truth[r, c] != v:
            ax.add_patch(_rect(c, r))
    _frame(ax, *g.shape)


def _rect(c: int, r: int):
    from matplotlib.patches import Rectangle

    return Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, edgecolor=WRONG_FG, lw=1.5)


DRAW = {"sudoku": draw_sudoku, "maze": draw_maze, "arc": draw_arc}


def _legend(task: str):
    from matplotlib.patches import Patch

    if task == "sudoku":
        return [Patch(facecolor=GIVEN_BG, edgecolor="black", label="given (black digit)"),
                Patch(facecolor=BLANK_BG, edgecolor=FILLED_FG, label="filled by the model (blue digit)"),
                Patch(facecolor=WRONG_BG, edgecolor=WRONG_FG, label="wrong (red digit; a given overwritten too)")]
    if task == "maze":
        return [Patch(facecolor=MAZE[WALL], label="wall"), Patch(facecolor=MAZE[START], label="S start"),
                Patch(facecolor=MAZE[GOAL], label="G goal"), Patch(facecolor=MAZE[PATH], label="path"),
                Patch(facecolor=WRONG_FG, label="path off the target's")]
    return [Patch(facecolor="white", edgecolor=WRONG_FG, label="cell differs from the target")]


def shown_steps(n_steps: int, at_most: int = 8) -> list[int]:
    """1-based supervision steps for the strip: all of them, or `at_most` evenly spaced (first and
    last always)."""
    if n_steps <= at_most:
        return list(range(1, n_steps + 1))
    return sorted({int(round(x)) for x in np.linspace(1, n_steps, at_most)})


def predictions_figure(model, held_out: dict, runtime, mod, n: int = 4, at_most: int = 8):
    """The figure: a row per held-out puzzle (the first n), columns input | step s ... | target."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TRMError("--png needs matplotlib (pip install matplotlib)") from None
    n = min(n, len(held_out["inputs"]))
    if n == 0:
        raise TRMError("--png: no held-out puzzles to draw")
    inputs, labels = held_out["inputs"][:n], held_out["labels"][:n]
    t = torch.as_tensor(inputs, dtype=torch.long, device=runtime.device)
    ids = torch.as_tensor(held_out["puzzle_ids"][:n], dtype=torch.long, device=runtime.device)
    tr = trace_supervision(model, t, ids, runtime=runtime)
    steps = shown_steps(len(tr.predictions), at_most)
    ok = {s: solved(mod, inputs, tr.predictions[s - 1], labels) for s in steps}  # (n,) per shown step
    draw = DRAW[mod.NAME]
    targets = np.where(labels < 0, 0, labels)
    cols = len(steps) + 2
    fig, axes = plt.subplots(n, cols, figsize=(1.7 * cols, 1.9 * n + 0.6), squeeze=False)
    for i in range(n):
        draw(axes[i, 0], inputs[i], None, None)
        axes[i, 0].set_title(f"#{i} input", fontsize=7)
        for j, s in enumerate(steps, start=1):
            draw(axes[i, j], inputs[i], tr.predictions[s - 1, i], targets[i])
            verdict = "solved" if ok[s][i] else "wrong"
            axes[i, j].set_title(f"step {s}: {verdict}, q {tr.q_halt[s - 1, i]:+.1f}", fontsize=7,
                                 color="black" if ok[s][i] else WRONG_FG)
        draw(axes[i, -1], inputs[i], targets[i], None)
        axes[i, -1].set_title("target", fontsize=7)
    fig.legend(handles=_legend(mod.NAME), loc="upper center", ncol=5, fontsize=7, frameon=False)
    fig.suptitle(f"{mod.NAME}: the answer after each supervision step (q = halt logit, > 0 halts)",
                 fontsize=8, y=0.995 - 0.35 / fig.get_figheight())
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / fig.get_figheight()), h_pad=0.8)
    return fig


def save_predictions_png(path: str | Path, model, held_out: dict, runtime, mod, n: int = 4) -> Path:
    """Draw predictions_figure and save it as a PNG."""
    fig = predictions_figure(model, held_out, runtime, mod, n)  # a one-line error without matplotlib
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise TRMError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return path
