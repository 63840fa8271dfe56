"""The LM task registry with the puzzle layer's tasks registered (Sudoku as text)."""

from trmlm.lm.tasks import get_task, rungs  # noqa: F401  (re-exported for the CLI)
from trmlm.puzzles.sudoku import text_task  # noqa: F401  (registers sudoku-text*)
