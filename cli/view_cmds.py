"""Viewer command (trm view) and the --html pages of solve / eval-puzzle / generate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import typer

from trmlm.cli.common import err, user_errors
from trmlm.errors import TRMError
from trmlm.viewer.page import grid, puzzle_document, puzzle_entry, read_document, write_html, write_view

HTML_HELP = ("Also write an interactive page of the recursion: one self-contained HTML file "
             "(a .json name writes the trace instead, for `trm view`).")
EVAL_PAGE_PUZZLES = 8  # eval-puzzle --html shows the first held-out puzzles
# ARC's ten colours (the usual ARC palette: black, blue, red, green, yellow, grey, magenta,
# orange, azure, maroon); maze characters: wall, open, start, goal, path.
ARC_PALETTE = {str(i): c for i, c in enumerate(
    ["#000000", "#0074d9", "#ff4136", "#2ecc40", "#ffdc00", "#aaaaaa", "#f012be", "#ff851b", "#7fdbff", "#870c25"])}
MAZE_PALETTE = {"#": "#3a3f47", " ": "#ffffff", "S": "#2ecc40", "G": "#ff4136", "o": "#7fb2ff", "?": "#e0e0e0"}


def task_grid(task: str, mod, tokens: np.ndarray) -> dict | None:
    """Model tokens -> the grid a person reads: Sudoku digits ('.' blank), maze characters, or
    the ARC grid cropped from its 30x30 canvas (None when the canvas holds no grid)."""
    tokens = np.asarray(tokens)
    if task == "arc":
        from trmlm.puzzles.arc.encode import decode

        g = decode(tokens)
        return None if g is None else grid(g.shape[0], g.shape[1], [str(int(v)) for v in g.reshape(-1)])
    text = mod.to_text(tokens)
    side = math.isqrt(len(text))
    if side * side != len(text):
        return grid(1, len(text), list(text))
    return grid(side, side, list(text))


def _givens(task: str, inputs: np.ndarray) -> list[bool] | None:
    if task == "sudoku":
        from trmlm.puzzles.sudoku.grid import from_tokens

        return [bool(v) for v in from_tokens(inputs)]
    return None


def puzzle_page(path: Path, task: str, mod, inputs: np.ndarray, predictions: np.ndarray, q_halt: np.ndarray,
                targets: list[np.ndarray | None], correct: np.ndarray | None, title: str, note: str = "",
                names: list[str] | None = None) -> Path:
    """Write the viewer page of a batch: inputs (B, L), predictions (S, B, L), q_halt (S, B),
    a target per puzzle (or None), correct (S, B) by the task's own test (or None)."""
    puzzles = []
    for b in range(inputs.shape[0]):
        target = targets[b]
        steps = [task_grid(task, mod, predictions[s, b]) or grid(0, 0, []) for s in range(predictions.shape[0])]
        puzzles.append(puzzle_entry(
            names[b] if names else f"puzzle {b + 1}", task_grid(task, mod, inputs[b]) or grid(0, 0, []), steps,
            [float(q) for q in q_halt[:, b]], None if target is None else task_grid(task, mod, target),
            _givens(task, inputs[b]), None if correct is None else [bool(c) for c in correct[:, b]]))
    palette = ARC_PALETTE if task == "arc" else MAZE_PALETTE if task == "maze" else {}
    written = write_view(path, puzzle_document(task, puzzles, title, palette, note))
    err.print(f"viewer page: {written}")
    return written


def text_recorder(lm, gcfg):
    """A TextRecorder for `trm generate --html` (TRM checkpoints: the baselines have no steps)."""
    if lm.cfg.arch != "trm":
        raise TRMError("--html needs a TRM checkpoint (the transformer baselines have no recursion steps to show)")
    from trmlm.viewer.record import TextRecorder

    return TextRecorder(lm.tokenizer, gcfg)


def text_page(path: Path, recorder, prompt: str, samples: list, lm, gcfg, note: str) -> Path:
    policy = gcfg.validate(lm.cfg.model.max_sup_steps)
    data = recorder.page_data(prompt, samples, lm.cfg.context, policy.max_steps, policy.threshold,
                              title=f"trm generate: {note}")
    written = write_view(path, data)
    err.print(f"viewer page: {written}")
    return written


def view_cmd(
    trace: Path = typer.Argument(..., help="A saved trace (.json from `--html FILE.json`) or a viewer page (.html)."),
    out_file: Path = typer.Option(..., "--out", help="The HTML file to write."),
) -> None:
    """Render a saved recursion trace as a self-contained interactive HTML page (open it from disk).

    Pages come straight from `trm solve ... --html FILE`, `trm eval-puzzle ... --html FILE` and
    `trm generate ... --html FILE`; this command re-renders a trace JSON (or the JSON inside
    such a page) with the current viewer."""
    if out_file.suffix.lower() not in (".html", ".htm"):
        raise TRMError(f"--out must name an .html file, got {out_file}")
    data = read_document(trace)
    err.print(f"viewer page: {write_html(out_file, data)}")


def register(app: typer.Typer) -> None:
    app.command("view")(user_errors(view_cmd))
