"""ARC grids <-> the 30x30 token canvas: PAD 0, EOS 1 marking the grid's edge, colours 2-11."""

from __future__ import annotations

import numpy as np

from trmlm.errors import TRMError

SIDE = 30
SEQ_LEN = SIDE * SIDE   # 900
PAD, EOS, COLOUR0 = 0, 1, 2
VOCAB_SIZE = 12         # PAD, EOS, 10 colours (as TRM; docs/arc.md)


def encode(grid: np.ndarray, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """(H, W) colours -> (900,) tokens: the grid at `offset`, an EOS row under it and an EOS column
    right of it (each only where it fits on the canvas), PAD elsewhere (official build_arc_dataset)."""
    g = np.asarray(grid)
    h, w = g.shape
    r0, c0 = offset
    if not (0 <= r0 and 0 <= c0 and r0 + h <= SIDE and c0 + w <= SIDE):
        raise TRMError(f"a {h}x{w} grid at offset {offset} does not fit the {SIDE}x{SIDE} canvas")
    canvas = np.zeros((SIDE, SIDE), np.uint8)
    canvas[r0:r0 + h, c0:c0 + w] = g + COLOUR0
    if r0 + h < SIDE:
        canvas[r0 + h, c0:c0 + w] = EOS
    if c0 + w < SIDE:
        canvas[r0:r0 + h, c0 + w] = EOS
    return canvas.reshape(SEQ_LEN)


def decode(tokens: np.ndarray) -> np.ndarray | None:
    """(900,) tokens -> the largest top-left rectangle of colour tokens, as colours (official
    evaluator's crop: scan rows, shrinking the width at the first non-colour cell); None if empty."""
    canvas = np.asarray(tokens).reshape(SIDE, SIDE)
    is_colour = (canvas >= COLOUR0) & (canvas < COLOUR0 + 10)
    best, best_shape, width = 0, (0, 0), SIDE
    for rows in range(1, SIDE + 1):
        bad = np.flatnonzero(~is_colour[rows - 1, :width])
        if bad.size:
            width = int(bad[0])
        if rows * width > best:
            best, best_shape = rows * width, (rows, width)
        if width == 0:
            break
    if best == 0:
        return None
    h, w = best_shape
    return (canvas[:h, :w] - COLOUR0).astype(np.uint8)


def random_offset(shapes: list[tuple[int, int]], rng: np.random.Generator) -> tuple[int, int]:
    """One translation for an input/output pair: both grids must stay on the canvas."""
    h = max(s[0] for s in shapes)
    w = max(s[1] for s in shapes)
    return int(rng.integers(0, SIDE - h + 1)), int(rng.integers(0, SIDE - w + 1))
